// Package image is berth's one image engine: an image is a folder (images/<name>/) holding a manifest,
// image.conf in systemd's INI syntax, and the files it installs. Every image is built the same way: a
// copy-on-write clone of the base rootfs, the manifest's packages, files and sources, a strict provision
// script run with systemd-nspawn, and the units it enables; the result replaces the old machine in one step.
package image

import (
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"

	"berth/internal/config"
)

// Manifest is an image.conf. The sections [Exec], [Network] and [Files]-style settings of the machine's
// .nspawn file are kept as written (NSpawn), so an operator reads one syntax everywhere.
type Manifest struct {
	Name        string
	Description string
	Kind        string // "machine" (systemd-nspawn, the default) or "container" (an LXC demo container)
	Packages    []string
	Provision   string   // script in the image folder, run inside with bash -euo pipefail
	Enable      []string // units enabled inside
	Copies      []Copy
	Sources     []Source
	Binds       []Bind // data directories under [Paths] Srv, bound into the machine
	Skeleton    string // folder copied into a data directory, never over existing files: "skel:haproxy"
	Certificate string // a TLS bundle under [Paths] Srv made self-signed when missing, so the service starts before configure
	HealthTCP   string
	HealthFile  string // a file under [Paths] Srv whose presence means the first run finished
	NSpawn      []*unit.UnitSection
	Boot        bool     // provision in the booted tree, systemd as PID 1 (default: containers yes, machines no)
	Go          bool     // keep the base's Go toolchain (default: machines yes, containers no)
	Receive     []string // berth's settings the provision script receives as environment variables
	HostEnv     []string // NAME: the host's BERTH_<IMAGE>_<NAME> passed to the provision script when set
	Serve       Serve    // how a demo container serves (containers only)
}

// Serve is how a demo container's payload answers: the scheme and port its front talks to, with SNI and
// Host set to the demo's domain, and the path of its health check (answered 2xx, redirects not followed).
type Serve struct {
	Scheme     string // http (default) or https
	Port       int    // default 80 for http, 443 for https
	HealthPath string // default /
	// Private are path prefixes the demo's front refuses (403) to visitors: the payload's administration,
	// which a public demo does not hand out (YunoHost's web admin and its API).
	Private []string
	// Volatile are paths in the container (absolute) that the payload rewrites at every boot, such as its
	// databases' files: a nightly upgrade whose only changes lie there changed nothing, and keeps the
	// current generation (demo:upgrade records it "unchanged").
	Volatile []string
	// LoginPath, when set, makes the health check log in as the demo user too, so that a container where a
	// visitor changed the demo password counts as unhealthy: a POST of LoginForm (a URL-encoded form in
	// which {user} and {password} are replaced, encoded) to LoginPath, or without LoginForm a GET with HTTP
	// basic authentication; a 2xx answer is a working login.
	LoginPath, LoginForm string
}

// Copy puts a file of the image folder into the rootfs.
type Copy struct {
	From, To string
	Mode     fs.FileMode
}

// Source is a tree from a git host at Ref, verified to be Commit after checkout (a tag can move; a commit
// cannot); Commit defaults to Ref when Ref is itself a commit. An override path (a checkout or a tarball)
// replaces it on offline hosts and in tests.
type Source struct{ Name, URL, Ref, Commit, Dest string }

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Bind is a data directory: Srv/Host on the host, Guest inside the machine.
type Bind struct{ Host, Guest string }

// Load reads images/<name>/image.conf from fsys.
func Load(fsys fs.FS, name string) (*Manifest, error) {
	if err := config.ValidName(name); err != nil {
		return nil, fmt.Errorf("image %q: %w", name, err)
	}
	f, err := fsys.Open(path.Join(name, "image.conf"))
	if err != nil {
		return nil, fmt.Errorf("unknown image %q: %w", name, err)
	}
	defer f.Close()
	sections, err := unit.DeserializeSections(f)
	if err != nil {
		return nil, fmt.Errorf("image %s: image.conf: %w", name, err)
	}
	m := &Manifest{Name: name, Kind: "machine"}
	var opt optional
	for _, s := range sections {
		switch s.Section {
		case "Exec", "Network":
			m.NSpawn = append(m.NSpawn, s)
			continue
		case "Source":
			m.Sources = append(m.Sources, Source{})
		}
		for _, e := range s.Entries {
			set, ok := manifestKeys[s.Section+"."+e.Name]
			why := "unknown key"
			if ok {
				why = set(m, &opt, e.Name, strings.TrimSpace(e.Value))
			}
			if why != "" {
				return nil, fmt.Errorf("image %s: image.conf [%s] %s=%s: %s", name, s.Section, e.Name, e.Value, why)
			}
		}
	}
	m.Boot, m.Go = m.Kind == "container", m.Kind == "machine"
	if opt.boot != nil {
		m.Boot = *opt.boot
	}
	if opt.goTool != nil {
		m.Go = *opt.goTool
	}
	m.Serve = m.Serve.withDefaults()
	for i, s := range m.Sources {
		if config.ValidName(s.Name) != nil || s.URL == "" || s.Ref == "" || !strings.HasPrefix(s.Dest, "/") {
			return nil, fmt.Errorf("image %s: [Source] %q needs Name, URL, a pinned Ref and an absolute Dest", name, s.Name)
		}
		if s.Commit == "" && commitRE.MatchString(s.Ref) {
			m.Sources[i].Commit = s.Ref
		}
	}
	return m, nil
}

// optional holds the keys whose default depends on others (Boot and Go on Kind).
type optional struct{ boot, goTool *bool }

// manifestKeys is every key of image.conf ("Section.Key"): each sets its value in the manifest, or says
// in a few words what it expected.
var manifestKeys = map[string]func(m *Manifest, o *optional, key, v string) string{
	"Image.Description": func(m *Manifest, _ *optional, _, v string) string { m.Description = v; return "" },
	"Image.Kind": func(m *Manifest, _ *optional, _, v string) string {
		if v != "machine" && v != "container" {
			return "expected machine or container"
		}
		m.Kind = v
		return ""
	},
	"Image.Packages": func(m *Manifest, _ *optional, _, v string) string {
		m.Packages = append(m.Packages, strings.Fields(v)...)
		return ""
	},
	"Image.Provision": func(m *Manifest, _ *optional, _, v string) string { m.Provision = v; return "" },
	"Image.Enable": func(m *Manifest, _ *optional, _, v string) string {
		m.Enable = append(m.Enable, strings.Fields(v)...)
		return ""
	},
	"Image.Boot": yesNo,
	"Image.Go":   yesNo,
	"Settings.Receive": func(m *Manifest, _ *optional, _, v string) string {
		for _, n := range strings.Fields(v) {
			if _, ok := Offered[n]; !ok {
				return "unknown setting " + n + "; berth offers " + strings.Join(slices.Sorted(maps.Keys(Offered)), " ")
			}
			m.Receive = append(m.Receive, n)
		}
		return ""
	},
	"Settings.Host": func(m *Manifest, _ *optional, _, v string) string {
		for _, n := range strings.Fields(v) {
			if !envNameRE.MatchString(n) {
				return "expected upper-case names such as APT_REPOSITORY"
			}
			m.HostEnv = append(m.HostEnv, n)
		}
		return ""
	},
	"Serve.Scheme": func(m *Manifest, _ *optional, _, v string) string {
		if v != "http" && v != "https" {
			return "expected http or https"
		}
		m.Serve.Scheme = v
		return ""
	},
	"Serve.Port": func(m *Manifest, _ *optional, _, v string) string {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return "expected a port between 1 and 65535"
		}
		m.Serve.Port = n
		return ""
	},
	"Serve.HealthPath": func(m *Manifest, _ *optional, _, v string) string { return urlPath(&m.Serve.HealthPath, v) },
	"Serve.Private": func(m *Manifest, _ *optional, _, v string) string {
		for _, p := range strings.Fields(v) {
			if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "{}\"'") {
				return "expected URL path prefixes starting with /, separated by spaces"
			}
			m.Serve.Private = append(m.Serve.Private, p)
		}
		return ""
	},
	"Serve.Volatile": func(m *Manifest, _ *optional, _, v string) string {
		for _, p := range strings.Fields(v) {
			if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
				return "expected clean absolute paths in the container other than /, separated by spaces"
			}
			m.Serve.Volatile = append(m.Serve.Volatile, p)
		}
		return ""
	},
	"Serve.LoginPath": func(m *Manifest, _ *optional, _, v string) string { return urlPath(&m.Serve.LoginPath, v) },
	"Serve.LoginForm": func(m *Manifest, _ *optional, _, v string) string {
		if !strings.Contains(v, "{password}") || strings.ContainsAny(v, " \t") {
			return "expected a URL-encoded form with {password} (and usually {user}), such as user={user}&password={password}"
		}
		m.Serve.LoginForm = v
		return ""
	},
	"Files.Copy": func(m *Manifest, _ *optional, _, v string) string {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || !strings.HasPrefix(parts[1], "/") {
			return "expected <file in the image folder>:<absolute path>[:<octal mode>]"
		}
		c := Copy{From: parts[0], To: parts[1], Mode: 0o644}
		if len(parts) == 3 {
			mode, err := strconv.ParseUint(parts[2], 8, 32)
			if err != nil {
				return "the mode is not octal"
			}
			c.Mode = fs.FileMode(mode)
		}
		m.Copies = append(m.Copies, c)
		return ""
	},
	"Source.Name": sourceField, "Source.URL": sourceField, "Source.Ref": sourceField, "Source.Commit": sourceField, "Source.Dest": sourceField,
	"Data.Bind": func(m *Manifest, _ *optional, _, v string) string {
		host, guest, ok := strings.Cut(v, ":")
		if !ok || config.ValidName(host) != nil || !strings.HasPrefix(guest, "/") {
			return "expected <name under [Paths] Srv>:<absolute path in the machine>"
		}
		m.Binds = append(m.Binds, Bind{Host: host, Guest: guest})
		return ""
	},
	"Data.Skeleton": func(m *Manifest, _ *optional, _, v string) string { m.Skeleton = v; return "" },
	"Data.Certificate": func(m *Manifest, _ *optional, _, v string) string {
		dir, rel, ok := strings.Cut(v, "/")
		if !ok || config.ValidName(dir) != nil || rel == "" || !fs.ValidPath(v) {
			return "expected <data directory>/<file>, such as haproxy/certs/bundle.pem"
		}
		m.Certificate = v
		return ""
	},
	"Health.TCP":  func(m *Manifest, _ *optional, _, v string) string { m.HealthTCP = v; return "" },
	"Health.File": func(m *Manifest, _ *optional, _, v string) string { m.HealthFile = v; return "" },
}

// urlPath sets *dst to v when v is a URL path.
func urlPath(dst *string, v string) string {
	if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t") {
		return "expected a URL path starting with /"
	}
	*dst = v
	return ""
}

func yesNo(_ *Manifest, o *optional, key, v string) string {
	b, err := strconv.ParseBool(map[string]string{"yes": "true", "no": "false"}[v])
	if err != nil {
		return "expected yes or no"
	}
	*map[string]**bool{"Boot": &o.boot, "Go": &o.goTool}[key] = &b
	return ""
}

func sourceField(m *Manifest, _ *optional, key, v string) string {
	src := &m.Sources[len(m.Sources)-1]
	if key == "Commit" && !commitRE.MatchString(v) {
		return "expected a full commit id (40 hexadecimal digits)"
	}
	*map[string]*string{"Name": &src.Name, "URL": &src.URL, "Ref": &src.Ref, "Commit": &src.Commit, "Dest": &src.Dest}[key] = v
	return ""
}

func (s Serve) withDefaults() Serve {
	if s.Scheme == "" {
		s.Scheme = "http"
	}
	if s.Port == 0 {
		s.Port = map[string]int{"http": 80, "https": 443}[s.Scheme]
	}
	if s.HealthPath == "" {
		s.HealthPath = "/"
	}
	return s
}

var envNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,40}$`)

// NSpawnFile renders the machine's .nspawn settings: the manifest's own sections plus the data binds.
//
// A manifest that does not choose PrivateUsers= gets a user namespace of its own (PrivateUsers=pick, the
// rootfs mapped, not chowned, where the file system allows) with its data binds idmapped, so that the guest's
// services own their data. Without a choice written here, systemd-nspawn@.service's own -U applied while the
// binds kept host ownership: a service that could not write its data directory could hold the machine's stop
// for the unit's whole 90 s (redis refusing to exit without saving).
//
// A manifest that chooses a range of its own (PrivateUsers=<first uid>[:<count>], say to keep clear of the
// demo containers' ids) or yes keeps it, and gets the same idmapped binds and mapped rootfs.
func (m *Manifest) NSpawnFile(srv string) string {
	sections := append([]*unit.UnitSection{}, m.NSpawn...)
	choice, chosen := m.nspawnValue("Exec", "PrivateUsers")
	userns := !chosen || !slices.Contains([]string{"no", "false", "off", "0", "identity"}, strings.ToLower(choice))
	if userns {
		var exec *unit.UnitSection
		for i, s := range sections {
			if s.Section == "Exec" {
				exec = &unit.UnitSection{Section: "Exec", Entries: append([]*unit.UnitEntry{}, s.Entries...)}
				sections[i] = exec
			}
		}
		if exec == nil {
			exec = &unit.UnitSection{Section: "Exec"}
			sections = append([]*unit.UnitSection{exec}, sections...)
		}
		if !chosen {
			exec.Entries = append(exec.Entries, &unit.UnitEntry{Name: "PrivateUsers", Value: "pick"})
		}
		if _, ok := m.nspawnValue("Exec", "PrivateUsersOwnership"); !ok {
			exec.Entries = append(exec.Entries, &unit.UnitEntry{Name: "PrivateUsersOwnership", Value: "auto"})
		}
	}
	if len(m.Binds) > 0 {
		files := &unit.UnitSection{Section: "Files"}
		for _, b := range m.Binds {
			v := path.Join(srv, b.Host) + ":" + b.Guest
			if userns {
				v += ":idmap"
			}
			files.Entries = append(files.Entries, &unit.UnitEntry{Name: "Bind", Value: v})
		}
		sections = append(sections, files)
	}
	var sb strings.Builder
	sb.WriteString("# Written by berth from images/" + m.Name + "/image.conf; berth rewrites it on install.\n")
	io.Copy(&sb, unit.SerializeSections(sections))
	return sb.String()
}

// nspawnValue is the last value the manifest's own .nspawn sections give key in section, and whether any does.
func (m *Manifest) nspawnValue(section, key string) (v string, ok bool) {
	for _, s := range m.NSpawn {
		for _, e := range s.Entries {
			if s.Section == section && e.Name == key {
				v, ok = e.Value, true
			}
		}
	}
	return v, ok
}

// NamesOfKind lists the image folders in fsys whose manifest has [Image] Kind = kind.
func NamesOfKind(fsys fs.FS, kind string) ([]string, error) {
	names, err := Names(fsys)
	var out []string
	for _, n := range names {
		m, err := Load(fsys, n)
		if err != nil {
			return nil, err
		}
		if m.Kind == kind {
			out = append(out, n)
		}
	}
	return out, err
}

// Names lists the image folders in fsys.
func Names(fsys fs.FS) ([]string, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if _, err := fs.Stat(fsys, path.Join(e.Name(), "image.conf")); e.IsDir() && err == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

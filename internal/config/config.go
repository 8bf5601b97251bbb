// Package config reads berth's one configuration file ($BERTH_CONFIG, default /etc/berth/berth.conf, in
// systemd's INI syntax), applies BERTH_<SECTION>_<KEY> environment overrides (and the original scripts'
// MYDOMAIN, MYEMAIL and SELF_SIGNED), validates every value and remembers where each one came from.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

// DefaultPath is read when $BERTH_CONFIG is not set.
const DefaultPath = "/etc/berth/berth.conf"

// DefaultGoVersion is the Go toolchain whose checksums berth pins.
const DefaultGoVersion = "1.26.10"

// goSums are the sha256 sums of the module proxy's toolchain zips for DefaultGoVersion
// (golang.org/toolchain@v0.0.1-go1.26.10.linux-<arch>.zip), checked against Go's checksum database.
var goSums = map[string]string{
	"amd64": "f64ecb0807852be2c98899561c45288a9ad57f4e88f3cd002ffabeccbd03bfe1",
	"arm64": "195f18be92553fb272b9c4f9fca6e67b6a04d8831bf6c4b918ac70982fadb444",
}

// GoSHA256For returns the pinned checksum of a Go toolchain, if berth pins one.
func GoSHA256For(version, arch string) (string, bool) {
	if version != DefaultGoVersion {
		return "", false
	}
	s, ok := goSums[arch]
	return s, ok
}

// Paths are where berth reads and writes on the host.
type Paths struct{ Machines, NSpawn, Units, Srv, State, Cache, LXC, Binary string }

// Base describes the base rootfs.
type Base struct {
	Suite, Mirror                  string
	ExtraSuites                    []string // suffixes of the suites beside Suite in sources.list: updates, security, backports
	SecurityMirror                 string
	Packages                       []string
	GoVersion, GoTarball, GoSHA256 string
	Bootstrapper                   string // auto, mmdebstrap or debootstrap
}

// Relay configures the relay platform.
type Relay struct {
	EnvFile       string // the original's ./.env: MYDOMAIN, MYEMAIL, SELF_SIGNED (the environment wins); empty: none
	Domain, Email string
	SelfSigned    bool
	ACMEDirectory string
	Machines      []string
	HealthTimeout time.Duration // how long configure waits for each machine's health check
	DeployBranch  string        // relaycreator deploys this branch of DeployRepo automatically; empty: no automatic deploys
	DeployRepo    string        // where relaycreator's deploys fetch from; empty: the relaycreator image's [Source] URL
}

// Demo configures the LXC demo.
type Demo struct {
	Domain, Image string
	User          string // the demo user visitors log in as
	Containers    []string
	Bridge        string
	Subnet        netip.Prefix
	Backend       string
	HTTP, HTTPS   string
	HealthPath    string
	SwitchEvery   time.Duration
	UpgradeAt     string
	Hooks         string
	KeepSnapshots int
	AlertCommand  []string
	Memory        int64   // bytes a container may use (cgroup memory.max)
	CPUs          float64 // CPUs a container may use (cgroup cpu.max); 0: no limit
	Tasks         int     // processes and threads a container may run (cgroup pids.max)
	SelfSigned    string  // auto (ACME for a public [Demo] Domain), yes, no (ACME for any Domain)
	ACMEDirectory string
	Email         string // the ACME account's contact, optional
	EgressPorts   []int  // TCP ports the containers may reach on public addresses
	HostPorts     []int  // TCP ports of the host the containers may reach (on the bridge's address)
}

// Publish configures where machine images are published (S3) and pulled from.
type Publish struct {
	Endpoint    string // the S3 endpoint, http(s)://host[:port]; empty: publishing is not configured
	Bucket      string
	Prefix      string // object names start with it (no leading or trailing slash)
	Region      string
	Credentials string        // a 0600 file with AWS_ACCESS_KEY_ID= and AWS_SECRET_ACCESS_KEY= lines (the environment wins)
	Key         string        // the OpenPGP secret key that signs SHA256SUMS; made once when missing
	PublicKey   string        // on a pulling host: the publisher's public key, added to systemd's import keyring
	Verify      string        // signature or checksum: what systemd-importd checks when pulling
	Pull        string        // where pull reads from: a plain HTTP(S) origin; empty: Endpoint/Bucket/Prefix
	PullEvery   time.Duration // berth-machines-pull.timer's period; 0: no timer
}

// Config is the effective configuration.
type Config struct {
	Paths   Paths
	Base    Base
	Relay   Relay
	Demo    Demo
	Publish Publish
	File    string // the file consulted (it may not exist)

	values  map[string]string // "Section.Key" → effective raw value
	origins map[string]string // "Section.Key" → default, file <path>:<line>, env NAME
}

// key is one configuration key: its default and how a raw value lands in Config.
type key struct {
	section, name, def string
	set                func(c *Config, v string) error
}

// Load reads the configuration from $BERTH_CONFIG (or DefaultPath) and the process environment.
func Load() (*Config, error) {
	path := os.Getenv("BERTH_CONFIG")
	if path == "" {
		path = DefaultPath
	}
	return LoadFrom(path, os.LookupEnv)
}

// LoadFrom reads the configuration file at path (missing means defaults) with env overrides from lookupEnv.
// The first bad value is returned as a one-line error naming the key, the value, its origin and what was
// expected.
func LoadFrom(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	c := &Config{File: path, values: map[string]string{}, origins: map[string]string{}}
	for _, k := range keys {
		c.values[k.id()] = k.def
		c.origins[k.id()] = "default"
	}
	if err := c.readFile(path); err != nil {
		return nil, err
	}
	dot, err := c.dotEnv(lookupEnv)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		name := "BERTH_" + strings.ToUpper(k.section+"_"+k.name)
		v, found := lookupEnv(name)
		origin := "env " + name
		if legacy, ok := legacyEnv[k.id()]; !found && ok {
			origin = "env " + legacy
			if v, found = lookupEnv(legacy); !found {
				if d, ok := dot[legacy]; ok {
					v, found, origin = d.value, true, d.origin
				}
			}
		}
		if found {
			if prev := c.origins[k.id()]; strings.HasPrefix(prev, "file ") {
				origin += ", overriding " + prev + " = " + strings.TrimSpace(c.values[k.id()])
			}
			c.values[k.id()], c.origins[k.id()] = v, origin
		}
	}
	for _, k := range keys {
		if err := k.set(c, strings.TrimSpace(c.values[k.id()])); err != nil {
			return nil, fmt.Errorf("config: [%s] %s = %q (%s): %w", k.section, k.name, c.values[k.id()], c.origins[k.id()], err)
		}
	}
	return c, c.derive(lookupEnv)
}

func (k key) id() string { return k.section + "." + k.name }

var legacyEnv = map[string]string{"Relay.Domain": "MYDOMAIN", "Relay.Email": "MYEMAIL", "Relay.SelfSigned": "SELF_SIGNED"}

// dotValue is a value read from [Relay] EnvFile and where it was.
type dotValue struct{ value, origin string }

// dotEnv reads the original scripts' inputs (MYDOMAIN, MYEMAIL, SELF_SIGNED) from [Relay] EnvFile, whose
// relative path is taken from the current directory as configure.sh did. The default ./.env may be absent;
// a file named in the configuration or the environment must exist. Other lines are ignored.
func (c *Config) dotEnv(lookupEnv func(string) (string, bool)) (map[string]dotValue, error) {
	const id = "Relay.EnvFile"
	p, origin := c.values[id], c.origins[id]
	if v, ok := lookupEnv("BERTH_RELAY_ENVFILE"); ok {
		p, origin = v, "env BERTH_RELAY_ENVFILE"
	}
	if p = strings.TrimSpace(p); p == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, fmt.Errorf("config: [Relay] EnvFile = %q (%s): %w", p, origin, err)
	}
	b, err := os.ReadFile(abs)
	if errors.Is(err, os.ErrNotExist) && origin == "default" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: [Relay] EnvFile = %q (%s): %w", p, origin, err)
	}
	out := map[string]dotValue{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || strings.HasPrefix(k, "#") || (k != "MYDOMAIN" && k != "MYEMAIL" && k != "SELF_SIGNED") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[k] = dotValue{v, fmt.Sprintf("env file %s:%d %s", abs, i+1, k)}
	}
	return out, nil
}

// fromLegacyDomain tells whether an origin is the original scripts' MYDOMAIN (environment or env file).
func fromLegacyDomain(origin string) bool {
	return origin == "env MYDOMAIN" || strings.HasPrefix(origin, "env file ") && strings.HasSuffix(origin, " MYDOMAIN")
}

func (c *Config) readFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	opts, err := unit.DeserializeOptions(strings.NewReader(string(b)))
	if err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	lines := strings.Split(string(b), "\n")
	known := map[string]bool{}
	for _, k := range keys {
		known[k.id()] = true
	}
	for _, o := range opts {
		id := o.Section + "." + o.Name
		at := path + lineOf(lines, o.Section, o.Name)
		if !known[id] {
			return fmt.Errorf("config: %s: unknown key [%s] %s", at, o.Section, o.Name)
		}
		c.values[id], c.origins[id] = o.Value, "file "+at
	}
	return nil
}

// lineOf finds ":N" for the last assignment of name inside [section], for error messages and Summary.
func lineOf(lines []string, section, name string) string {
	cur, found := "", 0
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			cur = l[1 : len(l)-1]
		} else if k, _, ok := strings.Cut(l, "="); ok && cur == section && strings.TrimSpace(k) == name {
			found = i + 1
		}
	}
	if found == 0 {
		return ""
	}
	return fmt.Sprintf(":%d", found)
}

// derive fills in values that depend on others: the Go checksum pinned for the default toolchain, the hooks
// directory under [Paths] State, and the domain given by SELF_SIGNED=<domain>.
func (c *Config) derive(lookupEnv func(string) (string, bool)) error {
	if c.Base.GoSHA256 == "" {
		sum, ok := GoSHA256For(c.Base.GoVersion, runtime.GOARCH)
		if !ok {
			return fmt.Errorf("config: [Base] GoSHA256 is empty (%s): expected the sha256 of the Go %s archive; berth pins only %s",
				c.origins["Base.GoSHA256"], c.Base.GoVersion, DefaultGoVersion)
		}
		c.Base.GoSHA256 = sum
		c.setDerived("Base.GoSHA256", sum, "default (pinned for go"+DefaultGoVersion+" linux/"+runtime.GOARCH+")")
	}
	if c.Publish.Credentials == "" {
		c.Publish.Credentials = filepath.Join(c.Paths.State, "publish", "credentials")
		c.setDerived("Publish.Credentials", c.Publish.Credentials, "default (under [Paths] State)")
	}
	if c.Publish.Key == "" {
		c.Publish.Key = filepath.Join(c.Paths.State, "publish", "signing.key")
		c.setDerived("Publish.Key", c.Publish.Key, "default (under [Paths] State)")
	}
	if c.Demo.Hooks == "" {
		c.Demo.Hooks = c.Paths.State + "/upgrade.d"
		c.setDerived("Demo.Hooks", c.Demo.Hooks, "default ([Paths] State/upgrade.d)")
	}
	return nil
}

func (c *Config) setDerived(id, v, origin string) { c.values[id], c.origins[id] = v, origin }

// Origin tells where the value of [section] key came from.
func (c *Config) Origin(section, key string) string { return c.origins[section+"."+key] }

// Summary prints every key with its effective value and origin.
func (c *Config) Summary(w io.Writer) {
	fmt.Fprintf(w, "configuration file: %s", c.File)
	if _, err := os.Stat(c.File); err != nil {
		fmt.Fprint(w, " (absent: defaults apply)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range keys {
		fmt.Fprintf(tw, "[%s] %s\t= %s\t(%s)\n", k.section, k.name, strings.TrimSpace(c.values[k.id()]), c.origins[k.id()])
	}
	tw.Flush()
}

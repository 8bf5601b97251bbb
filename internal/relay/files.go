package relay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/image"
)

// Secrets are made once and kept in [Paths] State/relay/secrets.env (0600); configure never regenerates them.
type Secrets struct {
	NostrPrivateHex string // the deploy identity cookiecutter signs with
	NextAuthSecret  string
	StatsPassword   string // HAProxy's stats page (the original hard-coded haproxy/haproxy)
}

// SecretsFile is where the secrets live.
func SecretsFile(c *config.Config) string {
	return filepath.Join(c.Paths.State, "relay", "secrets.env")
}

func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// LoadSecrets reads the kept secrets, making and storing the missing ones; created tells whether it wrote.
func LoadSecrets(path string) (Secrets, bool, error) {
	env, err := readEnv(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Secrets{}, false, err
	}
	s := Secrets{NostrPrivateHex: env["NOSTR_PRIVATE_KEY"], NextAuthSecret: env["NEXTAUTH_SECRET"], StatsPassword: env["HAPROXY_STATS_PASS"]}
	created := false
	if s.NostrPrivateHex == "" {
		k, err := NewKeypair()
		if err != nil {
			return s, false, err
		}
		s.NostrPrivateHex, created = k.PrivateHex, true
	}
	if s.NextAuthSecret == "" {
		s.NextAuthSecret, created = randomToken(32), true
	}
	if s.StatsPassword == "" {
		s.StatsPassword, created = randomToken(18), true
	}
	if !created {
		return s, false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return s, false, err
	}
	return s, true, fsx.WriteFile(path, []byte(s.env()), 0o600)
}

func (s Secrets) env() string {
	return renderEnv([][2]string{{"NOSTR_PRIVATE_KEY", s.NostrPrivateHex}, {"NEXTAUTH_SECRET", s.NextAuthSecret}, {"HAPROXY_STATS_PASS", s.StatsPassword}})
}

// renderEnv writes KEY=value lines in the given order, quoting values that need it.
func renderEnv(kv [][2]string) string {
	var sb strings.Builder
	sb.WriteString("# Written by berth (relay:configure); mode 0600. Do not edit: configure rewrites it.\n")
	for _, p := range kv {
		v := p[1]
		if strings.ContainsAny(v, " \t#\"'$\\") {
			v = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`).Replace(v) + `"`
		}
		fmt.Fprintf(&sb, "%s=%s\n", p[0], v)
	}
	return sb.String()
}

// readEnv reads KEY=value lines (as systemd's EnvironmentFile= and the original scripts' `source` do for the
// files berth writes: optional double quotes, # comments).
func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseEnv(b)
}

// readEnvIn is readEnv for a file in a machine's data directory, read through os.Root.
func readEnvIn(dir, rel string) (map[string]string, error) {
	b, err := fsx.ReadIn(dir, rel)
	if err != nil {
		return nil, err
	}
	return parseEnv(b)
}

func parseEnv(b []byte) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = strings.NewReplacer(`\"`, `"`, `\$`, `$`, `\\`, `\`).Replace(v[1 : len(v)-1])
		}
		env[strings.TrimSpace(k)] = v
	}
	return env, sc.Err()
}

// EnvFile is one file configure writes, in a machine's data directory Dir (written through os.Root).
type EnvFile struct {
	Dir     string // [Paths] Srv/<machine>
	Path    string // Dir/<file>
	Content string
	Readers []Reader // the services that read it, restarted when it changes
}

// Reader is a service inside a machine.
type Reader struct{ Machine, Unit string }

// EnvFiles renders every env file relay:configure writes (relaycreator's, cookiecutter's, interceptor's) for
// domain, the kept secrets and the database URL. The Nostr private key goes only where it is read:
// cookiecutter's files (it signs with it); relaycreator gets the public key.
func EnvFiles(c *config.Config, domain, databaseURL string, s Secrets) ([]EnvFile, error) {
	k, err := KeypairFromHex(s.NostrPrivateHex)
	if err != nil {
		return nil, err
	}
	file := func(machine, name, content string, readers ...Reader) EnvFile {
		d := filepath.Join(c.Paths.Srv, machine)
		return EnvFile{Dir: d, Path: filepath.Join(d, name), Content: content, Readers: readers}
	}
	cookie := renderEnv([][2]string{{"BASE_URL", "https://" + domain}, {"PRIVATE_KEY", k.PrivateHex}})
	return []EnvFile{
		file("relaycreator", ".env", renderEnv([][2]string{
			{"DATABASE_URL", databaseURL}, {"DEPLOY_PUBKEY", k.PublicHex}, {"NEXTAUTH_URL", "https://" + domain},
			{"NEXTAUTH_SECRET", s.NextAuthSecret}, {"INVOICE_AMOUNT", "21000"}, {"NEXT_PUBLIC_ROOT_DOMAIN", "https://" + domain},
			{"NEXT_PUBLIC_CREATOR_DOMAIN", domain}, {"HAPROXY_PEM", "bundle.pem"}, {"HAPROXY_STATS_USER", "haproxy"},
			{"HAPROXY_STATS_PASS", s.StatsPassword}, {"PAYMENTS_ENABLED", "false"}, {"LNBITS_ADMIN_KEY", ""},
			{"LNBITS_INVOICE_READ_KEY", ""}, {"LNBITS_ENDPOINT", ""},
		}), Reader{"relaycreator", "app.service"}),
		file("haproxy", ".cookiecutter.env", cookie, Reader{"haproxy", "haproxycheck.service"}),
		file("strfry", ".cookiecutter.env", cookie, Reader{"strfry", "strfrycheck.service"}),
		file("strfry", ".interceptor.env", renderEnv([][2]string{{"INTERCEPTOR_CONFIG_URL", "https://" + domain + "/api/sconfig/relays"}}),
			Reader{"strfry", "interceptor.service"}),
	}, nil
}

// DeployFile is relaycreator's deploy.env: where its deploys fetch from ([Relay] DeployRepo, by default the
// relaycreator image's source) and the branch they follow ([Relay] DeployBranch; empty: none, the deploy
// service then only rebuilds the image's release when a public setting changed).
func DeployFile(c *config.Config, fsys fs.FS) EnvFile {
	repo := c.Relay.DeployRepo
	if m, err := image.Load(fsys, "relaycreator"); repo == "" && err == nil {
		for _, s := range m.Sources {
			if s.Name == "relaycreator" {
				repo = s.URL
			}
		}
	}
	d := filepath.Join(c.Paths.Srv, "relaycreator")
	return EnvFile{Dir: d, Path: filepath.Join(d, "deploy.env"),
		Content: renderEnv([][2]string{{"DEPLOY_REPO", repo}, {"DEPLOY_BRANCH", c.Relay.DeployBranch}})}
}

// Retired lists files earlier versions of berth wrote that nothing reads, removed by configure: the Nostr
// key pair in relaycreator's data directory (the app reads only DEPLOY_PUBKEY from its .env).
func Retired(c *config.Config) [][2]string {
	return [][2]string{{filepath.Join(c.Paths.Srv, "relaycreator"), ".nostrcreds.env"}}
}

// WriteChanged writes the files whose content differs (atomically, 0600, through os.Root in the machine's
// data directory) and returns the services that read a changed file, each once.
func WriteChanged(files []EnvFile) (changed []string, restart []Reader, err error) {
	for _, f := range files {
		rel, err := filepath.Rel(f.Dir, f.Path)
		if err != nil {
			return changed, restart, err
		}
		if cur, err := fsx.ReadIn(f.Dir, rel); err == nil && string(cur) == f.Content {
			if st, err := fsx.StatIn(f.Dir, rel); err == nil && st.Mode().Perm() == 0o600 {
				continue
			}
		}
		if err := os.MkdirAll(f.Dir, 0o755); err != nil {
			return changed, restart, err
		}
		if err := fsx.WriteIn(f.Dir, rel, []byte(f.Content), 0o600, 0o755); err != nil {
			return changed, restart, err
		}
		changed = append(changed, f.Path)
		for _, r := range f.Readers {
			if !slices.Contains(restart, r) {
				restart = append(restart, r)
			}
		}
	}
	return changed, restart, nil
}

package config

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, file string, env map[string]string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "berth.conf")
	if file != "" {
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return LoadFrom(path, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

func TestDefaults(t *testing.T) {
	c, err := load(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Paths.Machines != "/var/lib/machines" || c.Paths.State != "/var/lib/berth" || c.Base.Suite != "bookworm" ||
		c.Demo.Subnet.String() != "10.1.5.0/24" || c.Demo.SwitchEvery != 30*time.Minute || c.Demo.KeepSnapshots != 3 ||
		strings.Join(c.Relay.Machines, " ") != "mysql relaycreator haproxy strfry" || c.Demo.Hooks != "/var/lib/berth/upgrade.d" ||
		c.Demo.Memory != 2<<30 || c.Demo.CPUs != 1 || c.Demo.Tasks != 1024 {
		t.Fatalf("defaults: %+v", c)
	}
	if want, _ := GoSHA256For(DefaultGoVersion, runtime.GOARCH); c.Base.GoSHA256 != want || want == "" {
		t.Fatalf("pinned Go checksum: %q", c.Base.GoSHA256)
	}
	if c.Origin("Paths", "State") != "default" {
		t.Fatalf("origin %q", c.Origin("Paths", "State"))
	}
}

func TestFileAndEnvironment(t *testing.T) {
	file := "# berth\n[Paths]\nState=/srv/state\nCache=/var/cache/b\n\n[Demo]\nSwitchEvery=2min\nContainers=a b\n"
	c, err := load(t, file, map[string]string{"BERTH_PATHS_STATE": "/var/lib/other", "MYDOMAIN": "relay.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Paths.State != "/var/lib/other" || c.Paths.Cache != "/var/cache/b" || c.Demo.SwitchEvery != 2*time.Minute ||
		c.Relay.Domain != "relay.example.com" || c.Demo.Hooks != "/var/lib/other/upgrade.d" {
		t.Fatalf("values: %+v", c)
	}
	var out bytes.Buffer
	c.Summary(&out)
	for _, want := range []string{
		"= /var/lib/other", "(env BERTH_PATHS_STATE, overriding file ", "berth.conf:3 = /srv/state)",
		"[Paths] Cache", "berth.conf:4)", "[Relay] Domain", "(env MYDOMAIN)", "[Demo] SwitchEvery", "berth.conf:7)",
		"(default ([Paths] State/upgrade.d))",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if o := c.Origin("Paths", "Cache"); !strings.HasPrefix(o, "file ") || !strings.HasSuffix(o, "berth.conf:4") {
		t.Errorf("origin of Cache: %q", o)
	}
}

func TestSelfSigned(t *testing.T) {
	c, err := load(t, "", map[string]string{"SELF_SIGNED": "test.example.org", "MYDOMAIN": "relay.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Relay.SelfSigned || c.Relay.Domain != "test.example.org" {
		t.Fatalf("SELF_SIGNED=<domain> must set the domain: %+v", c.Relay)
	}
	c, err = load(t, "", map[string]string{"BERTH_RELAY_SELFSIGNED": "yes", "BERTH_RELAY_DOMAIN": "a.example.com", "SELF_SIGNED": "no"})
	if err != nil || !c.Relay.SelfSigned || c.Relay.Domain != "a.example.com" {
		t.Fatalf("BERTH_ wins over legacy: %+v %v", c.Relay, err)
	}
}

func TestBadValues(t *testing.T) {
	for _, tc := range []struct{ env, value, want string }{
		{"BERTH_DEMO_SUBNET", "10.1.5.0/33", "[Demo] Subnet"},
		{"BERTH_DEMO_SUBNET", "10.1.5.7/24", "host bits"},
		{"BERTH_DEMO_SUBNET", "fd00::/64", "IPv4"},
		{"BERTH_RELAY_DOMAIN", "exa mple.com", "DNS name"},
		{"BERTH_RELAY_EMAIL", "nobody", "e-mail"},
		{"BERTH_DEMO_HTTP", ":99999", "port"},
		{"BERTH_DEMO_HTTPS", ":80", "different"},
		{"BERTH_DEMO_SWITCHEVERY", "7min", "divide a day"},
		{"BERTH_DEMO_SWITCHEVERY", "soon", "time span"},
		{"BERTH_DEMO_UPGRADEAT", "25:00", "HH:MM"},
		{"BERTH_DEMO_CONTAINERS", "demo1", "exactly 2"},
		{"BERTH_DEMO_MEMORY", "12", "at least 64M"},
		{"BERTH_DEMO_MEMORY", "2GB", "at least 64M"},
		{"BERTH_DEMO_CPUS", "many", "number of CPUs"},
		{"BERTH_DEMO_TASKS", "10", "from 64"},
		{"BERTH_DEMO_EGRESSPORTS", "80 http", "TCP port numbers"},
		{"BERTH_DEMO_HOSTPORTS", "70000", "TCP port numbers"},
		{"BERTH_DEMO_CONTAINERS", "demo1 ../etc", "lower-case"},
		{"BERTH_DEMO_BRIDGE", "a-bridge-name-too-long", "interface name"},
		{"BERTH_DEMO_BACKEND", "zfs", "auto, btrfs"},
		{"BERTH_DEMO_KEEPSNAPSHOTS", "0", "1 to 50"},
		{"BERTH_DEMO_IMAGE", "Yuno/host", "name"},
		{"BERTH_PATHS_STATE", "relative/path", "absolute"},
		{"BERTH_PATHS_SRV", "/", "other than /"},
		{"BERTH_BASE_SUITE", "stable", "pinned"},
		{"BERTH_BASE_GOSHA256", "xyz", "hexadecimal"},
		{"BERTH_BASE_GOVERSION", "1.22.1", "GoSHA256"},
		{"BERTH_BASE_MIRROR", "ftp://x", "URL"},
		{"BERTH_BASE_BOOTSTRAPPER", "cdebootstrap", "mmdebstrap"},
		{"BERTH_RELAY_SELFSIGNED", "maybe?", "yes/no"},
		{"BERTH_DEMO_ALERTCOMMAND", "mail -s x", "absolute"},
	} {
		_, err := load(t, "", map[string]string{tc.env: tc.value})
		if err == nil {
			t.Errorf("%s=%s: accepted", tc.env, tc.value)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) || !strings.Contains(msg, tc.value) ||
			(!strings.Contains(msg, "env "+tc.env) && !strings.Contains(msg, "GoSHA256")) {
			t.Errorf("%s=%s: error %q should be one line naming the value, its origin and %q", tc.env, tc.value, msg, tc.want)
		}
	}
}

func TestFileErrors(t *testing.T) {
	if _, err := load(t, "[Demo]\nSubnett=10.0.0.0/24\n", nil); err == nil || !strings.Contains(err.Error(), "berth.conf:2: unknown key [Demo] Subnett") {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := load(t, "[Nope]\nA=b\n", nil); err == nil || !strings.Contains(err.Error(), "unknown key [Nope] A") {
		t.Errorf("unknown section: %v", err)
	}
	_, err := load(t, "[Demo]\nSubnet=10.1.5.0/40\n", nil)
	if err == nil || !strings.Contains(err.Error(), "(file ") || !strings.Contains(err.Error(), "berth.conf:2)") {
		t.Errorf("a bad file value must name file and line: %v", err)
	}
}

func TestParseTimeSpan(t *testing.T) {
	for in, want := range map[string]time.Duration{"30min": 30 * time.Minute, "1h 30min": 90 * time.Minute, "90": 90 * time.Second,
		"2m": 2 * time.Minute, "1d": 24 * time.Hour, "1h30min": 90 * time.Minute} {
		if got, err := ParseTimeSpan(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "min", "5 parsecs", "-3s", "1.5h"} {
		if _, err := ParseTimeSpan(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"mysql", "demo1", "relay-creator"} {
		if ValidName(ok) != nil {
			t.Errorf("%s rejected", ok)
		}
	}
	for _, bad := range []string{"", "1abc", "a/b", "..", "A", strings.Repeat("a", 40)} {
		if ValidName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestDotEnv: the original's ./.env gives MYDOMAIN, MYEMAIL and SELF_SIGNED; the environment wins; config:show
// names the file and line; a named file that is missing is an error, the default one that is missing is not.
func TestDotEnv(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	c, err := load(t, "", nil)
	if err != nil || c.Relay.Domain != "" || c.Relay.EnvFile != filepath.Join(dir, ".env") {
		t.Fatalf("no .env: %+v %v", c.Relay, err)
	}
	os.WriteFile(".env", []byte("# relay\nexport MYEMAIL='ops@relay.test'\nSELF_SIGNED=relay.test\nOTHER=x\n"), 0o600)
	c, err = load(t, "", nil)
	if err != nil || !c.Relay.SelfSigned || c.Relay.Domain != "relay.test" || c.Relay.Email != "ops@relay.test" {
		t.Fatalf("from .env: %+v %v", c.Relay, err)
	}
	if o := c.Origin("Relay", "SelfSigned"); o != "env file "+filepath.Join(dir, ".env")+":3 SELF_SIGNED" {
		t.Fatalf("origin %q", o)
	}
	var out bytes.Buffer
	c.Summary(&out)
	if !strings.Contains(out.String(), ".env:2 MYEMAIL)") || !strings.Contains(out.String(), "(from [Relay] SelfSigned)") {
		t.Fatalf("summary:\n%s", out.String())
	}
	// Both: the environment wins, and the .env's value is not shown as the origin.
	os.WriteFile(".env", []byte("MYDOMAIN=relay.test\nSELF_SIGNED=relay.test\n"), 0o600)
	c, err = load(t, "", map[string]string{"MYDOMAIN": "env.example.org", "SELF_SIGNED": "no"})
	if err != nil || c.Relay.Domain != "env.example.org" || c.Relay.SelfSigned || c.Origin("Relay", "Domain") != "env MYDOMAIN" {
		t.Fatalf("environment and .env: %+v %v %q", c.Relay, err, c.Origin("Relay", "Domain"))
	}
	// [Relay] EnvFile names another file; a bad value in it names the file and line.
	os.WriteFile("relay.env", []byte("MYDOMAIN=exa_mple..com\n"), 0o600)
	_, err = load(t, "[Relay]\nEnvFile=relay.env\n", nil)
	if err == nil || !strings.Contains(err.Error(), `[Relay] Domain = "exa_mple..com" (env file `+filepath.Join(dir, "relay.env")+":1 MYDOMAIN)") {
		t.Fatalf("bad value from the env file: %v", err)
	}
	_, err = load(t, "", map[string]string{"BERTH_RELAY_ENVFILE": "missing.env"})
	if err == nil || !strings.Contains(err.Error(), `[Relay] EnvFile = "missing.env" (env BERTH_RELAY_ENVFILE)`) {
		t.Fatalf("a missing named env file: %v", err)
	}
	if c, err = load(t, "", map[string]string{"BERTH_RELAY_ENVFILE": ""}); err != nil || c.Relay.EnvFile != "" || c.Relay.Domain != "" {
		t.Fatalf("EnvFile empty turns it off: %+v %v", c.Relay, err)
	}
}

// TestPublicName: the names [Demo] SelfSigned = auto certifies through ACME, and why the others are not.
func TestPublicName(t *testing.T) {
	for name, want := range map[string]string{
		"demo.yunohost.org": "", "example.com": "", "a.b.c.example.net": "",
		"": "no name", "localhost": "single label", "demo": "single label", "10.1.5.2": "IP address", "::1": "IP address",
		"demo.test": "under .test", "demo.localhost": "under .localhost", "box.local": "under .local", "x.example": "under .example",
		"demo.internal": "under .internal", "router.home.arpa": "under .arpa", "DEMO.LAN": "under .lan", "1.2.3.4.5": "IP address",
	} {
		ok, why := PublicName(name)
		if ok != (want == "") || !strings.Contains(why, want) {
			t.Errorf("PublicName(%q) = %v %q, want %q", name, ok, why, want)
		}
	}
}

// TestDemoSelfSignedKey: [Demo] SelfSigned takes auto, yes or no, and no needs a domain and both ports.
func TestDemoSelfSignedKey(t *testing.T) {
	load := func(env map[string]string) (*Config, error) {
		return LoadFrom("/nonexistent", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	}
	for v, want := range map[string]string{"auto": "auto", "yes": "yes", "no": "no", "true": "yes", "off": "no"} {
		c, err := load(map[string]string{"BERTH_DEMO_SELFSIGNED": v, "BERTH_DEMO_DOMAIN": "demo.example.org"})
		if err != nil || c.Demo.SelfSigned != want {
			t.Errorf("SelfSigned=%s: %q %v", v, c.Demo.SelfSigned, err)
		}
	}
	for _, env := range []map[string]string{{"BERTH_DEMO_SELFSIGNED": "maybe"}, {"BERTH_DEMO_SELFSIGNED": "no"},
		{"BERTH_DEMO_SELFSIGNED": "no", "BERTH_DEMO_DOMAIN": "demo.example.org", "BERTH_DEMO_HTTP": ""}} {
		_, err := load(env)
		if err == nil || !strings.Contains(err.Error(), "SelfSigned") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v", env, err)
		} else {
			t.Logf("%v: %v", env, err)
		}
	}
}

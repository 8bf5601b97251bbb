package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestSettings(t *testing.T) {
	conf := "[Image]\nKind=container\n[Settings]\nReceive=BERTH_DOMAIN BERTH_DEMO_PASSWORD_FILE\nHost=APT_REPOSITORY INSTALLER\n" +
		"[Serve]\nScheme=https\nHealthPath=/yunohost/portalapi/public\n"
	m, err := Load(fstest.MapFS{"pay-load/image.conf": {Data: []byte(conf)}}, "pay-load")
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Serve; !m.Boot || m.Go || s.Scheme != "https" || s.Port != 443 || s.HealthPath != "/yunohost/portalapi/public" {
		t.Fatalf("container defaults: boot %v go %v serve %+v", m.Boot, m.Go, m.Serve)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	offered := []Setting{{Name: "BERTH_DOMAIN", Value: "demo.test", Origin: "[Demo] Domain"},
		{Name: "BERTH_DEMO_PASSWORD_FILE", Value: pw, Origin: "[Paths] State", File: true}}
	t.Setenv("BERTH_PAY_LOAD_APT_REPOSITORY", "deb [trusted=yes] http://10.0.0.1/ ./")
	e, err := m.environment(offered)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"BERTH_DOMAIN": "demo.test", "BERTH_DEMO_PASSWORD_FILE": "/var/lib/berth-build/berth_demo_password_file",
		"BERTH_PAY_LOAD_APT_REPOSITORY": "deb [trusted=yes] http://10.0.0.1/ ./"}
	for k, v := range want {
		if e.vars[k] != v {
			t.Errorf("%s = %q, want %q", k, e.vars[k], v)
		}
	}
	if len(e.vars) != len(want) || e.files["var/lib/berth-build/berth_demo_password_file"] != pw {
		t.Errorf("vars %v files %v", e.vars, e.files)
	}
	log := strings.Join(e.log, "\n")
	if strings.Contains(log, "s3cret") || !strings.Contains(log, "BERTH_PAY_LOAD_INSTALLER unset") {
		t.Errorf("build log lines:\n%s", log)
	}
	// The sum follows the password's content and the values, not the path.
	os.WriteFile(pw, []byte("other\n"), 0o600)
	e2, _ := m.environment(offered)
	if e2.sum == e.sum || e.sum == "" {
		t.Errorf("settings sum %q → %q after the password changed", e.sum, e2.sum)
	}
	if _, err := m.environment(offered[:1]); err == nil || !strings.Contains(err.Error(), "BERTH_DEMO_PASSWORD_FILE") {
		t.Errorf("a setting not provided: %v", err)
	}
	_, err = Load(fstest.MapFS{"x/image.conf": {Data: []byte("[Settings]\nReceive=BERTH_NOPE\n")}}, "x")
	if err == nil || !strings.Contains(err.Error(), "unknown setting BERTH_NOPE") {
		t.Errorf("unknown setting: %v", err)
	}
	machine, _ := Load(fstest.MapFS{"y/image.conf": {Data: []byte("[Image]\nBoot=yes\n")}}, "y")
	if machine == nil || !machine.Boot || !machine.Go || machine.Serve.Scheme != "http" || machine.Serve.Port != 80 {
		t.Errorf("machine with Boot=yes: %+v", machine)
	}
}

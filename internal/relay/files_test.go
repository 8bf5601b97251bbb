package relay

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"berth/images"
	"berth/internal/config"
)

func testConfig(t *testing.T) *config.Config {
	dir := t.TempDir()
	env := map[string]string{"BERTH_PATHS_SRV": filepath.Join(dir, "srv"), "BERTH_PATHS_STATE": filepath.Join(dir, "state")}
	c, err := config.LoadFrom(filepath.Join(dir, "absent"), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSecretsAreMadeOnceAndKept(t *testing.T) {
	c := testConfig(t)
	s, created, err := LoadSecrets(SecretsFile(c))
	if err != nil || !created || len(s.NostrPrivateHex) != 64 || len(s.NextAuthSecret) < 40 || s.StatsPassword == "haproxy" {
		t.Fatalf("%+v %v %v", s, created, err)
	}
	st, _ := os.Stat(SecretsFile(c))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets mode %v", st.Mode())
	}
	again, created, err := LoadSecrets(SecretsFile(c))
	if err != nil || created || again != s {
		t.Fatalf("secrets changed on the second load: %+v %v %v", again, created, err)
	}
}

func TestEnvFilesAreWrittenOnceAndPrivate(t *testing.T) {
	c := testConfig(t)
	s, _, _ := LoadSecrets(SecretsFile(c))
	url := `mysql://creator:p$w"x@127.0.0.1:3306/creator`
	files, err := EnvFiles(c, "relay.example.com", url, s)
	if err != nil {
		t.Fatal(err)
	}
	changed, restart, err := WriteChanged(files)
	if err != nil || len(changed) != 4 || len(restart) != 4 {
		t.Fatalf("first write: %v %v %v", changed, restart, err)
	}
	k, _ := KeypairFromHex(s.NostrPrivateHex)
	env, err := readEnv(filepath.Join(c.Paths.Srv, "relaycreator", ".env"))
	if err != nil || env["DATABASE_URL"] != url || env["DEPLOY_PUBKEY"] != k.PublicHex || env["NEXTAUTH_URL"] != "https://relay.example.com" {
		t.Fatalf(".env does not read back: %v %v", env, err)
	}
	for _, f := range files {
		if st, _ := os.Stat(f.Path); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f.Path, st.Mode())
		}
		// The Nostr private key only where it is read: cookiecutter's files.
		if b, _ := os.ReadFile(f.Path); strings.Contains(string(b), s.NostrPrivateHex) != strings.HasSuffix(f.Path, ".cookiecutter.env") {
			t.Errorf("%s: private key present %v", f.Path, strings.Contains(string(b), s.NostrPrivateHex))
		}
	}
	changed, restart, err = WriteChanged(files)
	if err != nil || len(changed) != 0 || len(restart) != 0 {
		t.Fatalf("an unchanged configure rewrote %v, would restart %v (%v)", changed, restart, err)
	}
	// A new deploy key changes exactly the files that carry it and restarts their readers.
	k2, _ := NewKeypair()
	s.NostrPrivateHex = k2.PrivateHex
	files, _ = EnvFiles(c, "relay.example.com", url, s)
	changed, restart, _ = WriteChanged(files)
	if len(changed) != 3 || !slices.Contains(restart, Reader{"strfry", "strfrycheck.service"}) ||
		slices.Contains(restart, Reader{"strfry", "interceptor.service"}) {
		t.Fatalf("rotation changed %v, restarts %v", changed, restart)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f.Path)
		if strings.Contains(string(b), k.PublicHex) || strings.Contains(string(b), k.PrivateHex) {
			t.Errorf("%s still holds the old key", f.Path)
		}
	}
}

// TestGuestLinksRefused: haproxy.cfg or certs/ made links to host files inside the haproxy machine make
// configure, rotateKeys and renew refuse in one line, before anything is written; the host file is unchanged.
func TestGuestLinksRefused(t *testing.T) {
	c := testConfig(t)
	c.Relay.Domain, c.Relay.SelfSigned = "relay.test", true
	if _, _, err := LoadSecrets(SecretsFile(c)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(SecretsFile(c))
	edge := filepath.Join(c.Paths.Srv, "haproxy")
	os.MkdirAll(edge, 0o755)
	if err := checkGuestPaths(c); err != nil {
		t.Fatal(err)
	}
	for _, plant := range []func(){
		func() { os.Symlink(SecretsFile(c), filepath.Join(edge, "haproxy.cfg")) },
		func() {
			os.Remove(filepath.Join(edge, "haproxy.cfg"))
			os.Symlink(filepath.Dir(SecretsFile(c)), filepath.Join(edge, "certs"))
		},
	} {
		plant()
		err := checkGuestPaths(c)
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "leads out of the directory "+edge) {
			t.Fatalf("a planted link: %v", err)
		}
		t.Logf("refused: %v", err)
	}
	// Even past the check, the certificate write goes through os.Root and cannot land on the host.
	if _, err := certificate(t.Context(), c, nil, true); err == nil {
		t.Fatal("the certificate was written through the link")
	}
	if after, _ := os.ReadFile(SecretsFile(c)); string(after) != string(before) {
		t.Fatal("the host's secrets changed")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(SecretsFile(c)), "bundle.pem")); !os.IsNotExist(err) {
		t.Fatal("a bundle landed in the host's state directory")
	}
}

// TestDeployFile: deploy.env names the image's source unless [Relay] DeployRepo says otherwise, and the
// branch only when [Relay] DeployBranch is set (empty: automatic deploys off).
func TestDeployFile(t *testing.T) {
	c := testConfig(t)
	f := DeployFile(c, images.FS)
	if f.Path != filepath.Join(c.Paths.Srv, "relaycreator", "deploy.env") ||
		!strings.Contains(f.Content, "DEPLOY_REPO=https://github.com/relaytools/relaycreator.git\nDEPLOY_BRANCH=\n") {
		t.Fatalf("default deploy.env %s:\n%s", f.Path, f.Content)
	}
	c.Relay.DeployBranch, c.Relay.DeployRepo = "main", "/srv/relaycreator/upstream"
	if f := DeployFile(c, images.FS); !strings.Contains(f.Content, "DEPLOY_REPO=/srv/relaycreator/upstream\nDEPLOY_BRANCH=main\n") {
		t.Fatalf("deploy.env:\n%s", f.Content)
	}
	for _, bad := range []string{"BERTH_RELAY_DEPLOYBRANCH=-x", "BERTH_RELAY_DEPLOYBRANCH=a..b", "BERTH_RELAY_DEPLOYREPO=ftp://h/r", "BERTH_RELAY_DEPLOYREPO=/x;rm -rf /"} {
		k, v, _ := strings.Cut(bad, "=")
		_, err := config.LoadFrom(filepath.Join(t.TempDir(), "absent"), func(n string) (string, bool) { return v, n == k })
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

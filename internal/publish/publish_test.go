package publish

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"berth/internal/config"
	"berth/internal/image"
	"berth/internal/run"
	"berth/internal/testutil"
)

func write(t *testing.T, dir, rel, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// tree is a small machine with every kind of host secret the export must leave out.
func tree(t *testing.T) string {
	dir := t.TempDir()
	write(t, dir, "etc/shadow", "root:$6$salt$hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nmysql:!:19000::::::\n", 0o640)
	write(t, dir, "etc/shadow-", "root:$6$old$hash:19000:0:99999:7:::\n", 0o600)
	write(t, dir, "etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
	write(t, dir, "etc/ssh/ssh_host_ed25519_key", "PRIVATE", 0o600)
	write(t, dir, "etc/ssh/sshd_config", "Port 22\n", 0o644)
	write(t, dir, "etc/ssl/private/ssl-cert-snakeoil.key", "PRIVATE", 0o600)
	write(t, dir, "var/lib/mysql/ibdata1", "host data", 0o600)
	write(t, dir, "srv/app/.env", "SECRET=1", 0o600)
	write(t, dir, "opt/app/.cookiecutter.env", "SECRET=2", 0o600)
	write(t, dir, "root/.bash_history", "mysql -pSECRET", 0o600)
	write(t, dir, "usr/bin/tool", "#!/bin/sh\n", 0o755)
	os.Chmod(filepath.Join(dir, "usr/bin/tool"), os.ModeSetuid|0o755)
	write(t, dir, "etc/berth/image.json", `{"image":"tiny","base_key":"b","manifest_sha256":"m"}`, 0o644)
	if err := os.Link(filepath.Join(dir, "usr/bin/tool"), filepath.Join(dir, "usr/bin/tool2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../bin/tool", filepath.Join(dir, "usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	unix.Lsetxattr(filepath.Join(dir, "usr/bin/tool"), "user.berth", []byte("kept"), 0)
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error {
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	return dir
}

func TestExportStripsSecretsAndIsReproducible(t *testing.T) {
	dir := tree(t)
	strip := Strip{Empty: []string{"srv", "var/lib/mysql"}}
	clamp := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	var a, b bytes.Buffer
	sumA, err := Export(dir, &a, strip, clamp)
	if err != nil {
		t.Fatal(err)
	}
	sumB, _ := Export(dir, &b, strip, clamp)
	if sumA != sumB || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("two exports of one tree differ: %s %s", sumA, sumB)
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar to unpack with")
	}
	out := t.TempDir()
	f := filepath.Join(t.TempDir(), "x.tar.gz")
	os.WriteFile(f, a.Bytes(), 0o600)
	// What systemd-importd does with it (tar, numeric owners, xattrs).
	if b, err := exec.Command("tar", "-z", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", f, "-C", out).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, b)
	}
	for _, gone := range []string{"etc/ssh/ssh_host_ed25519_key", "etc/ssl/private/ssl-cert-snakeoil.key", "var/lib/mysql/ibdata1",
		"srv/app/.env", "opt/app/.cookiecutter.env", "root/.bash_history"} {
		if _, err := os.Lstat(filepath.Join(out, gone)); err == nil {
			t.Errorf("%s was published", gone)
		}
	}
	for _, kept := range []string{"etc/ssh/sshd_config", "srv", "var/lib/mysql", "usr/bin/link", "etc/berth/image.json"} {
		if _, err := os.Lstat(filepath.Join(out, kept)); err != nil {
			t.Errorf("%s is missing: %v", kept, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "etc/machine-id")); len(b) != 0 {
		t.Errorf("machine-id published: %q", b)
	}
	for _, f := range []string{"etc/shadow", "etc/shadow-"} {
		if b, _ := os.ReadFile(filepath.Join(out, f)); strings.Contains(string(b), "$6$") || !strings.HasPrefix(string(b), "root:!:") {
			t.Errorf("%s published with a hash: %q", f, b)
		}
	}
	st1, _ := os.Stat(filepath.Join(out, "usr/bin/tool"))
	st2, _ := os.Stat(filepath.Join(out, "usr/bin/tool2"))
	if !os.SameFile(st1, st2) || st1.Mode()&os.ModeSetuid == 0 {
		t.Errorf("hard link or setuid bit lost: %v %v", st1.Mode(), st2.Mode())
	}
	if v := make([]byte, 16); true {
		if n, err := unix.Lgetxattr(filepath.Join(dir, "usr/bin/tool"), "user.berth", v); err == nil {
			if n2, err := unix.Lgetxattr(filepath.Join(out, "usr/bin/tool"), "user.berth", v); err != nil || string(v[:n2]) != "kept" || n != n2 {
				t.Errorf("xattr lost: %v", err)
			}
		}
	}
	if st, _ := os.Stat(filepath.Join(out, "etc/ssh/sshd_config")); !st.ModTime().Equal(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("mtime %v", st.ModTime())
	}
	t.Logf("export: %d bytes, sha256 %s, identical twice", a.Len(), sumA)
}

func TestLockPasswords(t *testing.T) {
	got := string(lockPasswords([]byte("root:$6$x$y:1:0:99999:7:::\nnobody:*:1::::::\nu::1::::::\nlocked:!$6$a:1::::::\n")))
	want := "root:!:1:0:99999:7:::\nnobody:*:1::::::\nu::1::::::\nlocked:!:1::::::\n"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestSumsAndKeys(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	s := Sums(sum, "mysql.tar.gz")
	if got, ok := ParseSums(s, "mysql.tar.gz"); !ok || got != sum {
		t.Fatalf("ParseSums(%q) = %q %v", s, got, ok)
	}
	if got, ok := ParseSums([]byte(sum+" *other.tar.gz\n"+sum+" *mysql.tar.gz\n"), "mysql.tar.gz"); !ok || got != sum {
		t.Fatalf("binary-mode line: %q %v", got, ok)
	}
	a := BuildKey(image.Stamp{Image: "mysql", BaseKey: "b", Manifest: "m"})
	if b := BuildKey(image.Stamp{Image: "mysql", BaseKey: "b", Manifest: "m", Built: time.Now()}); a != b || len(a) != 16 {
		t.Fatalf("build key depends on the build time: %s %s", a, b)
	}
	if BuildKey(image.Stamp{Image: "mysql", BaseKey: "b2", Manifest: "m"}) == a {
		t.Fatal("build key ignores the base")
	}
	if Join("http://h/b/", "/p") != "http://h/b/p" || Join("", "x") != "x" {
		t.Fatal("Join")
	}
}

func TestCredentials(t *testing.T) {
	c := &config.Config{}
	c.Publish.Credentials = filepath.Join(t.TempDir(), "credentials")
	none := func(string) (string, bool) { return "", false }
	if _, err := LoadCredentials(c, none); err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Fatalf("no credentials: %v", err)
	}
	os.WriteFile(c.Publish.Credentials, []byte("AWS_ACCESS_KEY_ID=id\nexport AWS_SECRET_ACCESS_KEY=\"s3cret\"\n"), 0o644)
	if _, err := LoadCredentials(c, none); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a 0644 file: %v", err)
	}
	os.Chmod(c.Publish.Credentials, 0o600)
	cr, err := LoadCredentials(c, none)
	if err != nil || cr.AccessKey != "id" || cr.SecretKey != "s3cret" || strings.Contains(cr.Origin, "s3cret") {
		t.Fatalf("%+v %v", cr, err)
	}
	env := map[string]string{"AWS_ACCESS_KEY_ID": "eid", "AWS_SECRET_ACCESS_KEY": "esecret"}
	cr, _ = LoadCredentials(c, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if cr.AccessKey != "eid" || cr.Origin != "env AWS_ACCESS_KEY_ID" {
		t.Fatalf("env: %+v", cr)
	}
}

// TestSignatureVerifiesWithGPG: the key berth makes signs SHA256SUMS so that gpg, run the way
// systemd-importd runs it against the keyring TrustKey writes, accepts it, and refuses a signature by a key
// the keyring does not hold.
func TestSignatureVerifiesWithGPG(t *testing.T) {
	testutil.Require(t, "gpg")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "state/publish/signing.key")
	key, made, err := EnsureKey(keyFile)
	if err != nil || !made {
		t.Fatal(made, err)
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
	again, made, err := EnsureKey(keyFile)
	if err != nil || made || Fingerprint(again) != Fingerprint(key) {
		t.Fatalf("second EnsureKey: %v %v", made, err)
	}
	pub, _ := PublicKey(key)
	pubFile := filepath.Join(dir, "publisher.asc")
	os.WriteFile(pubFile, pub, 0o644)
	ImportKeyring = filepath.Join(dir, "etc/systemd/import-pubring.gpg")
	defer func() { ImportKeyring = "/etc/systemd/import-pubring.gpg" }()
	if fp, added, err := TrustKey(pubFile); err != nil || !added || fp != Fingerprint(key) {
		t.Fatalf("TrustKey: %v %v %v", fp, added, err)
	}
	if _, added, _ := TrustKey(pubFile); added {
		t.Fatal("the same key added twice")
	}
	sums := Sums(strings.Repeat("0", 64), "mysql.tar.gz")
	sig, _ := Sign(key, sums)
	verify := func(sig []byte) error {
		os.WriteFile(filepath.Join(dir, "SHA256SUMS"), sums, 0o644)
		os.WriteFile(filepath.Join(dir, "SHA256SUMS.gpg"), sig, 0o644)
		home := t.TempDir()
		_, err := run.Cmd{Argv: []string{"gpg", "--no-options", "--no-default-keyring", "--no-auto-key-locate", "--no-auto-check-trustdb",
			"--batch", "--trust-model=always", "--homedir", home, "--keyring", ImportKeyring, "--verify",
			filepath.Join(dir, "SHA256SUMS.gpg"), filepath.Join(dir, "SHA256SUMS")}, Quiet: true}.Run(context.Background())
		return err
	}
	if err := verify(sig); err != nil {
		t.Fatalf("gpg refuses berth's signature: %v", err)
	}
	other, _, _ := EnsureKey(filepath.Join(dir, "other.key"))
	bad, _ := Sign(other, sums)
	if err := verify(bad); err == nil {
		t.Fatal("gpg accepted a signature by an unknown key")
	}
}

// transferCause reads the failed transfer's own lines: a journal that also holds the previous pull's invalid
// download (another transfer) names this one's; a journal without a cause gives its last line, not found.
func TestTransferCause(t *testing.T) {
	journal := `Started systemd-importd.service - Disk Image Download Service.
(transfer3) Pulling 'http://10.0.0.1/mysql.tar.gz', saving as 'berth-staging-mysql'.
(transfer3) DOWNLOAD INVALID: Checksum of mysql.tar.gz file did not check out, file has been tampered with.
(transfer3) Exiting.
Transfer process failed with exit code 1.
(transfer4) Pulling 'http://10.0.0.1/haproxy.tar.gz', saving as 'berth-staging-haproxy'.
(transfer4) gpg: BAD signature from "berth publisher"
(transfer4) DOWNLOAD INVALID: Signature verification failed.
(transfer4) Exiting.
`
	for _, c := range []struct {
		id    uint32
		cause string
		found bool
	}{
		{3, "(transfer3) DOWNLOAD INVALID: Checksum of mysql.tar.gz file did not check out, file has been tampered with.", true},
		{4, "(transfer4) DOWNLOAD INVALID: Signature verification failed.", true},
		{5, "Transfer process failed with exit code 1.", true},
	} {
		if cause, found := transferCause(journal, c.id); cause != c.cause || found != c.found {
			t.Errorf("transfer %d: %q %v, want %q %v", c.id, cause, found, c.cause, c.found)
		}
	}
	if cause, found := transferCause("(transfer7) Pulling 'x'.\n(transfer7) Exiting.\n", 7); cause != "(transfer7) Exiting." || found {
		t.Errorf("no cause: %q %v", cause, found)
	}
}

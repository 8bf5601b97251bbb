package publish_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"berth/internal/prereqs"
	"berth/internal/publish"
	"berth/internal/testhost"
	"berth/internal/testutil"
	"berth/internal/testutil/testbase"
)

// s3Server runs versitygw with its POSIX backend on addr until the test ends; it returns the backend's
// directory (buckets are its subdirectories, objects plain files).
func s3Server(t *testing.T, addr, access, secret string) string {
	t.Helper()
	bin := prereqs.GoTool("versitygw")
	if _, err := os.Stat(bin); err != nil {
		testutil.SkipOrFail(t, "versitygw is not installed at "+bin+" (./mage test installs it)")
	}
	dir := t.TempDir()
	logf, _ := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	cmd := exec.Command(bin, "--access", access, "--secret", secret, "--port", addr, "posix", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("versitygw log:\n%s", b)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			return dir
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw does not answer on %s", addr)
		}
	}
}

// bridge makes a bridge with a name and a /24 of its own, and removes it when the test ends.
func bridge(t *testing.T) (name, prefix string) {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name = "bpub" + hex.EncodeToString(b)
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	for {
		n, _ := rand.Int(rand.Reader, big.NewInt(250))
		prefix = fmt.Sprintf("10.231.%d", n.Int64()+2)
		if !strings.Contains(string(addrs), prefix+".") {
			break
		}
	}
	for _, argv := range [][]string{{"ip", "link", "add", "name", name, "type", "bridge"}, {"ip", "addr", "add", prefix + ".1/24", "dev", name},
		{"ip", "link", "set", name, "up"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", argv, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	return name, prefix
}

// TestPublishAndPullOnTwoHosts: host A builds mysql and haproxy and publishes them to a real S3 server
// (versitygw on a bridge); host B, which never built anything, pulls them through systemd-importd and runs
// them. Tampering, an unknown key, bad inputs and repeated runs on the way.
func TestPublishAndPullOnTwoHosts(t *testing.T) {
	testhost.Require(t)
	testutil.Require(t, "debootstrap", "systemd-nspawn", "ip")
	ctx := context.Background()
	br, net := bridge(t)
	s3addr := net + ".1:7070"
	const access, secret, bucket = "berthadmin", "berth-test-secret", "images"
	root := s3Server(t, s3addr, access, secret)
	mc, err := minio.New(s3addr, &minio.Options{Creds: credentials.NewStaticV4(access, secret, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::images/*"]}]}`
	if err := mc.SetBucketPolicy(ctx, bucket, policy); err != nil {
		t.Fatal(err)
	}
	objects := func() string {
		var l []string
		for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
			l = append(l, fmt.Sprintf("%s %d %s", o.Key, o.Size, o.LastModified.Format(time.RFC3339Nano)))
		}
		return strings.Join(l, "\n")
	}

	c := testbase.Config(t, nil)
	testbase.Build(t, c)
	bin := testutil.BerthBinary(t)
	fixtures, _ := filepath.Abs("../fleet/testdata")
	a := testhost.New(t, testhost.Options{Name: "berth-pub-a", HostNetwork: true,
		Binds: []string{c.Paths.Machines + ":/var/lib/machines"}, ReadOnlyBinds: []string{fixtures + ":/fixtures"}})
	b := testhost.New(t, testhost.Options{Name: "berth-pub-b", Bridge: br, Packages: []string{"gpg"}})
	for _, h := range []*testhost.Host{a, b} {
		if err := h.CopyIn(bin, "/usr/local/sbin/berth"); err != nil {
			t.Fatal(err)
		}
	}
	b.Must(t, "ip", "addr", "add", net+".2/24", "dev", "host0")
	b.Must(t, "ip", "link", "set", "host0", "up")
	conf := fmt.Sprintf("[Publish]\nEndpoint=http://%s\nBucket=%s\nPrefix=relay/v1\n", s3addr, bucket)
	os.MkdirAll(filepath.Join(a.Dir, "etc/berth"), 0o755)
	os.WriteFile(filepath.Join(a.Dir, "etc/berth/berth.conf"), []byte(conf), 0o644)
	os.MkdirAll(filepath.Join(b.Dir, "etc/berth"), 0o755)
	os.WriteFile(filepath.Join(b.Dir, "etc/berth/berth.conf"), []byte(conf+"PublicKey=/root/publisher.asc\n"), 0o644)

	berthOn := func(h *testhost.Host, env []string, args ...string) (string, error) {
		argv := append(append([]string{"env", "BERTH_SOURCE_COOKIECUTTER=/fixtures/cookiecutter", "BERTH_SOURCE_NPUB2HEX=/fixtures/npub2hex"}, env...), "/usr/local/sbin/berth")
		return h.Run(ctx, append(argv, args...)...)
	}
	must := func(h *testhost.Host, env []string, args ...string) (string, time.Duration) {
		t.Helper()
		start := time.Now()
		out, err := berthOn(h, env, args...)
		if err != nil {
			t.Fatalf("%s: berth %s: %v\n%s", h.Name, strings.Join(args, " "), err, out)
		}
		return out, time.Since(start)
	}
	lastLine := func(s string) string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		return l[len(l)-1]
	}
	fails := func(h *testhost.Host, env []string, want string, args ...string) {
		t.Helper()
		out, err := berthOn(h, env, args...)
		if err == nil || !strings.Contains(lastLine(out), want) {
			t.Fatalf("%s: berth %s with %v: want a failure saying %q, got %v\n%s", h.Name, strings.Join(args, " "), env, want, err, out)
		}
		t.Logf("refused (%s): %s", strings.Join(env, " "), lastLine(out))
	}

	for _, img := range []string{"mysql", "haproxy"} {
		_, d := must(a, nil, img+":install")
		t.Logf("host A: %s:install in %s", img, d.Round(time.Second))
	}
	credFile := filepath.Join(a.Dir, "var/lib/berth/publish/credentials")
	os.MkdirAll(filepath.Dir(credFile), 0o700)
	os.WriteFile(credFile, []byte("AWS_ACCESS_KEY_ID="+access+"\nAWS_SECRET_ACCESS_KEY="+secret+"\n"), 0o600)

	// Bad inputs: one line each, nothing uploaded, no key made.
	fails(a, []string{"BERTH_PUBLISH_ENDPOINT=s3.example.com"}, "[Publish] Endpoint", "publish")
	fails(a, []string{"BERTH_PUBLISH_ENDPOINT=http://127.0.0.1:1"}, "does not answer", "publish")
	fails(a, []string{"AWS_ACCESS_KEY_ID=" + access, "AWS_SECRET_ACCESS_KEY=wrong"}, "refused the credentials from env AWS_ACCESS_KEY_ID", "publish")
	fails(a, []string{"BERTH_PUBLISH_BUCKET=no-such-bucket"}, `bucket "no-such-bucket" does not exist`, "publish")
	if got := objects(); got != "" {
		t.Fatalf("a refused publish uploaded: %s", got)
	}
	if _, err := os.Stat(filepath.Join(a.Dir, "var/lib/berth/publish/signing.key")); err == nil {
		t.Fatal("a refused publish made a signing key")
	}

	out, d := must(a, nil, "publish")
	t.Logf("host A: publish (both images) in %s:\n%s", d.Round(100*time.Millisecond), out)
	if st, err := os.Stat(filepath.Join(a.Dir, "var/lib/berth/publish/signing.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("signing key: %v %v", st, err)
	}
	first := objects()
	out, _ = must(a, nil, "publish")
	if strings.Count(out, "nothing uploaded") != 2 || objects() != first {
		t.Fatalf("a second publish uploaded something:\n%s", out)
	}
	t.Logf("host A: publish again: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", " | "))
	pub, _ := must(a, nil, "publishKey")
	os.WriteFile(filepath.Join(b.Dir, "root/publisher.asc"), []byte(pub), 0o644)

	// What was published: no password hash, machine-id, SSH host key, /srv or bound data, env file.
	idxB, _ := os.ReadFile(filepath.Join(root, bucket, "relay/v1/index.json"))
	idx, err := publish.ParseIndex(idxB)
	if err != nil {
		t.Fatal(err)
	}
	aHash, _ := os.ReadFile(filepath.Join(a.Dir, "var/lib/berth/passwords/mysql.crypt"))
	for _, img := range []string{"mysql", "haproxy"} {
		grepTarball(t, filepath.Join(root, bucket, "relay/v1", idx.Images[img].Tarball), strings.TrimSpace(string(aHash)))
	}

	// Host B pulls through systemd-importd; the machines start and answer.
	fails(b, nil, "strfry was never published", "machine:pull", "strfry")
	out, d = must(b, nil, "pull")
	t.Logf("host B: pull (both images) in %s:\n%s", d.Round(100*time.Millisecond), out)
	for _, img := range []string{"mysql", "haproxy"} {
		if !regexp.MustCompile(img + `: pulled build \w+ from .* in [0-9.]+m?s \(verified: signature\)`).MatchString(out) {
			t.Fatalf("no pull line for %s:\n%s", img, out)
		}
		st, err := os.Stat(filepath.Join(b.Dir, "var/lib/berth/passwords", img))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s root password on B: %v %v", img, st, err)
		}
	}
	if bHash, _ := os.ReadFile(filepath.Join(b.Dir, "var/lib/berth/passwords/mysql.crypt")); bytes.Equal(bHash, aHash) {
		t.Fatal("B has A's root password")
	}
	must(b, nil, "mysql:start")
	must(b, nil, "haproxy:start")
	selectOne := func() {
		t.Helper()
		var out string
		var err error
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
			if out, err = b.Run(ctx, "systemd-run", "-M", "mysql", "--wait", "--pipe", "-q", "mariadb", "-N", "-e", "SELECT 1"); err == nil && strings.TrimSpace(out) == "1" {
				return
			}
		}
		t.Fatalf("mysql on B: SELECT 1: %v %q", err, out)
	}
	selectOne()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	var status string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && status == ""; time.Sleep(500 * time.Millisecond) {
		if resp, err := client.Get("https://" + net + ".2:443/"); err == nil {
			status = resp.Status
			resp.Body.Close()
		}
	}
	if status == "" {
		t.Fatal("haproxy on B does not answer on 443")
	}
	t.Logf("host B: mysql answers SELECT 1; haproxy answers on %s.2:443 with %s", net, status)

	// The same build again: nothing to do.
	mysqlDir := filepath.Join(b.Dir, "var/lib/machines/mysql")
	ino := func() uint64 { st, _ := os.Stat(mysqlDir); return inode(st) }
	before := ino()
	out, _ = must(b, nil, "pull")
	if strings.Count(out, "is already installed; nothing to do") != 2 || ino() != before {
		t.Fatalf("a second pull did something:\n%s", out)
	}
	t.Logf("host B: pull again: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", " | "))
	// [Publish] Pull: the same builds from a plain HTTP origin; an origin where nothing was published.
	origin := "BERTH_PUBLISH_PULL=http://" + s3addr + "/" + bucket + "/relay/v1"
	if out, _ = must(b, []string{origin}, "mysql:pull"); !strings.Contains(out, "nothing to do") {
		t.Fatalf("pull from [Publish] Pull: %s", out)
	}
	fails(b, []string{"BERTH_PUBLISH_PULL=http://" + s3addr + "/" + bucket + "/elsewhere"}, "elsewhere/index.json", "pull")

	// One byte of the tarball changed after publishing (in the gzip header, so that it still unpacks and only
	// the checksum can tell): refused by its checksum, B's machine unchanged.
	tarball := filepath.Join(root, bucket, "relay/v1", idx.Images["mysql"].Tarball)
	flip(t, tarball, 4)
	fails(b, []string{"FORCE=1"}, "DOWNLOAD INVALID: Checksum of mysql.tar.gz", "mysql:pull")
	flip(t, tarball, 4)
	if ino() != before {
		t.Fatal("a refused pull replaced the machine")
	}
	selectOne()
	// A signature by a key B does not trust: refused.
	sumsDir := filepath.Join(root, bucket, "relay/v1", publish.Dir("haproxy", idx.Images["haproxy"].Build))
	good, _ := os.ReadFile(filepath.Join(sumsDir, "SHA256SUMS.gpg"))
	sums, _ := os.ReadFile(filepath.Join(sumsDir, "SHA256SUMS"))
	other, _, err := publish.EnsureKey(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := publish.Sign(other, sums)
	os.WriteFile(filepath.Join(sumsDir, "SHA256SUMS.gpg"), bad, 0o644)
	fails(b, []string{"FORCE=1"}, "DOWNLOAD INVALID: Signature verification failed", "haproxy:pull")
	os.WriteFile(filepath.Join(sumsDir, "SHA256SUMS.gpg"), good, 0o644)
	if out, _ := b.Run(ctx, "systemctl", "is-active", "systemd-nspawn@haproxy"); strings.TrimSpace(out) != "active" {
		t.Fatalf("haproxy after a refused pull: %q", out)
	}
	if left, _ := filepath.Glob(filepath.Join(b.Dir, "var/lib/machines/berth-staging-*")); len(left) != 0 {
		t.Fatalf("staging left behind: %v", left)
	}
}

func inode(st os.FileInfo) uint64 {
	if st == nil {
		return 0
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// flip changes the byte at offset in file (twice restores it), keeping its size.
func flip(t *testing.T, file string, offset int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	one := make([]byte, 1)
	f.ReadAt(one, offset)
	one[0] ^= 0xff
	if _, err := f.WriteAt(one, offset); err != nil {
		t.Fatal(err)
	}
}

// grepTarball reads a published tarball and fails on a password hash, a machine-id, an SSH host key,
// content under /srv or a bound data directory, an env file, or the publishing host's root password hash.
func grepTarball(t *testing.T, file, hostHash string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var entries int
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		entries++
		name := strings.TrimPrefix(h.Name, "./")
		body, _ := io.ReadAll(tr)
		switch {
		case name == "etc/shadow" || name == "etc/shadow-":
			if regexp.MustCompile(`:\$[0-9a-z]+\$`).Match(body) {
				t.Errorf("%s: %s holds a password hash", file, name)
			}
		case name == "etc/machine-id" && len(bytes.TrimSpace(body)) != 0:
			t.Errorf("%s: machine-id %q", file, body)
		case strings.HasPrefix(name, "etc/ssh/ssh_host_"), strings.HasSuffix(name, ".env"),
			strings.HasPrefix(name, "srv/") && name != "srv/",
			strings.HasPrefix(name, "var/lib/mysql/") && name != "var/lib/mysql/",
			strings.HasPrefix(name, "etc/haproxy/") && name != "etc/haproxy/":
			t.Errorf("%s: %s was published", file, name)
		}
		if hostHash != "" && bytes.Contains(body, []byte(hostHash)) {
			t.Errorf("%s: %s holds the publishing host's root password hash", file, name)
		}
	}
	t.Logf("%s: %d entries, %.1f MiB, no secret of host A", filepath.Base(file), entries, float64(st.Size())/(1<<20))
}

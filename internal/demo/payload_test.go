package demo

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth/images"
	"berth/internal/fsx"
	"berth/internal/image"
	"berth/internal/testutil"
	"berth/internal/testutil/testbase"
)

// payloadImages is the test payload demo-https (testdata) with the YunoHost image's hint script, as a
// folder of images.
func payloadImages(t *testing.T) string {
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "demo-https"), os.DirFS("testdata/images/demo-https")); err != nil {
		t.Fatal(err)
	}
	hint, err := images.FS.ReadFile("yunohost/demo-hint")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "demo-https", "demo-hint"), hint, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// aptRepository makes a flat apt repository holding one small package, berth-test-payload, built with
// dpkg-deb and indexed with apt-ftparchive, and serves it over HTTP on addr (the demo bridge's gateway:
// what the builder container reaches). It returns the sources.list line.
func aptRepository(t *testing.T, ip string, port int) string {
	root := t.TempDir()
	pkg, repo := filepath.Join(root, "pkg"), filepath.Join(root, "repo")
	for _, d := range []string{filepath.Join(pkg, "DEBIAN"), filepath.Join(pkg, "usr/share/berth-test-payload"), repo} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(pkg, "DEBIAN/control"), []byte("Package: berth-test-payload\nVersion: 1.0\nArchitecture: all\n"+
		"Maintainer: berth tests <root@localhost>\nDescription: a package from the test's own apt repository\n"), 0o644)
	os.WriteFile(filepath.Join(pkg, "usr/share/berth-test-payload/hello"), []byte("from the mirror\n"), 0o644)
	for _, argv := range [][]string{
		{"dpkg-deb", "--root-owner-group", "--build", pkg, filepath.Join(repo, "berth-test-payload_1.0_all.deb")},
		{"sh", "-c", "cd " + repo + " && apt-ftparchive packages . > Packages && apt-ftparchive release . > Release"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(repo))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "deb [trusted=yes] http://" + l.Addr().String() + "/ ./"
}

// TestDemoPayloadOnLXC builds a payload shaped like YunoHost through demo:build: provisioned in the booted
// builder container (its script fills a running MariaDB and installs a package from an apt repository the
// test serves), with berth's settings and the host's password file, served over HTTPS only; then 20
// switches under load through the proxy's HTTPS front, the health check over HTTPS with SNI, and the demo
// hint placed again by the shipped upgrade hook.
func TestDemoPayloadOnLXC(t *testing.T) {
	testutil.Require(t, "lxc-start", "haproxy", "nft", "debootstrap", "systemd-nspawn", "dpkg-deb", "apt-ftparchive")
	ctx := context.Background()
	env := demoEnv(t, lxcDir(t), "overlayfs")
	env["BERTH_DEMO_IMAGE"], env["BERTH_DEMO_DOMAIN"], env["BERTH_DEMO_HEALTHPATH"] = "demo-https", "demo.test", ""
	// The test's apt repository listens on the bridge's gateway: the one host port the containers may reach.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	repoPort := free.Addr().(*net.TCPAddr).Port
	free.Close()
	env["BERTH_DEMO_HOSTPORTS"] = strconv.Itoa(repoPort)
	c := testbase.Config(t, env)
	testbase.Build(t, c)
	d, err := Open(c, os.DirFS(payloadImages(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Remove(context.Background()); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	if err := d.net.Up(ctx); err != nil { // the repository listens on the bridge's gateway
		t.Fatal(err)
	}
	t.Setenv("BERTH_DEMO_HTTPS_APT_REPOSITORY", aptRepository(t, d.net.Gateway().String(), repoPort))

	start := time.Now()
	if err := d.Build(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %s (booted provisioning)", time.Since(start).Round(time.Millisecond))
	cur, _ := d.current()
	pristine := d.genDir(cur)
	password, _ := os.ReadFile(d.passwordFile())
	for file, want := range map[string]string{
		"var/www/html/db.txt":                "hello from mariadb\n", // made through the running database
		"usr/share/berth-test-payload/hello": "from the mirror\n",    // installed from the test's repository
		"root/received-password":             string(password),       // the host's password file
	} {
		b, err := os.ReadFile(filepath.Join(pristine, file))
		if err != nil || (want != "" && string(b) != want) {
			t.Errorf("pristine %s: %q %v, want %q", file, b, err, want)
		}
	}
	for _, gone := range []string{"var/lib/berth-build", "usr/local/go", "etc/apt/sources.list.d/mirror.list"} {
		if _, err := os.Stat(filepath.Join(pristine, gone)); !os.IsNotExist(err) {
			t.Errorf("pristine still has %s: %v", gone, err)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(image.LogDir(c), "demo-https-*.log"))
	if len(logs) != 1 {
		t.Fatalf("build logs: %v", logs)
	}
	log, _ := os.ReadFile(logs[0])
	for _, want := range []string{"BERTH_DOMAIN=demo.test", "BERTH_DEMO_USER=demo", "BERTH_PUBLIC_SCHEME=https",
		"BERTH_DEMO_PASSWORD_FILE=/var/lib/berth-build/berth_demo_password_file", "Setting up berth-test-payload"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the build log lacks %q", want)
		}
	}
	if pw := strings.TrimSpace(string(password)); pw == "" || strings.Contains(string(log), pw) {
		t.Errorf("the demo password (%d bytes) is in the build log %s", len(pw), logs[0])
	}
	t.Logf("build log %s: %d bytes, settings received:\n%s", logs[0], len(log), grepLines(string(log), "BERTH_"))

	active := oneServing(t, d)
	// Root in the container is not root on the host: no write to core_pattern, a proc mounted inside has no
	// writable sysctl, and none of the container's processes is uid 0 on the host.
	confined := attach(t, d, active, "sh", "-c", "echo x > /proc/sys/kernel/core_pattern; echo core_pattern=$?; mkdir -p /mnt/p; "+
		"if mount -t proc proc /mnt/p; then echo y > /mnt/p/sys/kernel/core_pattern; echo mounted_core_pattern=$?; umount /mnt/p; else echo mount=$?; fi")
	if strings.Contains(confined, "core_pattern=0") || !strings.Contains(confined, "core_pattern=") {
		t.Fatalf("root in %s can write a host sysctl:\n%s", active, confined)
	}
	uids := containerUIDs(t, d, active)
	if len(uids) == 0 || uids[0] < IDBase {
		t.Fatalf("host uids of %s's processes: %v", active, uids)
	}
	limits := map[string]string{}
	for _, f := range []string{"memory/lxc.payload." + active + "/memory.limit_in_bytes", "lxc.payload." + active + "/memory.max",
		"pids/lxc.payload." + active + "/pids.max", "lxc.payload." + active + "/pids.max"} {
		if b, err := os.ReadFile("/sys/fs/cgroup/" + f); err == nil {
			limits[filepath.Base(f)] = strings.TrimSpace(string(b))
		}
	}
	if (limits["memory.limit_in_bytes"] != "2147483648" && limits["memory.max"] != "2147483648") || limits["pids.max"] != "1024" {
		t.Fatalf("cgroup limits of %s: %v, want [Demo] Memory 2G and Tasks 1024", active, limits)
	}
	t.Logf("confinement of %s: %s; host uids of its %d processes: %d..%d; cgroup limits %v", active, strings.ReplaceAll(strings.TrimSpace(confined), "\n", " | "), len(uids), uids[0], uids[len(uids)-1], limits)

	isolated(t, d, active, repoPort)

	// The database made at provisioning starts with the container and answers the query.
	query := "until systemctl is-active -q mariadb; do sleep 0.2; done; mysql -N -e 'SELECT text FROM demo.greeting'"
	if out := attach(t, d, active, "timeout", "60", "sh", "-c", query); out != "hello from mariadb\n" {
		t.Errorf("the database in %s: %q", active, out)
	}
	site := "https://demo.test:" + port(c.Demo.HTTPS)
	client := testutil.HostClient(c.Demo.HTTPS)
	if code, body, err := testutil.HTTPGetWith(client, site+"/"); code != 200 || body != "berth demo "+active+"\n" {
		t.Fatalf("GET / through the proxy: %d %q %v", code, body, err)
	}
	// The front answers only for [Demo] Domain: another Host gets HAProxy's own 421, not the container's.
	if code, body, err := testutil.HTTPGetWith(client, "https://other.test:"+port(c.Demo.HTTPS)+"/"); code != 421 || body != "this front serves only demo.test" {
		t.Fatalf("another Host through the front: %d %q %v", code, body, err)
	}
	// The payload's administration is not part of the demo: the front refuses it.
	if code, body, err := testutil.HTTPGetWith(client, site+"/admin/"); code != 403 || body != "not part of the demo" {
		t.Fatalf("the admin path through the front: %d %q %v", code, body, err)
	}
	plain := testutil.HostClient(c.Demo.HTTP)
	resp, err := plain.Get("http://demo.test/blog?x=1")
	if err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != "https://demo.test/blog?x=1" {
		t.Fatalf("port 80 should redirect to https at the proxy: %v %v", resp, err)
	}
	resp.Body.Close()
	// The health check asks over HTTPS with SNI and Host demo.test; pointed at the payload's port 80, whose
	// every answer is a redirect, it fails instead of following it.
	saved := d.payload
	d.payload.Scheme, d.payload.Port = "http", 80
	if err := d.healthy(ctx, active); err == nil || !strings.Contains(err.Error(), "301") {
		t.Errorf("health check against a redirect: %v", err)
	}
	d.payload = saved

	hint := func() string {
		t.Helper()
		code, body, err := testutil.HTTPGetWith(client, site+"/portal/")
		if err != nil || code != 200 || strings.Count(body, `id="berth-demo-hint"`) != 1 ||
			!strings.Contains(body, "Login: demo   Password: "+strings.TrimSpace(string(password))) {
			t.Fatalf("login page through the proxy: %d %v\n%s", code, err, body)
		}
		return body
	}
	first := hint()
	hook := filepath.Join(testutil.RepoRoot(t), "upgrade.d", "always", "10-demo-login")
	for range 2 {
		cmd := exec.Command(hook, active)
		cmd.Env = append(os.Environ(), "BERTH_LXC_PATH="+d.lxcPath, "BERTH_DEMO_USER=demo", "BERTH_DEMO_PASSWORD_FILE="+d.passwordFile())
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "placed in 1 page") {
			t.Fatalf("10-demo-login: %v\n%s", err, out)
		}
	}
	if again := hint(); again != first {
		t.Fatalf("the hook changed the page it had already placed the hint in:\n%s", again)
	}

	stop := testutil.HTTPLoadWith(t, client, site+"/", 20*time.Millisecond)
	var sw []time.Duration
	for i := range 20 {
		times, err := d.Switch(ctx)
		if err != nil {
			t.Fatalf("switch %d: %v", i+1, err)
		}
		sw = append(sw, times.Switch)
		now := oneServing(t, d)
		if code, body, _ := testutil.HTTPGetWith(client, site+"/"); code != 200 || body != "berth demo "+now+"\n" {
			t.Fatalf("after switch %d: %d %q", i+1, code, body)
		}
	}
	served, failed := stop()
	if failed != 0 {
		t.Fatalf("%d of %d requests failed during 20 switches", failed, served+failed)
	}
	t.Logf("20 switches over HTTPS upstreams (SNI demo.test), %d requests, 0 failed; switch median %s (max %s)",
		served, median(sw), slices.Max(sw))

	// The nightly upgrade skips the unreachable third-party source the payload added, says so, and succeeds;
	// the shipped hook places the hint again in the candidate.
	before, _ := d.generations()
	if err := d.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := d.generations()
	alerts, _ := os.ReadFile(filepath.Join(d.dir, "alerts.log"))
	if len(after) != len(before)+1 || !strings.Contains(string(alerts), "skipped in this upgrade: unreachable-third-party.list") {
		t.Fatalf("upgrade: generations %v → %v, alerts:\n%s", before, after, alerts)
	}
	hookLogs, _ := filepath.Glob(filepath.Join(d.dir, "logs", "upgrade-*", "hooks", "*", "10-demo-login.log"))
	more, _ := filepath.Glob(filepath.Join(d.dir, "logs", "upgrade-*", "hooks", "10-demo-login.log"))
	hookLogs = append(hookLogs, more...)
	if len(hookLogs) == 0 {
		t.Fatal("no log of 10-demo-login from the upgrade")
	}
	if b, _ := os.ReadFile(hookLogs[len(hookLogs)-1]); !strings.Contains(string(b), "placed in 1 page") {
		t.Fatalf("the hint hook in the upgrade: %s\n%s", hookLogs[len(hookLogs)-1], b)
	}
	t.Logf("upgrade: generations %v → %v; alert: %s", before, after, strings.TrimSpace(string(alerts)))

	// Root in the serving container swaps the hint's temporary files for symlinks to /etc/cron.d while the
	// shipped hook runs, again and again: the hook works inside the container, so the host's /etc/cron.d
	// stays as it was whatever the hook's result.
	active = oneServing(t, d)
	cron, _ := fsx.TreeSum("/etc/cron.d")
	attach(t, d, active, "sh", "-c", `nohup sh -c 'end=$(($(date +%s)+20)); while [ $(date +%s) -lt $end ]; do `+
		`for f in /usr/share/yunohost/portal/.berth-hint.*; do [ -f "$f" ] && ln -sfn /etc/cron.d/berth-race "$f"; done; done' >/dev/null 2>&1 &`)
	for range 20 {
		cmd := exec.Command(hook, active)
		cmd.Env = append(os.Environ(), "BERTH_LXC_PATH="+d.lxcPath, "BERTH_DEMO_USER=demo", "BERTH_DEMO_PASSWORD_FILE="+d.passwordFile())
		cmd.Run()
	}
	if after, _ := fsx.TreeSum("/etc/cron.d"); after != cron || exists("/etc/cron.d/berth-race") {
		t.Fatalf("the symlink race wrote into the host's /etc/cron.d: %s → %s", cron, after)
	}
	t.Logf("symlink race against 10-demo-login, 20 runs: the host's /etc/cron.d unchanged (%s)", cron[:12])
}

// isolated checks the demo's firewall from inside the serving container: the other container answers
// neither TCP nor ICMP; of the host's ports only [Demo] HostPorts answer; a place outside answers on 443 but
// not on 25; RFC 1918 and link-local addresses (the metadata service's) do not answer although the host
// routes to them (the refusal is the firewall's).
func isolated(t *testing.T, d *Demo, active string, hostPort int) {
	ctx := context.Background()
	other := d.other(active)
	st, _ := d.load()
	if err := d.start(ctx, st, other); err != nil {
		t.Fatal(err)
	}
	defer d.stop(other)
	if err := d.waitHealthy(ctx, other); err != nil {
		t.Fatal(err)
	}
	gw := d.net.Gateway().String()
	closed, err := net.Listen("tcp", "0.0.0.0:0") // a host service on every address, not in HostPorts
	if err != nil {
		t.Fatal(err)
	}
	defer closed.Close()
	outside(t, "198.51.100.1/24", []string{"198.51.100.2/24"}, 25, 443)
	outside(t, "172.31.77.1/24", []string{"172.31.77.2/24", "169.254.169.254/32"}, 443)
	for _, addr := range []string{"172.31.77.2:443", "169.254.169.254:443", "198.51.100.2:25"} {
		if c, err := net.DialTimeout("tcp", addr, 3*time.Second); err != nil {
			t.Fatalf("the host itself does not reach %s (the test's namespaces): %v", addr, err)
		} else {
			c.Close()
		}
	}
	for addr, want := range map[string]bool{
		d.addr(other) + ":443": false, d.addr(other) + ":80": false,
		net.JoinHostPort(gw, strconv.Itoa(hostPort)): true, net.JoinHostPort(gw, port(closed.Addr().String())): false,
		"198.51.100.2:443": true, "198.51.100.2:25": false, "172.31.77.2:443": false, "169.254.169.254:443": false,
	} {
		if got := reach(t, d, active, addr); got != want {
			t.Errorf("from %s, %s answers: %v, want %v", active, addr, got, want)
		}
	}
	if pings(d, active, d.addr(other)) || !pings(d, other, gw) {
		t.Errorf("ICMP: %s pings %s: %v (want false); %s pings the gateway: %v (want true)", active, other, pings(d, active, d.addr(other)), other, pings(d, other, gw))
	}
	t.Logf("from %s: %s (other container) closed to TCP and ICMP; gateway only on %d; 198.51.100.2:443 open, :25 closed; 172.31.77.2 and 169.254.169.254 closed (the host reaches both)",
		active, other, hostPort)
}

// containerUIDs lists, sorted, the host uids of the processes in the container's pid namespace.
func containerUIDs(t *testing.T, d *Demo, name string) []int {
	pid, err := d.ct(name).InitPid()
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	var uids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if other, _ := os.Readlink(p + "/ns/pid"); other != ns || ns == "" {
			continue
		}
		status, _ := os.ReadFile(p + "/status")
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				uid, _ := strconv.Atoi(f[1])
				uids = append(uids, uid)
			}
		}
	}
	slices.Sort(uids)
	return uids
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

package fleet

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth/images"
	"berth/internal/fsx"
	"berth/internal/image"
	"berth/internal/run"
	"berth/internal/testhost"
	"berth/internal/testutil"
	"berth/internal/testutil/testbase"
)

// TestMachinesOnSystemd installs mysql and haproxy for real (Debian packages, local source fixtures) with the
// compiled berth binary inside a booted systemd test host, and runs their whole lifecycle there.
func TestMachinesOnSystemd(t *testing.T) {
	testutil.Require(t, "debootstrap", "systemd-nspawn", "mariadb")
	c := testbase.Config(t, nil)
	testbase.Build(t, c)
	machines := c.Paths.Machines
	bin := testutil.BerthBinary(t)
	fixtures, _ := filepath.Abs("testdata")
	h := testhost.New(t, testhost.Options{Name: "berth-machines", HostNetwork: true, Packages: []string{"pebble"},
		Binds: []string{machines + ":/var/lib/machines"}, ReadOnlyBinds: []string{fixtures + ":/fixtures"}})
	if err := h.CopyIn(bin, "/usr/local/sbin/berth"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	berth := func(args ...string) string {
		t.Helper()
		start := time.Now()
		argv := append([]string{"env", "BERTH_SOURCE_COOKIECUTTER=/fixtures/cookiecutter", "BERTH_SOURCE_NPUB2HEX=/fixtures/npub2hex",
			"BERTH_SOURCE_STRFRY=/fixtures/strfry", "BERTH_SOURCE_SPAMBLASTER=/fixtures/spamblaster",
			"BERTH_SOURCE_INTERCEPTOR=/fixtures/interceptor", "BERTH_SOURCE_RELAYCREATOR=/fixtures/relaycreator", "SELF_SIGNED=relay.test",
			"/usr/local/sbin/berth"}, args...)
		out, err := h.Run(ctx, argv...)
		if err != nil {
			t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("berth %s: %s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
		return out
	}
	hostFile := func(p string) string { return filepath.Join(h.Dir, p) }
	waitFile := func(p string) string {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
			if b, err := os.ReadFile(hostFile(p)); err == nil {
				return string(b)
			}
			if time.Now().After(deadline) {
				out, _ := h.Run(ctx, "journalctl", "--no-pager", "-n", "40", "-M", "mysql")
				t.Fatalf("%s never appeared; machine journal:\n%s", p, out)
			}
		}
	}
	sql := func(url, q string) string {
		t.Helper()
		// DATABASE_URL="mysql://creator:<pw>@127.0.0.1:3306/creator"
		pw := strings.SplitN(strings.SplitN(url, "creator:", 2)[1], "@", 2)[0]
		var out string
		var err error
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			var b []byte
			b, err = run.Cmd{Timeout: 30 * time.Second, Argv: []string{"mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-P", "3306", "-u", "creator", "-p" + pw,
				"-N", "-e", q, "creator"}}.Run(ctx)
			out = string(b)
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s as creator: %v %s", q, err, out)
		}
		return strings.TrimSpace(out)
	}
	query := func(url string) string { t.Helper(); return sql(url, "SELECT 1") }

	// mysql: install, start, first run, SELECT 1 as creator with the generated DATABASE_URL.
	berth("mysql:install")
	berth("mysql:start")
	url := waitFile("srv/mysql/.creator-mysql-uri.txt")
	if st, _ := os.Stat(hostFile("srv/mysql/.creator-mysql-uri.txt")); st.Mode().Perm() != 0o600 {
		t.Fatalf("DATABASE_URL file mode %v", st.Mode())
	}
	if got := query(url); got != "1" {
		t.Fatalf("SELECT 1 answered %q", got)
	}
	t.Logf("mysql answers SELECT 1 as creator")
	assertUserNS(t, h, "mysql", "mariadbd")

	// Enable, stop, start.
	berth("mysql:enable")
	if out, _ := h.Run(ctx, "systemctl", "is-enabled", "systemd-nspawn@mysql"); strings.TrimSpace(out) != "enabled" {
		t.Fatalf("is-enabled: %q", out)
	}
	berth("mysql:stop")
	if out, _ := h.Run(ctx, "systemctl", "is-active", "systemd-nspawn@mysql"); strings.TrimSpace(out) != "inactive" {
		t.Fatalf("after stop: %q", out)
	}
	berth("mysql:start")
	query(url)

	// Clean keeps the data; a new install over it does not run the first run again.
	marker, _ := os.Stat(hostFile("srv/mysql/.berth-firstrun-done"))
	berth("mysql:clean")
	if _, err := os.Stat(filepath.Join(machines, "mysql")); !os.IsNotExist(err) {
		t.Fatalf("clean left the rootfs: %v", err)
	}
	if _, err := os.Stat(hostFile("srv/mysql/mysql")); err != nil {
		t.Fatalf("clean removed the data: %v", err)
	}
	berth("mysql:install") // after clean: a new root password
	fresh, err := fsx.TreeSum(filepath.Join(machines, "mysql"))
	if err != nil {
		t.Fatal(err)
	}
	berth("mysql:install")
	if again, _ := fsx.TreeSum(filepath.Join(machines, "mysql")); again != fresh {
		t.Fatalf("the same image installed twice differs: %s then %s", fresh, again)
	}
	t.Logf("mysql installed twice in a row: identical trees %s", fresh)
	berth("mysql:start")
	time.Sleep(3 * time.Second)
	if again := waitFile("srv/mysql/.creator-mysql-uri.txt"); again != url {
		t.Fatal("the first run ran again: DATABASE_URL changed")
	}
	if m2, _ := os.Stat(hostFile("srv/mysql/.berth-firstrun-done")); !m2.ModTime().Equal(marker.ModTime()) {
		t.Fatal("the first-run marker was touched again")
	}
	query(url)
	t.Logf("mysql reinstalled over kept data: old DATABASE_URL still works")
	// A broken provision script fails the install with its line and output; the machine stays as it was.
	if _, err := (run.Cmd{Argv: []string{"cp", "-r", testutil.RepoRoot(t) + "/images", hostFile("root/images")}}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(hostFile("root/images/mysql/provision.sh"), []byte("echo preparing\nfalse\necho never\n"), 0o644)
	before, _ := fsx.TreeSum(filepath.Join(machines, "mysql"))
	out, err := h.Run(ctx, "env", "BERTH_IMAGES=/root/images", "/usr/local/sbin/berth", "mysql:install")
	if err == nil || !strings.Contains(out, "provision.sh:2: 'false' failed with exit status 1") || !strings.Contains(out, "preparing") {
		t.Fatalf("broken provision: want its line and output, got %v\n%s", err, out)
	}
	if after, _ := fsx.TreeSum(filepath.Join(machines, "mysql")); after != before {
		t.Fatal("a failed install changed the machine")
	}
	berth("mysql:stop")
	berth("mysql:start")
	query(url)
	t.Logf("broken provision refused (%s); the previous machine still starts and answers", strings.TrimSpace(out[strings.LastIndex(out, "Error:"):]))
	// Installing over a running machine: it keeps running until the swap, then restarts on the new tree.
	berth("mysql:install")
	if out, _ := h.Run(ctx, "systemctl", "is-active", "systemd-nspawn@mysql"); strings.TrimSpace(out) != "active" {
		t.Fatalf("after an install over the running machine: %q", out)
	}
	query(url)

	// haproxy: install with local source fixtures, start, TLS answer with a complete error response.
	berth("haproxy:install")
	berth("haproxy:start")
	if out, err := h.Run(ctx, "/usr/local/sbin/berth", "machine:status", "haproxy"); err == nil {
		t.Logf("status:\n%s", out)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	var resp *http.Response
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if resp, err = client.Get("https://127.0.0.1:443/"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("HAProxy does not answer on 443: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "503 Service Unavailable") {
		t.Fatalf("HAProxy answered %s: %s", resp.Status, body)
	}
	t.Logf("HAProxy on 443 answered %s %s (no relaycreator behind it yet)", resp.Proto, resp.Status)
	// haproxy has no user namespace (binding 443 in the host's network takes the host's
	// CAP_NET_BIND_SERVICE): its master is root, its worker, which talks to clients, is not.
	{
		uidMap, procs := machineProcs(t, h, "haproxy")
		var owners []string
		worker := false
		for _, p := range procs {
			owners = append(owners, p.comm+"="+strconv.Itoa(p.hostUID))
			worker = worker || (p.comm == "haproxy" && p.hostUID != 0)
		}
		if !worker {
			t.Fatalf("haproxy: no HAProxy worker that is not root among %v", owners)
		}
		t.Logf("userns figure: haproxy: uid_map %q (none); processes (name=uid): %s", uidMap, strings.Join(owners, " "))
	}
	if out, err := h.Run(ctx, "systemd-run", "-M", "haproxy", "--wait", "--pipe", "-q", "/usr/local/bin/cookiecutter", "x"); err != nil ||
		!strings.Contains(out, "cookiecutter fixture") {
		t.Fatalf("cookiecutter from the local source: %v %q", err, out)
	}
	berth("haproxy:stop")
	berth("mysql:stop")

	// strfry: the real recipe (make setup-golpe, make, go build of the three tools) over local fixtures.
	berth("strfry:install")
	berth("strfry:start")
	for _, tool := range [][]string{{"/app/strfry"}, {"/usr/local/bin/cookiecutter"}, {"/usr/local/bin/spamblaster"}, {"/usr/local/bin/interceptor"}} {
		out, err := h.Run(ctx, append([]string{"systemd-run", "-M", "strfry", "--wait", "--pipe", "-q"}, tool...)...)
		if err != nil || !strings.Contains(out, "fixture") {
			t.Fatalf("%s in the strfry machine: %v %q", tool[0], err, out)
		}
	}
	for _, u := range []string{"strfrycheck.timer", "interceptor.service"} {
		if out, _ := h.Run(ctx, "systemctl", "-M", "strfry", "is-enabled", u); strings.TrimSpace(out) != "enabled" {
			t.Fatalf("%s in strfry: %q", u, out)
		}
	}
	assertUserNS(t, h, "strfry")
	berth("strfry:stop")

	// relaycreator: pnpm install and build of a local fixture app, served on 3000; deploy builds a new release
	// beside the running one and switches only when the build succeeded.
	berth("relaycreator:install")
	berth("relaycreator:start")
	get := func(want string) {
		t.Helper()
		var body string
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
			if resp, err := http.Get("http://127.0.0.1:3000/"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if body = string(b); strings.Contains(body, want) || time.Now().After(deadline) {
					break
				}
			} else if time.Now().After(deadline) {
				t.Fatalf("relaycreator on 3000: %v", err)
			}
		}
		if !strings.Contains(body, want) {
			t.Fatalf("relaycreator served %q, want %q", body, want)
		}
	}
	get("relaycreator fixture v1")
	assertUserNS(t, h, "relaycreator", "node")
	if out, _ := h.Run(ctx, "journalctl", "-M", "relaycreator", "-u", "app.service", "--no-pager", "-o", "cat"); !strings.Contains(out, "migrations wait for it") {
		t.Fatalf("the first start before configure should say its migrations wait for the .env:\n%s", out)
	}
	berth("relaycreator:stop")
	if out, err := h.Run(ctx, "/usr/local/sbin/berth", "status"); err != nil || !strings.Contains(out, "MACHINE") {
		t.Fatalf("status: %v\n%s", err, out)
	} else {
		t.Logf("berth status:\n%s", out)
	}
	relayConfiguration(t, h, berth, hostFile, func(q string) string { return sql(url, q) }, get)

	// relaycreator's app, as its own user, has its settings from its .env in its environment (systemd read the
	// file), and cannot read the file itself.
	for _, p := range assertUserNS(t, h, "relaycreator", "node") {
		if p.comm == "node" {
			if env := h.Must(t, "cat", "/proc/"+strconv.Itoa(p.pid)+"/environ"); !strings.Contains(env, "DATABASE_URL=mysql://") {
				t.Fatal("relaycreator's app runs without DATABASE_URL from its .env")
			}
		}
	}
	if out, err := h.Run(ctx, "systemd-run", "-M", "relaycreator", "--uid=relaycreator", "--wait", "--pipe", "-q", "cat", "/srv/relaycreator/.env"); err == nil ||
		!strings.Contains(out, "Permission denied") {
		t.Fatalf("the app's user could read its .env: %v %q", err, out)
	}
	t.Logf("relaycreator's app has DATABASE_URL in its environment; its user cannot read /srv/relaycreator/.env")

	// Stops: each machine's stop, timed (the figures the stop fix is judged by); one that waited for the unit's
	// 90 s stop timeout would be the bug back.
	for _, m := range []string{"mysql", "haproxy", "strfry", "relaycreator"} {
		start := time.Now()
		berth(m + ":stop")
		took := time.Since(start)
		t.Logf("stop figure: %s:stop took %s", m, took.Round(100*time.Millisecond))
		if took > 30*time.Second {
			t.Fatalf("%s:stop took %s: its stop waited for a timeout", m, took)
		}
	}

	// A machine made from a folder as a new user would (no [Exec] PrivateUsers=, its data bound over the
	// package's /var/lib/redis): its data directory takes the package's owner, redis can save, and its stop is
	// prompt (it took the unit's full 90 s when redis could not save its data).
	folder := hostFile("root/folder-images/redis")
	os.MkdirAll(folder, 0o755)
	os.WriteFile(filepath.Join(folder, "image.conf"), []byte("[Image]\nPackages=redis-server\nEnable=redis-server.service\n"+
		"[Data]\nBind=redis:/var/lib/redis\n[Exec]\nBoot=yes\n"), 0o644)
	folderBerth := func(args ...string) {
		t.Helper()
		if out, err := h.Run(ctx, append([]string{"env", "BERTH_IMAGES=/root/folder-images", "/usr/local/sbin/berth"}, args...)...); err != nil {
			t.Fatalf("berth %v (the folder-made redis): %v\n%s", args, err, out)
		}
	}
	folderBerth("machine:install", "redis")
	folderBerth("machine:start", "redis")
	if out := h.Must(t, "systemd-run", "-M", "redis", "--wait", "--pipe", "-q", "redis-cli", "SAVE"); strings.TrimSpace(out) != "OK" {
		t.Fatalf("redis cannot save into its data directory: %q", out)
	}
	start := time.Now()
	folderBerth("machine:stop", "redis")
	t.Logf("stop figure: the folder-made redis (user namespace, idmapped data) stopped in %s", time.Since(start).Round(100*time.Millisecond))
	// A machine whose user namespace gets the demo containers' host ids (a range of its own chosen here to meet
	// them, as nspawn's pick of 983040 or 1048576 would) is refused in one line and stopped.
	nspawnFile := hostFile("etc/systemd/nspawn/redis.nspawn")
	settings, _ := os.ReadFile(nspawnFile)
	if !strings.Contains(string(settings), "PrivateUsers=pick\n") {
		t.Fatalf("redis.nspawn without PrivateUsers=pick:\n%s", settings)
	}
	os.WriteFile(nspawnFile, []byte(strings.Replace(string(settings), "PrivateUsers=pick\n", "PrivateUsers=983040:65536\n", 1)), 0o644)
	out, err = h.Run(ctx, "env", "BERTH_IMAGES=/root/folder-images", "/usr/local/sbin/berth", "machine:start", "redis")
	if err == nil || !strings.Contains(out, "host uids 983040-1048575, which overlap the demo containers' 1000000-1065535; stopped it") {
		t.Fatalf("a machine in the demo containers' ids: want a refusal, got %v\n%s", err, out)
	}
	if st, _ := h.Run(ctx, "systemctl", "is-active", "systemd-nspawn@redis"); strings.TrimSpace(st) == "active" {
		t.Fatal("the refused machine still runs")
	}
	t.Logf("userns figure: a machine given host uids 983040-1048575 refused and stopped: %s", strings.TrimSpace(out[max(0, strings.LastIndex(out, "Error:")):]))

	// clean: no machine, no base, and [Paths] Srv untouched.
	srvBefore, err := fsx.TreeSum(hostFile("srv"))
	if err != nil {
		t.Fatal(err)
	}
	berth("clean")
	if entries, _ := os.ReadDir(machines); len(entries) != 0 {
		var left []string
		for _, e := range entries {
			left = append(left, e.Name())
		}
		t.Fatalf("clean left %v in the machines directory", left)
	}
	if after, _ := fsx.TreeSum(hostFile("srv")); after != srvBefore {
		t.Fatalf("clean changed /srv: %s -> %s", srvBefore, after)
	}
	t.Logf("clean: no machine and no base left; /srv tree sum %s before and after", srvBefore)
}

// TestPlanNamesRealSources: a dry run prints every step, with the pinned git sources, and changes nothing.
func TestPlanNamesRealSources(t *testing.T) {
	c := testbase.Config(t, nil)
	var out strings.Builder
	if err := image.Install(context.Background(), c, images.FS, "strfry", image.Options{DryRun: true, Out: &out}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"git clone https://github.com/hoytech/strfry.git, checkout 1.1.0", "relaytools/spamblaster.git",
		"relaytools/interceptor.git", "apt-get install git build-essential", "swap "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(c.Paths.Machines); !os.IsNotExist(err) {
		t.Fatalf("a dry run created %s", c.Paths.Machines)
	}
	t.Logf("plan:\n%s", out.String())
}

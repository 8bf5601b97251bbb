package haproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"berth/internal/testutil"
	"berth/internal/tlsx"
)

// proxyBackendServer is a loopback HTTP server answering body; /slow sleeps 2s first.
type proxyBackendServer struct {
	*httptest.Server
	slowStarted, slowDone chan struct{}
	hits                  atomic.Int64
}

func newProxyBackend(t *testing.T, body string) *proxyBackendServer {
	b := &proxyBackendServer{slowStarted: make(chan struct{}, 1), slowDone: make(chan struct{}, 1)}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if r.URL.Path == "/slow" {
			b.slowStarted <- struct{}{}
			time.Sleep(2 * time.Second)
			b.slowDone <- struct{}{}
		}
		io.WriteString(w, body)
	}))
	t.Cleanup(b.Close)
	return b
}

// The HTTP helpers, shared with internal/demo's tests.
var (
	proxyFreeAddr = testutil.FreeAddr
	proxyClient   = testutil.HTTPClient
	proxyGet      = testutil.HTTPGet
	expectBody    = testutil.ExpectBody
	proxyLoad     = testutil.HTTPLoad
)

// newTestProxy returns a proxy on free loopback ports in front of backends, stopped when the test ends.
func newTestProxy(t *testing.T, backends map[string]*proxyBackendServer, names ...string) *Proxy {
	testutil.Require(t, "haproxy")
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.pem")
	if pem, err := tlsx.SelfSigned("demo.test", 24*time.Hour); err != nil || os.WriteFile(bundle, pem, 0o600) != nil {
		t.Fatal(err)
	}
	p := &Proxy{Dir: filepath.Join(dir, "proxy"), HTTP: proxyFreeAddr(t), HTTPS: proxyFreeAddr(t), Bundle: bundle}
	for _, n := range names {
		p.Servers = append(p.Servers, Server{Name: n, Addr: backends[n].Listener.Addr().String()})
	}
	t.Cleanup(func() {
		proxyClient.CloseIdleConnections()
		start := time.Now()
		defer func() { t.Logf("Stop took %s", time.Since(start).Round(time.Millisecond)) }()
		if err := p.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return p
}

func TestProxySwitch(t *testing.T) {
	ctx := context.Background()
	be := map[string]*proxyBackendServer{"a": newProxyBackend(t, "A"), "b": newProxyBackend(t, "B")}
	p := newTestProxy(t, be, "a", "b")
	if err := p.Ensure(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if !p.Running() {
		t.Fatal("not running after Ensure")
	}
	httpURL, httpsURL := "http://"+p.HTTP+"/", "https://"+p.HTTPS+"/"
	expectBody(t, httpURL, "A")
	expectBody(t, httpsURL, "A")
	if got, err := p.Active(ctx); err != nil || got != "a" {
		t.Fatalf("Active = %q, %v; want a", got, err)
	}

	stop := proxyLoad(t, httpURL, 0)
	names, bodies := []string{"b", "a"}, map[string]string{"a": "A", "b": "B"}
	for i := range 10 {
		name := names[i%2]
		if err := p.SetActive(ctx, name); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			expectBody(t, httpURL, bodies[name])
		}
		if got, err := p.Active(ctx); err != nil || got != name {
			t.Fatalf("Active = %q, %v; want %s", got, err, name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	served, failed := stop()
	t.Logf("10 switches under load: %d requests served, %d failed", served, failed)
	if failed != 0 || served == 0 {
		t.Fatalf("%d failed requests, %d served", failed, served)
	}
	if cfg, _ := os.ReadFile(filepath.Join(p.Dir, "haproxy.cfg")); !strings.Contains(string(cfg), "server b "+p.Servers[1].Addr+" disabled") {
		t.Fatalf("haproxy.cfg does not keep a active:\n%s", cfg)
	}

	// A slow request in flight on A finishes after the switch to B, and WaitIdle waits for it.
	slow := make(chan error, 1)
	go func() {
		code, body, err := proxyGet(httpURL + "slow")
		if err == nil && (code != 200 || body != "A") {
			err = fmt.Errorf("answered %d %q", code, body)
		}
		slow <- err
	}()
	<-be["a"].slowStarted
	if err := p.SetActive(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	expectBody(t, httpURL, "B")
	start := time.Now()
	if err := p.WaitIdle(ctx, "a", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-be["a"].slowDone:
	default:
		t.Fatal("WaitIdle returned while the slow request was still in flight")
	}
	if err := <-slow; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	t.Logf("WaitIdle(a) returned after %s", time.Since(start).Round(time.Millisecond))
}

func TestProxyReload(t *testing.T) {
	ctx := context.Background()
	be := map[string]*proxyBackendServer{"a": newProxyBackend(t, "A"), "b": newProxyBackend(t, "B"), "c": newProxyBackend(t, "C")}
	p := newTestProxy(t, be, "a", "b")
	if err := p.Ensure(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	master, _ := p.masterPid()
	worker := p.workerPid(ctx)
	httpURL := "http://" + p.HTTP + "/"
	stop := proxyLoad(t, httpURL, 0)
	time.Sleep(200 * time.Millisecond)
	p.Servers = append(p.Servers, Server{Name: "c", Addr: be["c"].Listener.Addr().String()})
	if err := p.Ensure(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := p.Ensure(ctx, "c"); err != nil { // a new active server changes the file too: reload, then the runtime switch
		t.Fatal(err)
	}
	expectBody(t, httpURL, "C")
	time.Sleep(200 * time.Millisecond)
	served, failed := stop()
	t.Logf("reload under load: %d requests served, %d failed", served, failed)
	if failed != 0 || served == 0 {
		t.Fatalf("%d failed requests, %d served", failed, served)
	}
	if m, _ := p.masterPid(); m != master {
		t.Fatalf("master pid %d became %d: restarted, not reloaded", master, m)
	}
	if w := p.workerPid(ctx); w == worker || w == 0 {
		t.Fatalf("worker pid %d -> %d: no reload", worker, w)
	}
	if got, err := p.Active(ctx); err != nil || got != "c" {
		t.Fatalf("Active = %q, %v; want c", got, err)
	}
}

func TestProxyBadBundle(t *testing.T) {
	ctx := context.Background()
	be := map[string]*proxyBackendServer{"a": newProxyBackend(t, "A"), "b": newProxyBackend(t, "B")}
	p := newTestProxy(t, be, "a", "b")
	if err := p.Ensure(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(p.Dir, "haproxy.cfg"))
	bad := *p
	bad.Bundle = filepath.Join(t.TempDir(), "missing.pem")
	err := bad.Ensure(ctx, "b")
	if err == nil {
		t.Fatal("Ensure with a missing bundle succeeded")
	}
	t.Logf("error: %v", err)
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "missing.pem") {
		t.Fatalf("want a one-line error naming the bundle, got %q", msg)
	}
	if after, _ := os.ReadFile(filepath.Join(p.Dir, "haproxy.cfg")); string(after) != string(before) {
		t.Fatal("a rejected configuration replaced haproxy.cfg")
	}
	expectBody(t, "http://"+p.HTTP+"/", "A")
	expectBody(t, "https://"+p.HTTPS+"/", "A")
	proxyClient.CloseIdleConnections() // an idle HTTP/2 connection would hold the soft stop until the kill
	if p.Stop(ctx) != nil || p.Running() {
		t.Fatal("Stop failed")
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop when not running: %v", err)
	}
}

// TestRenderTLSUpstream: a payload that serves HTTPS only is reached over TLS with the demo's domain as SNI,
// and visitors on HTTP are sent to https (ACME answers excepted); a plain payload gets neither.
func TestRenderTLSUpstream(t *testing.T) {
	p := &Proxy{Name: "bdx", Dir: "/run/x", HTTP: ":80", HTTPS: ":443", Bundle: "/b.pem", TLSTo: "demo.test", Domain: "demo.test",
		Private: []string{"/yunohost/admin", "/yunohost/api"},
		Servers: []Server{{"demo1", "10.1.5.3:443"}, {"demo2", "10.1.5.4:443"}}}
	cfg := string(p.Render("demo2"))
	for _, want := range []string{
		"\tserver demo1 10.1.5.3:443 ssl verify none sni str(demo.test) disabled\n",
		"\tserver demo2 10.1.5.4:443 ssl verify none sni str(demo.test)\n",
		"\thttp-request redirect scheme https code 301 unless { path_beg /.well-known/acme-challenge/ }\n",
		"\tnoreuseport\n",
		"\tacl demo_host req.hdr(host),field(1,:) -i demo.test\n",
		"\thttp-request return status 403 content-type text/plain string \"not part of the demo\" if { path_beg /yunohost/admin /yunohost/api }\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, cfg)
		}
	}
	if p.Unit() != "berth-demo-proxy-bdx" {
		t.Errorf("unit %s", p.Unit())
	}
	p.TLSTo = ""
	if cfg := string(p.Render("demo1")); strings.Contains(cfg, "ssl verify") || strings.Contains(cfg, "redirect") {
		t.Errorf("a plain payload got TLS or a redirect:\n%s", cfg)
	}
}

// TestProxyOnePortOneOwner: a port another process holds is refused before HAProxy starts, in one line
// naming the holder; with Domain set, another Host gets 421 from the front and never reaches a server.
func TestProxyOnePortOneOwner(t *testing.T) {
	ctx := context.Background()
	be := map[string]*proxyBackendServer{"a": newProxyBackend(t, "A"), "b": newProxyBackend(t, "B")}
	p := newTestProxy(t, be, "a", "b")
	held, err := net.Listen("tcp", p.HTTPS)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Ensure(ctx, "a")
	held.Close()
	want := fmt.Sprintf("demo proxy: %s is already held by pid %d (", p.HTTPS, os.Getpid())
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") || p.Running() {
		t.Fatalf("a held port: want one line starting %q, got %v (running: %v)", want, err, p.Running())
	}
	t.Logf("held port refused: %v", err)

	p.Domain = "demo.test"
	if err := p.Ensure(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	client := testutil.HostClient(p.HTTP)
	for host, want := range map[string]string{"demo.test": "A", "other.test": "this front serves only demo.test", "demo.test.evil": "this front serves only demo.test"} {
		code, body, err := testutil.HTTPGetWith(client, "http://"+host+"/")
		if err != nil || body != want || (want == "A") != (code == 200) {
			t.Errorf("Host %s: %d %q %v", host, code, body, err)
		}
	}
	if n := be["a"].hits.Load(); n != 1 {
		t.Errorf("the server saw %d requests, want only demo.test's", n)
	}
	// A second front on the same HTTPS port (another configuration, or the relay's edge, which binds 443
	// with noreuseport too) is refused in one line naming the HAProxy that holds it.
	p2 := newTestProxy(t, be, "a", "b")
	p2.HTTPS = p.HTTPS
	err = p2.Ensure(ctx, "a")
	if err == nil || !strings.Contains(err.Error(), p.HTTPS+" is already held by pid ") || !strings.Contains(err.Error(), "(haproxy)") || p2.Running() {
		t.Fatalf("a second front on %s: %v", p.HTTPS, err)
	}
	t.Logf("second front refused: %v", err)
	// The worker that answers is not root (here, with no systemd, the root master drops its workers to
	// haproxy in a chroot; under systemd the whole unit runs as haproxy: internal/demo's units test).
	worker := p.workerPid(ctx)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", worker))
	u, _ := user.Lookup(proxyUser)
	if worker == 0 || u == nil || !strings.Contains(string(status), "\nUid:\t"+u.Uid+"\t") {
		t.Errorf("worker %d runs as: %s", worker, grepUID(string(status)))
	}
}

func grepUID(status string) string {
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "Uid:") {
			return l
		}
	}
	return "?"
}

// TestProxyUnavailable: with the active server down, the front answers 503 with the demo's page and the
// next tick's time, computed when it answers; with it up again, the server answers.
func TestProxyUnavailable(t *testing.T) {
	ctx := context.Background()
	be := map[string]*proxyBackendServer{"a": newProxyBackend(t, "A"), "b": newProxyBackend(t, "B")}
	p := newTestProxy(t, be, "a", "b")
	_, off := time.Now().Zone()
	p.Unavailable = "The demo is being reset or is unavailable, back in a moment.\nNext switch: " + NextTick(30*time.Minute, time.Duration(off)*time.Second) + "."
	if err := p.Ensure(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	expectBody(t, "http://"+p.HTTP+"/", "A")
	be["a"].Close() // nothing listens there any more
	start := time.Now()
	code, body, err := proxyGet("http://" + p.HTTP + "/")
	took := time.Since(start)
	now := time.Now()
	want := nextTickForTest(now, 30*time.Minute).Format("15:04 -0700")
	if err != nil || code != 503 || !strings.Contains(body, "back in a moment.\nNext switch: "+want+".") {
		t.Fatalf("with the server down: %d %q %v; want 503 with next switch %s", code, body, err, want)
	}
	t.Logf("server down: %d in %s: %q", code, took.Round(time.Millisecond), body)
	if err := p.SetActive(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	expectBody(t, "http://"+p.HTTP+"/", "B")
	expectBody(t, "https://"+p.HTTPS+"/", "B")
}

func nextTickForTest(now time.Time, every time.Duration) time.Time {
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	return midnight.Add((now.Sub(midnight)/every + 1) * every)
}

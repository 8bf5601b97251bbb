package probe

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

// TestOnce: 2xx is healthy; a redirect is not followed and is unhealthy; Host and SNI are the domain.
func TestOnce(t *testing.T) {
	var followed atomic.Bool
	var sni, host atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host)
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(204)
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
		case "/elsewhere":
			followed.Store(true)
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { sni.Store(h.ServerName); return nil, nil }}
	srv.StartTLS()
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().(*net.TCPAddr).String())
	p := HTTP{Scheme: "https", Port: int(ap.Port()), Path: "/ok", Domain: "demo.test"}
	if err := p.Once(context.Background(), ap.Addr()); err != nil {
		t.Fatal(err)
	}
	if sni.Load() != "demo.test" || host.Load() != "demo.test" {
		t.Errorf("SNI %v, Host %v", sni.Load(), host.Load())
	}
	p.Path = "/moved"
	if err := p.Once(context.Background(), ap.Addr()); err == nil || !strings.Contains(err.Error(), "301") || followed.Load() {
		t.Errorf("redirect: %v (followed: %v)", err, followed.Load())
	}
	p.Path = "/missing"
	if err := p.Once(context.Background(), ap.Addr()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
}

// TestLogin: with a demo login configured, a payload whose demo password was changed is unhealthy, by form
// and by basic authentication; the password never appears in the error.
func TestLogin(t *testing.T) {
	current := "s3cret&x"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			w.WriteHeader(200)
		case "/form":
			r.ParseForm()
			if r.Method != http.MethodPost || r.PostForm.Get("credentials") != "demo:"+current {
				w.WriteHeader(401)
			}
		case "/basic":
			if u, p, ok := r.BasicAuth(); !ok || u != "demo" || p != current {
				w.WriteHeader(401)
			}
		}
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().(*net.TCPAddr).String())
	password := func() (string, error) { return "s3cret&x", nil }
	for _, l := range []*Login{{Path: "/form", Form: "credentials={user}:{password}"}, {Path: "/basic"}} {
		l.User, l.Password = "demo", password
		p := HTTP{Scheme: "http", Port: int(ap.Port()), Path: "/health", Domain: "demo.test", Login: l}
		current = "s3cret&x"
		if err := p.Once(context.Background(), ap.Addr()); err != nil {
			t.Fatalf("%s: %v", l.Path, err)
		}
		current = "changed by a visitor"
		err := p.Once(context.Background(), ap.Addr())
		if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("%s with the password changed: %v", l.Path, err)
		}
		t.Logf("%s, password changed: %v", l.Path, err)
	}
}

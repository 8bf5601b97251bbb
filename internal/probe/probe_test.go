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

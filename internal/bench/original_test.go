package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"berth/internal/haproxy"
	"berth/internal/testutil"
)

// TestPassiveProxy: the original's proxy spreads requests over both servers and keeps answering when one
// is gone.
func TestPassiveProxy(t *testing.T) {
	testutil.Require(t, "haproxy")
	var servers []haproxy.Server
	var backends []*httptest.Server
	for _, body := range []string{"A", "B"} {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
		t.Cleanup(s.Close)
		backends = append(backends, s)
		servers = append(servers, haproxy.Server{Name: body, Addr: s.Listener.Addr().String()})
	}
	addr := testutil.FreeAddr(t)
	stop, err := PassiveProxy(context.Background(), filepath.Join(t.TempDir(), "passive"), addr, servers)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 2 && time.Now().Before(deadline) {
		code, body, err := testutil.HTTPGet("http://" + addr + "/")
		if err == nil && code == 200 {
			seen[body] = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !seen["A"] || !seen["B"] {
		t.Fatalf("round robin reached %v, want A and B", seen)
	}
	backends[0].Close()
	testutil.HTTPClient.CloseIdleConnections()
	for range 4 {
		testutil.ExpectBody(t, "http://"+addr+"/", "B")
	}
}

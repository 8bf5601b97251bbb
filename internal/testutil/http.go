package testutil

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The HTTP helpers of the proxy and demo tests (moved from internal/demo's proxy_test.go).

// FreeAddr is a loopback address with a port free right now.
func FreeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// HTTPClient is the client of HTTPGet: it keeps connections and trusts any certificate.
var HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
	MaxIdleConnsPerHost: 16, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true,
}}

// HTTPGet returns the status code and body of GET url.
func HTTPGet(url string) (int, string, error) { return HTTPGetWith(HTTPClient, url) }

// HostClient is a client for a named site behind a proxy on loopback: every connection goes to addr,
// whatever the URL's host, so that Host and SNI are the URL's; it trusts any certificate and follows no
// redirect.
func HostClient(addr string) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 16, TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// HTTPGetWith returns the status code and body of GET url through client.
func HTTPGetWith(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// ExpectBody fails the test unless GET url answers 200 with want.
func ExpectBody(t testing.TB, url, want string) {
	t.Helper()
	code, body, err := HTTPGet(url)
	if err != nil || code != 200 || body != want {
		t.Fatalf("GET %s: %d %q %v, want 200 %q", url, code, body, err, want)
	}
}

// HTTPLoad sends requests from several goroutines (each pausing between requests) until stop is called,
// which returns served and failed.
func HTTPLoad(t testing.TB, url string, pause time.Duration) (stop func() (served, failed int64)) {
	return HTTPLoadWith(t, HTTPClient, url, pause)
}

// HTTPLoadWith is HTTPLoad through client.
func HTTPLoadWith(t testing.TB, client *http.Client, url string, pause time.Duration) (stop func() (served, failed int64)) {
	var served, failed atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				code, _, err := HTTPGetWith(client, url)
				if err != nil || code != 200 {
					if failed.Add(1) <= 5 {
						t.Logf("failed request: %d %v", code, err)
					}
				} else {
					served.Add(1)
				}
				time.Sleep(pause)
			}
		}()
	}
	var once sync.Once
	stop = func() (int64, int64) {
		once.Do(func() { close(done); wg.Wait() })
		return served.Load(), failed.Load()
	}
	t.Cleanup(func() { stop() }) // when the test fails before it stops the load itself
	return stop
}

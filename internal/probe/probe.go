// Package probe asks a demo container's payload whether it is healthy, the way the front talks to it: the
// payload's own scheme and port on the container's address, with Host and SNI set to the site's domain.
package probe

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// HTTP is one payload's health check.
type HTTP struct {
	Scheme string // http or https
	Port   int
	Path   string // e.g. /yunohost/portalapi/public
	Domain string // Host header and SNI
	Login  *Login // when set, a healthy payload also lets the demo user log in
}

// Login is the payload's own demo login, checked after the health path: a POST of Form (URL-encoded, with
// {user} and {password} replaced by their encoded values) to Path, or without Form a GET of Path with HTTP
// basic authentication. Only a 2xx answer is a working login.
type Login struct {
	Path, Form string
	User       string
	Password   func() (string, error) // read at each check: the demo password's file
}

// URL is what the check asks of the container at addr.
func (p HTTP) URL(addr netip.Addr) string {
	return p.Scheme + "://" + netip.AddrPortFrom(addr, uint16(p.Port)).String() + p.Path
}

// Once asks the container at addr once (bounded by 5 s). Only a 2xx answer is healthy; a redirect is not
// followed (it would lead through the proxy, or anywhere the guest points).
func (p HTTP) Once(ctx context.Context, addr netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL(addr), nil)
	if err != nil {
		return err
	}
	req.Host = p.Domain
	resp, err := p.client().Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s answers %s%s", p.URL(addr), resp.Status, strings.TrimSuffix(" → "+resp.Header.Get("Location"), " → "))
	}
	if p.Login != nil {
		return p.login(ctx, addr)
	}
	return nil
}

// login checks the demo user's login (the password is never part of an error).
func (p HTTP) login(ctx context.Context, addr netip.Addr) error {
	l := p.Login
	pw, err := l.Password()
	if err != nil {
		return fmt.Errorf("demo login: %w", err)
	}
	u := p.Scheme + "://" + netip.AddrPortFrom(addr, uint16(p.Port)).String() + l.Path
	method := http.MethodGet
	var body io.Reader
	if l.Form != "" {
		method = http.MethodPost
		body = strings.NewReader(strings.NewReplacer("{user}", url.QueryEscape(l.User), "{password}", url.QueryEscape(pw)).Replace(l.Form))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Host = p.Domain
	if l.Form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Requested-With", "XMLHttpRequest") // what a portal's own page sends with its form
	} else {
		req.SetBasicAuth(l.User, pw)
	}
	resp, err := p.client().Do(req)
	if err != nil {
		return fmt.Errorf("demo login as %s: %w", l.User, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the demo login as %s (%s %s) answers %s: was the demo password changed?", l.User, method, u, resp.Status)
	}
	return nil
}

// client dials the container directly (no proxy from the environment), sends the domain as SNI without
// verifying the certificate (a payload's own is self-signed), and never follows a redirect.
func (p HTTP) client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{ServerName: p.Domain, InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

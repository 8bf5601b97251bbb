// Package haproxy runs the demo's front: one HAProxy process in master-worker mode with a configuration
// berth renders, reloaded gracefully, and switched between servers through its runtime API.
package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"berth/internal/acme"
	"berth/internal/fsx"
	"berth/internal/hostnet"
	"berth/internal/run"
	"berth/internal/wait"
)

// Server is one container behind the proxy.
type Server struct{ Name, Addr string } // Addr "10.1.5.3:80"

// Proxy is the demo's front: one HAProxy process with its own configuration, pid file and runtime socket in
// Dir. It routes every request to exactly one server, the active one; switching keeps requests in flight.
type Proxy struct {
	Name        string // tells this front's transient unit apart from another configuration's (berth-demo-proxy-<Name>)
	Dir         string // holds haproxy.cfg, haproxy.pid, admin.sock (created 0700 if missing)
	HTTP, HTTPS string // listen addresses as in config: ":80", "127.0.0.1:18080"; HTTPS may be "" (no TLS frontend)
	Bundle      string // PEM with certificate + key for HTTPS
	Servers     []Server
	// Domain, when set, is the only Host the front answers for: any other gets 421 from HAProxy itself and
	// never reaches a container.
	Domain string
	// Private are path prefixes answered 403 by the front itself (the payload's administration).
	Private []string
	// TLSTo is the server name (SNI) to talk HTTPS to the servers with, for a payload that serves HTTPS only;
	// empty: plain HTTP. With it, the HTTP frontend redirects visitors to https.
	TLSTo string
	// Unavailable is the plain-text page the front answers, with status 503, when it cannot reach the active
	// server (stopped, being reset, crashed) instead of HAProxy's bare 503. It is a log-format string
	// (HAProxy's http-error lf-string), evaluated at each such request: NextTick puts in a time computed then.
	Unavailable string
	// Challenges are ACME http-01 answers (path → key authorization, checked by internal/acme) the HTTP
	// frontend serves, for whatever Host, while a certificate for Domain is being validated.
	Challenges map[string]string
}

// NextTick is a log-format expression for Unavailable: the next multiple of every since local midnight
// ("15:30 +0100"), as a timer with OnCalendar= at those times fires, computed by HAProxy when it answers.
// offset is the local time's offset from UTC when the configuration is rendered (a change, at daylight
// saving time, is a new configuration at the next Ensure).
func NextTick(every time.Duration, offset time.Duration) string {
	e, o := int64(every/time.Second), int64(offset/time.Second)
	if e <= 0 {
		e = 1
	}
	// date is UTC seconds; local = date+o; next = (local/e+1)*e; back to UTC to format in local time.
	return fmt.Sprintf("%%[date,add(%d),div(%d),add(1),mul(%d),sub(%d),ltime(%%H:%%M %%z)]", o, e, e, o)
}

const (
	haproxyBin   = "/usr/sbin/haproxy"
	proxyUnit    = "berth-demo-proxy"
	proxyBackend = "demo"
	proxyWait    = 10 * time.Second
)

// Unit is the transient systemd unit the front runs in where systemd runs the host.
func (p *Proxy) Unit() string {
	if p.Name == "" {
		return proxyUnit
	}
	return proxyUnit + "-" + p.Name
}

// proxyUser is the account the front runs as, not root: all of it under systemd (with the one capability
// to bind 80 and 443), its workers otherwise.
const proxyUser = "haproxy"

// underSystemd tells whether the host runs systemd, so that the front runs as a transient unit of its own.
func underSystemd() bool {
	comm, _ := os.ReadFile("/proc/1/comm")
	_, err := os.Stat("/run/systemd/system")
	return err == nil && strings.TrimSpace(string(comm)) == "systemd"
}

// own gives path to proxyUser when the front runs as that user (under systemd), so that it reads its
// configuration and certificate and writes its pid file and socket, in Dir only.
func own(path string) error {
	if !underSystemd() {
		return nil
	}
	u, err := user.Lookup(proxyUser)
	if err != nil {
		return fmt.Errorf("demo proxy: the front runs as %s: %w (is haproxy installed?)", proxyUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Lchown(path, uid, gid)
}

// passable lets proxyUser reach Dir under systemd: search permission (only) on every directory above it.
func passable(dir string) error {
	for ; underSystemd() && dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if err := fsx.Searchable(dir); err != nil {
			return fmt.Errorf("demo proxy: %w", err)
		}
	}
	return nil
}

func (p *Proxy) bundlePath() string { return filepath.Join(p.Dir, "bundle.pem") }

// copyBundle puts the certificate bundle into Dir (0600, the front's own), telling whether it changed: a
// new certificate needs a reload too.
func (p *Proxy) copyBundle() (bool, error) {
	if p.HTTPS == "" {
		return false, nil
	}
	b, err := os.ReadFile(p.Bundle)
	if err != nil {
		return false, fmt.Errorf("demo proxy: %w", err)
	}
	if old, _ := os.ReadFile(p.bundlePath()); bytes.Equal(old, b) {
		return false, nil
	}
	if err := fsx.WriteFile(p.bundlePath(), b, 0o600); err != nil {
		return false, fmt.Errorf("demo proxy: %w", err)
	}
	return true, own(p.bundlePath())
}

func (p *Proxy) cfgPath() string  { return filepath.Join(p.Dir, "haproxy.cfg") }
func (p *Proxy) pidPath() string  { return filepath.Join(p.Dir, "haproxy.pid") }
func (p *Proxy) sockPath() string { return filepath.Join(p.Dir, "admin.sock") }

// Render returns the full haproxy.cfg with the active server enabled and every other one "disabled".
func (p *Proxy) Render(active string) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# The demo front, written by berth, which rewrites this file: do not edit.")
	w("global\n\tmaster-worker\n\tpidfile %s", p.pidPath())
	w("\tstats socket %s mode 600 level admin expose-fd listeners", p.sockPath())
	// noreuseport: a second process binding the same port fails instead of the kernel splitting connections.
	if !underSystemd() { // a root master: its workers drop to haproxy in /var/lib/haproxy (systemd runs all as haproxy)
		w("\tuser %[1]s\n\tgroup %[1]s\n\tchroot /var/lib/haproxy", proxyUser)
	}
	w("\thard-stop-after 60s\n\tnoreuseport\n")
	// The servers are containers on a local bridge: a connection takes well under a millisecond, so 1 s
	// with two retries is ample, and a stopped or crashed container (whose address no longer answers
	// ARP) gets the visitor the unavailable page within seconds (6 s measured on a loaded test VM) rather
	// than after 5 s per attempt.
	w("defaults\n\tmode http\n\ttimeout connect 1s\n\ttimeout client 60s\n\ttimeout server 60s")
	w("\ttimeout http-request 10s\n\ttimeout http-keep-alive 10s\n\tretries 2\n\toption redispatch\n\toption forwardfor\n")
	w("frontend http\n\tbind %s", p.HTTP)
	for _, path := range slices.Sorted(maps.Keys(p.Challenges)) {
		w("\t%s", acme.Rule(path, p.Challenges[path]))
	}
	p.onlyDomain(w)
	w("\thttp-request set-header X-Forwarded-Proto http")
	if p.TLSTo != "" && p.HTTPS != "" {
		w("\thttp-request redirect scheme https code 301 unless { path_beg /.well-known/acme-challenge/ }")
	}
	w("\tdefault_backend %s\n", proxyBackend)
	if p.HTTPS != "" {
		w("frontend https\n\tbind %s ssl crt %s ssl-min-ver TLSv1.2 alpn h2,http/1.1", p.HTTPS, p.bundlePath())
		p.onlyDomain(w)
		w("\thttp-request set-header X-Forwarded-Proto https\n\tdefault_backend %s\n", proxyBackend)
	}
	w("backend %s\n\tbalance first", proxyBackend)
	if p.Unavailable != "" {
		w("\thttp-error status 503 content-type \"text/plain; charset=utf-8\" hdr Retry-After 60 hdr Cache-Control no-store lf-string \"%s\"",
			hapQuote(p.Unavailable))
	}
	tls := ""
	if p.TLSTo != "" { // the payload's own certificate is self-signed: the proxy checks the name, not the chain
		tls = " ssl verify none sni str(" + p.TLSTo + ")"
	}
	for _, s := range p.Servers {
		if s.Name == active {
			w("\tserver %s %s%s", s.Name, s.Addr, tls)
		} else {
			w("\tserver %s %s%s disabled", s.Name, s.Addr, tls)
		}
	}
	return []byte(b.String())
}

// onlyDomain answers requests for any other Host than Domain with 421, and the Private paths with 403, in
// the front.
func (p *Proxy) onlyDomain(w func(string, ...any)) {
	if p.Domain != "" {
		w("\tacl demo_host req.hdr(host),field(1,:) -i %s", p.Domain)
		w("\thttp-request return status 421 content-type text/plain string \"this front serves only %s\" unless demo_host", p.Domain)
	}
	if len(p.Private) > 0 {
		w("\thttp-request return status 403 content-type text/plain string \"not part of the demo\" if { path_beg %s }", strings.Join(p.Private, " "))
	}
}

// Ensure makes the running HAProxy match p with active enabled: the configuration is validated with
// `haproxy -c`, written only if changed, HAProxy started if not running or gracefully reloaded if the file
// changed, and finally active is switched on through the runtime API.
func (p *Proxy) Ensure(ctx context.Context, active string) error {
	if err := p.known(active); err != nil {
		return err
	}
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return fmt.Errorf("demo proxy: %w", err)
	}
	if err := own(p.Dir); err != nil {
		return err
	}
	if err := passable(filepath.Dir(p.Dir)); err != nil {
		return err
	}
	newBundle, err := p.copyBundle()
	if err != nil {
		return err
	}
	cfg := p.Render(active)
	if err := p.check(ctx, cfg); err != nil {
		return err
	}
	old, changed, err := p.write(cfg)
	if err != nil {
		return err
	}
	changed = changed || newBundle
	switch {
	case !p.Running():
		err = p.start(ctx)
	case changed:
		if err = p.reload(ctx); err != nil && old != nil {
			_ = fsx.WriteFile(p.cfgPath(), old, 0o600) // so that the next Ensure retries the reload
		}
	}
	if err != nil {
		return err
	}
	return p.SetActive(ctx, active)
}

func (p *Proxy) known(name string) error {
	if !slices.ContainsFunc(p.Servers, func(s Server) bool { return s.Name == name }) {
		return fmt.Errorf("demo proxy: no server %q", name)
	}
	return nil
}

var alertPrefix = regexp.MustCompile(`^\[ALERT\]\s*(\(\d+\)\s*)?:\s*`)

// check validates cfg with `haproxy -c` and returns haproxy's alerts as a one-line error.
func (p *Proxy) check(ctx context.Context, cfg []byte) error {
	tmp := filepath.Join(p.Dir, ".haproxy.cfg.check")
	if err := os.WriteFile(tmp, cfg, 0o600); err != nil {
		return fmt.Errorf("demo proxy: %w", err)
	}
	defer os.Remove(tmp)
	var out run.SyncBuffer
	_, err := run.Cmd{Argv: []string{haproxyBin, "-c", "-f", tmp}, Stdout: &out, Stderr: &out, Timeout: 30 * time.Second}.Run(ctx)
	if err == nil {
		return nil
	}
	msg := []string{strings.ReplaceAll(err.Error(), "\n", " | ")} // when haproxy says nothing useful
	for _, l := range strings.Split(string(out.Bytes()), "\n") {
		if l = strings.TrimSpace(l); alertPrefix.MatchString(l) && !strings.Contains(l, "found in configuration") {
			msg = append(msg, alertPrefix.ReplaceAllString(l, ""))
		}
	}
	if len(msg) > 1 {
		msg = msg[1:]
	}
	return fmt.Errorf("demo proxy: haproxy rejects the configuration: %s", strings.Join(msg, "; "))
}

// start runs HAProxy in master-worker mode, under a transient systemd unit when systemd runs the host (so that
// it outlives the job that starts it), and waits until its runtime socket answers.
func (p *Proxy) start(ctx context.Context) error {
	for _, addr := range []string{p.HTTP, p.HTTPS} {
		if addr == "" {
			continue
		}
		holder, err := hostnet.Holder(addr)
		if err != nil {
			return fmt.Errorf("demo proxy: who holds %s: %w", addr, err)
		}
		if holder != "" {
			return fmt.Errorf("demo proxy: %s is already held by %s: choose another [Demo] HTTP/HTTPS, or stop that process", addr, holder)
		}
	}
	os.Remove(p.pidPath())
	// The configuration names the pid file: `-p` as well would only add an alert to every start.
	argv := []string{haproxyBin, "-W", "-D", "-f", p.cfgPath()}
	if underSystemd() {
		argv = []string{"systemd-run", "--unit=" + p.Unit(), "--collect", "-p", "Type=notify", "-p", "KillMode=mixed"}
		for _, prop := range hardening(p.Dir) {
			argv = append(argv, "-p", prop)
		}
		argv = append(argv, haproxyBin, "-Ws", "-f", p.cfgPath())
	}
	if _, err := (run.Cmd{Argv: argv, Timeout: 30 * time.Second}).Run(ctx); err != nil {
		return fmt.Errorf("demo proxy: starting haproxy: %s", strings.ReplaceAll(err.Error(), "\n", " | "))
	}
	if err := hapWait(ctx, proxyWait, func() bool { _, err := p.command(ctx, "show info"); return err == nil }); err != nil {
		return fmt.Errorf("demo proxy: haproxy started but its runtime socket %s does not answer: %w", p.sockPath(), err)
	}
	return nil
}

// hardening is the front's transient unit: as proxyUser with only the capability to bind low ports, the
// file system read-only but for dir, no new privileges, devices, kernel tunables or other address families.
func hardening(dir string) []string {
	return []string{"User=" + proxyUser, "Group=" + proxyUser, "AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=" + dir,
		"ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
		"ProtectControlGroups=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "LockPersonality=yes",
		"RestrictRealtime=yes", "SystemCallArchitectures=native"}
}

// reload asks the master for a graceful reload (SIGUSR2) and waits until a new worker answers.
func (p *Proxy) reload(ctx context.Context) error {
	master, err := p.masterPid()
	if err != nil {
		return err
	}
	before := p.workerPid(ctx)
	if err := syscall.Kill(master, syscall.SIGUSR2); err != nil {
		return fmt.Errorf("demo proxy: reloading haproxy (pid %d): %w", master, err)
	}
	if err := hapWait(ctx, proxyWait, func() bool { w := p.workerPid(ctx); return w != 0 && w != before }); err != nil {
		return fmt.Errorf("demo proxy: haproxy (pid %d) did not reload: %w", master, err)
	}
	return nil
}

var infoPid = regexp.MustCompile(`(?m)^Pid: (\d+)`)

// workerPid is the pid of the worker answering the runtime socket, 0 if none answers.
func (p *Proxy) workerPid(ctx context.Context) int {
	out, _ := p.command(ctx, "show info")
	m := infoPid.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// SetActive switches the backend to name through the runtime API (name ready first, then every other server
// in maintenance, so that one always serves) and records the choice in haproxy.cfg without reloading.
func (p *Proxy) SetActive(ctx context.Context, name string) error {
	if err := p.known(name); err != nil {
		return err
	}
	set := func(srv, state string) error {
		out, err := p.command(ctx, fmt.Sprintf("set server %s/%s state %s", proxyBackend, srv, state))
		if err == nil && strings.TrimSpace(out) != "" {
			err = errors.New(strings.Join(strings.Fields(out), " "))
		}
		if err != nil {
			return fmt.Errorf("demo proxy: setting server %s %s: %w", srv, state, err)
		}
		return nil
	}
	if err := set(name, "ready"); err != nil {
		return err
	}
	for _, s := range p.Servers {
		if s.Name != name {
			if err := set(s.Name, "maint"); err != nil {
				return err
			}
		}
	}
	_, _, err := p.write(p.Render(name))
	return err
}

// write replaces haproxy.cfg with cfg atomically unless it already holds it; it returns the old content.
func (p *Proxy) write(cfg []byte) (old []byte, changed bool, err error) {
	if old, _ = os.ReadFile(p.cfgPath()); bytes.Equal(old, cfg) {
		return old, false, nil
	}
	if err := fsx.WriteFile(p.cfgPath(), cfg, 0o600); err != nil {
		return old, false, fmt.Errorf("demo proxy: writing configuration: %w", err)
	}
	return old, true, own(p.cfgPath())
}

// Active returns the one server of the backend in state ready according to the runtime API.
func (p *Proxy) Active(ctx context.Context) (string, error) {
	rows, err := p.table(ctx, "show servers state "+proxyBackend, " ")
	if err != nil {
		return "", err
	}
	var ready []string
	for _, r := range rows {
		// Ready is no admin flag but CMAINT (0x04), which only records "disabled" in the configuration.
		if a, err := strconv.Atoi(r["srv_admin_state"]); err == nil && a&^0x04 == 0 {
			ready = append(ready, r["srv_name"])
		}
	}
	if len(ready) != 1 {
		return "", fmt.Errorf("demo proxy: %d servers ready (%s), want exactly one", len(ready), strings.Join(ready, ", "))
	}
	return ready[0], nil
}

// WaitIdle waits, at most timeout, until server name has no current session (scur in "show stat").
func (p *Proxy) WaitIdle(ctx context.Context, name string, timeout time.Duration) error {
	var last string
	err := hapWait(ctx, timeout, func() bool {
		rows, err := p.table(ctx, "show stat", ",")
		last = "not found"
		if err != nil {
			last = err.Error()
		}
		for _, r := range rows {
			if r["pxname"] == proxyBackend && r["svname"] == name {
				last = r["scur"] + " sessions"
				return r["scur"] == "0"
			}
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("demo proxy: server %s not idle (%s): %w", name, last, err)
	}
	return nil
}

// Running reports whether the pid file names a live haproxy process.
func (p *Proxy) Running() bool {
	pid, err := p.masterPid()
	return err == nil && hapAlive(pid)
}

// Stop soft-stops HAProxy (SIGUSR1 to the master), kills it if it is still there after 10s, and removes the
// pid file. It is no error when HAProxy is not running.
func (p *Proxy) Stop(ctx context.Context) error {
	pid, err := p.masterPid()
	if err != nil || !hapAlive(pid) {
		os.Remove(p.pidPath())
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGUSR1)
	gone := func() bool { return !hapAlive(pid) }
	if hapWait(ctx, proxyWait, gone) != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if err := hapWait(context.WithoutCancel(ctx), 2*time.Second, gone); err != nil {
			return fmt.Errorf("demo proxy: haproxy (pid %d) does not stop: %w", pid, err)
		}
	}
	os.Remove(p.pidPath())
	return nil
}

func (p *Proxy) masterPid() (int, error) {
	b, err := os.ReadFile(p.pidPath())
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// hapAlive reports whether pid is a haproxy process that is not a zombie.
func hapAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	comm, rest, _ := strings.Cut(string(b), ") ") // "pid (comm) state ..."
	return strings.HasSuffix(comm, " (haproxy") && !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// hapWait polls ok every 100ms until it holds, timeout passes or ctx ends.
func hapWait(ctx context.Context, timeout time.Duration, ok func() bool) error {
	return wait.Until(ctx, timeout, 100*time.Millisecond, func(context.Context) (bool, error) { return ok(), nil })
}

// command sends one command to the runtime API and returns the answer.
func (p *Proxy) command(ctx context.Context, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", p.sockPath())
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmd, err)
	}
	return string(out), nil
}

// table runs a "show" command whose answer is a header line "# name name ..." followed by rows, split by sep.
func (p *Proxy) table(ctx context.Context, cmd, sep string) ([]map[string]string, error) {
	out, err := p.command(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("demo proxy: %s: %w", cmd, err)
	}
	var head []string
	var rows []map[string]string
	for _, l := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(l), "# "); ok && head == nil {
			head = strings.Split(h, sep)
		} else if f := strings.Split(strings.TrimSpace(l), sep); head != nil && len(f) >= len(head) {
			r := map[string]string{}
			for i, k := range head {
				r[k] = f[i]
			}
			rows = append(rows, r)
		}
	}
	if head == nil {
		return nil, fmt.Errorf("demo proxy: %s: unexpected answer %q", cmd, strings.TrimSpace(out))
	}
	return rows, nil
}

// hapQuote escapes s for a double-quoted HAProxy configuration word (a backslash and a double quote are
// escaped; a line break, which a configuration line cannot hold, becomes \n for the log-format).
func hapQuote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "").Replace(s)
}

// Package demo runs the public demo: two LXC containers that take turns behind an HAProxy front, each one
// reset to a pristine state after its turn, upgraded at night through upgrade.d hooks, and repaired after a
// crash. One flock serialises every operation that changes the demo; its state is one JSON file written
// atomically, so that a run killed at any moment leaves something the next run can finish.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"berth/internal/clone"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/haproxy"
	"berth/internal/hostnet"
	"berth/internal/lock"
	"berth/internal/upgraded"
)

// Timeouts of the demo's steps.
var (
	LockTimeout   = 3 * time.Hour // a switch waits out a nightly upgrade
	HealthTimeout = 2 * time.Minute
	StopTimeout   = 30 * time.Second
	DrainTimeout  = 30 * time.Second
)

// Demo is the demo of one configuration.
type Demo struct {
	c       *config.Config
	cfg     config.Demo
	Backend string // dir, btrfs or overlayfs: what [Demo] Backend resolved to
	lxcPath string
	store   string // pristine generations: <LXC>/.berth-demo/gen/<NNNNNN>
	dir     string // state: <State>/demo
	net     hostnet.Network
	proxy   *haproxy.Proxy
	hooks   upgraded.Hooks
}

// State is what the demo records between runs (<State>/demo/state.json).
type State struct {
	Active      string            `json:"active"`
	Dirty       map[string]bool   `json:"dirty"` // a container that ran since its last reset
	Gen         map[string]string `json:"gen"`   // generation each container was last reset from
	LastSwitch  time.Time         `json:"last_switch"`
	LastUpgrade time.Time         `json:"last_upgrade"`
	UpgradeNote string            `json:"upgrade_result"`
}

// Open resolves the configuration into a demo (without touching anything).
func Open(c *config.Config) (*Demo, error) {
	d := &Demo{c: c, cfg: c.Demo, lxcPath: c.Paths.LXC, dir: filepath.Join(c.Paths.State, "demo")}
	d.store = filepath.Join(d.lxcPath, ".berth-demo")
	d.net = hostnet.Network{Bridge: d.cfg.Bridge, Subnet: d.cfg.Subnet, StateDir: filepath.Join(d.dir, "net")}
	var servers []haproxy.Server
	for i, n := range d.cfg.Containers {
		servers = append(servers, haproxy.Server{Name: n, Addr: d.net.Addr(i).String() + ":80"})
	}
	d.proxy = &haproxy.Proxy{Dir: filepath.Join(d.dir, "proxy"), HTTP: d.cfg.HTTP, HTTPS: d.cfg.HTTPS, Bundle: d.bundle(), Servers: servers}
	d.hooks = upgraded.Hooks{Dir: d.cfg.Hooks, LogDir: filepath.Join(d.dir, "logs", "hooks"), Timeout: 30 * time.Minute}
	be, err := pickBackend(d.cfg.Backend, d.lxcPath)
	if err != nil {
		return nil, err
	}
	d.Backend = be
	return d, nil
}

func (d *Demo) bundle() string { return filepath.Join(d.dir, "tls", "demo.pem") }

func (d *Demo) domain() string {
	if d.cfg.Domain != "" {
		return d.cfg.Domain
	}
	return "demo.localhost"
}

// pickBackend resolves [Demo] Backend: auto takes btrfs snapshots when the LXC path is on btrfs, else an
// overlayfs over a pristine lower layer when the kernel has overlayfs, else plain directories.
func pickBackend(want, lxcPath string) (string, error) {
	dir := lxcPath
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" {
			break
		}
		dir = filepath.Dir(dir)
	}
	fstype, err := clone.FSType(dir)
	if err != nil {
		return "", err
	}
	fss, _ := os.ReadFile("/proc/filesystems")
	overlay := strings.Contains(string(fss), "\toverlay\n")
	switch want {
	case "btrfs":
		if fstype != "btrfs" {
			return "", fmt.Errorf("[Demo] Backend = btrfs, but %s is on %s: put [Paths] LXC on btrfs or choose auto", lxcPath, fstype)
		}
	case "overlayfs":
		if !overlay {
			return "", errors.New("[Demo] Backend = overlayfs, but this kernel has no overlayfs")
		}
	case "dir":
	default: // auto
		switch {
		case fstype == "btrfs":
			want = "btrfs"
		case overlay:
			want = "overlayfs"
		default:
			want = "dir"
		}
	}
	return want, nil
}

// begin takes the demo's lock for what and loads its state; with built, it first checks that the demo is
// built.
func (d *Demo) begin(ctx context.Context, what string, built bool) (*lock.Lock, *State, error) {
	if built {
		if err := d.requireBuilt(); err != nil {
			return nil, nil, err
		}
	}
	l, err := d.lock(ctx, what)
	if err != nil {
		return nil, nil, err
	}
	st, err := d.load()
	if err != nil {
		l.Release()
		return nil, nil, err
	}
	return l, st, nil
}

func (d *Demo) lock(ctx context.Context, what string) (*lock.Lock, error) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	return lock.Acquire(ctx, filepath.Join(d.dir, "lock"), what, LockTimeout)
}

func (d *Demo) statePath() string { return filepath.Join(d.dir, "state.json") }

func (d *Demo) load() (*State, error) {
	st := &State{}
	if err := readJSON(d.statePath(), st); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if st.Dirty == nil {
		st.Dirty = map[string]bool{}
	}
	if st.Gen == nil {
		st.Gen = map[string]string{}
	}
	return st, nil
}

func (d *Demo) save(st *State) error { return writeJSON(d.statePath(), st) }

// built tells whether Build has made the containers.
func (d *Demo) built() bool {
	for _, n := range d.cfg.Containers {
		if _, err := os.Stat(d.ctDir(n) + "/config"); err != nil {
			return false
		}
	}
	g, _ := d.generations()
	return len(g) > 0
}

func (d *Demo) requireBuilt() error {
	if !d.built() {
		return fmt.Errorf("the demo is not built (no containers %s under %s): run demo:build", strings.Join(d.cfg.Containers, ", "), d.lxcPath)
	}
	return nil
}

// other is the container that is not name.
func (d *Demo) other(name string) string {
	for _, n := range d.cfg.Containers {
		if n != name {
			return n
		}
	}
	return ""
}

func (d *Demo) addr(name string) string {
	return d.net.Addr(slices.Index(d.cfg.Containers, name)).String()
}

// healthy asks the container for [Demo] HealthPath once.
func (d *Demo) healthy(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr(name)+d.cfg.HealthPath, nil)
	if err != nil {
		return err
	}
	req.Host = d.domain()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s answers %s", d.cfg.HealthPath, resp.Status)
	}
	return nil
}

// waitHealthy waits, bounded by HealthTimeout, until the container runs and passes its health check.
func (d *Demo) waitHealthy(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, HealthTimeout)
	defer cancel()
	var last error
	for {
		if !d.running(name) {
			return fmt.Errorf("%s stopped while booting (log: %s)", name, d.lxcLog(name))
		}
		if last = d.healthy(ctx, name); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not pass its health check (http://%s%s) within %s: %v", name, d.addr(name), d.cfg.HealthPath, HealthTimeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// alert reports a problem at error priority (the journal's "<3>" prefix when stderr is the journal), in
// <State>/demo/alerts.log, and through [Demo] AlertCommand (the message on its standard input).
func (d *Demo) alert(ctx context.Context, msg string) {
	slog.Error("demo alert", "msg", msg)
	if os.Getenv("JOURNAL_STREAM") != "" {
		fmt.Fprintf(os.Stderr, "<3>berth demo alert: %s\n", msg)
	}
	if f, err := os.OpenFile(filepath.Join(d.dir, "alerts.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		fmt.Fprintf(f, "%s %s\n", time.Now().Format(time.RFC3339), msg)
		f.Close()
	}
	if len(d.cfg.AlertCommand) > 0 {
		if err := runAlert(ctx, d.cfg.AlertCommand, msg); err != nil {
			slog.Error("demo alert command failed", "err", err)
		}
	}
}

func genName(n int) string { return fmt.Sprintf("%06d", n) }

// generations lists the pristine generations, oldest first.
func (d *Demo) generations() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.store, "gen"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var gens []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() && len(e.Name()) == 6 {
			gens = append(gens, e.Name())
		}
	}
	return gens, err
}

func (d *Demo) genDir(g string) string { return filepath.Join(d.store, "gen", g) }

// current is the newest generation: the pristine state containers are reset to.
func (d *Demo) current() (string, error) {
	gens, err := d.generations()
	if err != nil || len(gens) == 0 {
		return "", errors.Join(err, errors.New("no pristine state: run demo:build"))
	}
	return gens[len(gens)-1], nil
}

// addGeneration publishes the tree at src (a staging clone on the store's file system, consumed) as the new
// current generation, and prunes the oldest beyond [Demo] KeepSnapshots archived ones that no container uses.
func (d *Demo) addGeneration(ctx context.Context, st *State, src string) (string, error) {
	gens, err := d.generations()
	if err != nil {
		return "", err
	}
	n := 1
	if len(gens) > 0 {
		last, _ := strconv.Atoi(gens[len(gens)-1])
		n = last + 1
	}
	g := genName(n)
	if err := os.MkdirAll(filepath.Join(d.store, "gen"), 0o700); err != nil {
		return "", err
	}
	if d.Backend == "btrfs" {
		err = clone.Subvolume(ctx, src, d.genDir(g))
		if err == nil {
			err = clone.Remove(ctx, src)
		}
	} else {
		err = os.Rename(src, d.genDir(g))
	}
	if err != nil {
		return "", err
	}
	if err := fsx.SyncDir(filepath.Join(d.store, "gen")); err != nil {
		return "", err
	}
	gens = append(gens, g)
	for len(gens) > d.cfg.KeepSnapshots+1 {
		old := gens[0]
		gens = gens[1:]
		used := false
		for _, u := range st.Gen {
			used = used || u == old
		}
		if used && d.Backend == "overlayfs" { // a running container's lower layer
			continue
		}
		if err := clone.Remove(ctx, d.genDir(old)); err != nil {
			return "", err
		}
	}
	return g, nil
}

// setAside moves a damaged generation out of the rotation to <store>/broken/.
func (d *Demo) setAside(g string) error {
	if err := os.MkdirAll(filepath.Join(d.store, "broken"), 0o700); err != nil {
		return err
	}
	return os.Rename(d.genDir(g), filepath.Join(d.store, "broken", g+"-"+time.Now().Format("20060102-150405")))
}

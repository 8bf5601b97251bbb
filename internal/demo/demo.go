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
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"berth/internal/alert"
	"berth/internal/budget"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/haproxy"
	"berth/internal/hostnet"
	"berth/internal/image"
	"berth/internal/lock"
	"berth/internal/lxc"
	"berth/internal/probe"
	"berth/internal/storage"
	"berth/internal/units"
	"berth/internal/upgraded"
	"berth/internal/wait"
)

// Timeouts of the demo's steps.
var (
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
	gens    storage.Store
	dir     string // state: <State>/demo
	net     hostnet.Network
	proxy   *haproxy.Proxy
	hooks   upgraded.Hooks
	fsys    fs.FS       // the image folders
	payload image.Serve // how [Demo] Image serves: scheme, port, health path
	imgErr  error       // [Demo] Image does not load: Check reports it

	Sources map[string]string // BERTH_SOURCE_<NAME>=<path> keyed by NAME, set by the caller: local git sources
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

// Open resolves the configuration into a demo (without touching anything); fsys holds the image folders
// ([Demo] Image is read from it: how it serves, and what Build builds).
func Open(c *config.Config, fsys fs.FS) (*Demo, error) {
	d := &Demo{c: c, cfg: c.Demo, lxcPath: c.Paths.LXC, dir: filepath.Join(c.Paths.State, "demo"), fsys: fsys}
	d.store = filepath.Join(d.lxcPath, ".berth-demo")
	d.net = hostnet.Network{Bridge: d.cfg.Bridge, Subnet: d.cfg.Subnet, StateDir: filepath.Join(d.dir, "net"),
		EgressPorts: d.cfg.EgressPorts, HostPorts: d.cfg.HostPorts}
	m, err := image.Load(fsys, d.cfg.Image)
	if err == nil {
		d.payload = m.Serve
	} else {
		d.imgErr, d.payload = err, image.Serve{Scheme: "http", Port: 80, HealthPath: "/"}
	}
	if d.cfg.HealthPath != "" {
		d.payload.HealthPath = d.cfg.HealthPath
	}
	var servers []haproxy.Server
	for i, n := range d.cfg.Containers {
		servers = append(servers, haproxy.Server{Name: n, Addr: netip.AddrPortFrom(d.net.Addr(i), uint16(d.payload.Port)).String()})
	}
	d.proxy = &haproxy.Proxy{Name: d.cfg.Bridge, Dir: filepath.Join(d.dir, "proxy"), HTTP: d.cfg.HTTP, HTTPS: d.cfg.HTTPS, Bundle: d.bundle(), Servers: servers}
	d.proxy.Domain = d.cfg.Domain // with no [Demo] Domain (a trial) the front answers any Host
	d.proxy.Private = d.payload.Private
	if d.payload.Scheme == "https" {
		d.proxy.TLSTo = d.domain()
	}
	d.proxy.Unavailable = unavailablePage(d.cfg.SwitchEvery, time.Now())
	d.hooks = upgraded.Hooks{Dir: d.cfg.Hooks, LogDir: filepath.Join(d.dir, "logs", "hooks"), Timeout: 30 * time.Minute}
	be, err := storage.Pick(d.cfg.Backend, d.lxcPath)
	if err != nil {
		return nil, err
	}
	d.Backend = be.Name()
	d.gens = storage.Store{Dir: d.store, Backend: be, IDBase: IDBase, IDs: lxc.IDs} // the containers are unprivileged
	return d, nil
}

// unavailablePage is what the front answers (503) while no container serves: a switch or a repair is under
// way, or the demo is down. The next switch's time is computed by HAProxy when it answers.
func unavailablePage(every time.Duration, now time.Time) string {
	_, off := now.Zone()
	return "The demo is being reset or is unavailable. It will be back in a moment.\n\n" +
		"The demo starts again from a clean state every " + units.Span(every) + "; next switch: " +
		haproxy.NextTick(every, time.Duration(off)*time.Second) + ".\n"
}

func (d *Demo) bundle() string { return filepath.Join(d.dir, "tls", "demo.pem") }

func (d *Demo) domain() string {
	if d.cfg.Domain != "" {
		return d.cfg.Domain
	}
	return "demo.localhost"
}

// begin takes the demo's lock for what and loads its state; with built, it first checks that the demo is
// built.
func (d *Demo) begin(ctx context.Context, job budget.Job, built bool) (*lock.Lock, *State, error) {
	if built {
		if err := d.requireBuilt(); err != nil {
			return nil, nil, err
		}
	}
	l, err := d.lock(ctx, job)
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

// lock takes the demo's lock for job, waiting at most its LockWait (internal/budget). A switch gives up at
// once with a *lock.YieldError when a job it yields to holds the lock (budget.Yields).
func (d *Demo) lock(ctx context.Context, job budget.Job) (*lock.Lock, error) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	var yield func(lock.Info) bool
	if job == budget.Switch {
		yield = func(h lock.Info) bool { return budget.Yields(h.What) }
	}
	return lock.AcquireOrYield(ctx, d.lockPath(), job.What, job.LockWait, yield)
}

func (d *Demo) lockPath() string { return filepath.Join(d.dir, "lock") }

func (d *Demo) statePath() string { return filepath.Join(d.dir, "state.json") }

func (d *Demo) load() (*State, error) {
	st := &State{}
	if err := fsx.ReadJSON(d.statePath(), st); err != nil && !errors.Is(err, fs.ErrNotExist) {
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

func (d *Demo) save(st *State) error { return fsx.WriteJSON(d.statePath(), st, 0o600) }

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

func (d *Demo) addr(name string) string { return d.ip(name).String() }

// healthy asks the container once for its health path, the way the proxy talks to it (internal/probe).
func (d *Demo) healthy(ctx context.Context, name string) error {
	return d.probe().Once(ctx, d.ip(name))
}

func (d *Demo) healthURL(name string) string { return d.probe().URL(d.ip(name)) }

func (d *Demo) probe() probe.HTTP {
	p := probe.HTTP{Scheme: d.payload.Scheme, Port: d.payload.Port, Path: d.payload.HealthPath, Domain: d.domain()}
	if d.payload.LoginPath != "" {
		// The image's demo login ([Serve] LoginPath): a visitor who changed the demo password makes the
		// container unhealthy, and the next switch or repair takes the demo away from it.
		p.Login = &probe.Login{Path: d.payload.LoginPath, Form: d.payload.LoginForm, User: d.cfg.User, Password: func() (string, error) {
			b, err := os.ReadFile(d.passwordFile())
			if err != nil {
				return "", fmt.Errorf("the demo password: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}}
	}
	return p
}

func (d *Demo) ip(name string) netip.Addr { return d.net.Addr(slices.Index(d.cfg.Containers, name)) }

// waitHealthy waits, bounded by HealthTimeout, until the container runs and passes its health check.
func (d *Demo) waitHealthy(ctx context.Context, name string) error {
	err := wait.Until(ctx, HealthTimeout, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		if !d.running(name) {
			return true, fmt.Errorf("%s stopped while booting (log: %s)", name, d.lxcLog(name))
		}
		err := d.healthy(ctx, name)
		return err == nil, err
	})
	if errors.Is(err, wait.ErrTimeout) {
		return fmt.Errorf("%s did not pass its health check (%s) within %s: %w", name, d.healthURL(name), HealthTimeout, err)
	}
	return err
}

// alert reports a problem at error priority, in <State>/demo/alerts.log and through [Demo] AlertCommand.
func (d *Demo) alert(ctx context.Context, msg string) {
	alert.Sender{Component: "demo", Log: filepath.Join(d.dir, "alerts.log"), Command: d.cfg.AlertCommand}.Send(ctx, msg)
}

// generations lists the pristine generations, oldest first.
func (d *Demo) generations() ([]string, error) { return d.gens.Generations() }

func (d *Demo) genDir(g string) string { return d.gens.Path(g) }

// current is the newest generation: the pristine state containers are reset to.
func (d *Demo) current() (string, error) { return d.gens.Current() }

// addGeneration publishes the tree at src (a staging clone on the store's file system, consumed) as the new
// current generation, and prunes the oldest beyond [Demo] KeepSnapshots archived ones that no container uses.
func (d *Demo) addGeneration(ctx context.Context, st *State, src string) (string, error) {
	return d.gens.Add(ctx, src, d.cfg.KeepSnapshots, func(g string) bool {
		used := false
		for _, u := range st.Gen {
			used = used || u == g
		}
		return used
	})
}

// setAside moves damaged generations out of the rotation to <store>/broken/, each with why in a .reason file.
func (d *Demo) setAside(gens []string, reason string) error {
	for _, g := range gens {
		if err := d.gens.SetAside(g, reason); err != nil {
			return err
		}
	}
	return nil
}

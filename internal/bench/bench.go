// Package bench measures berth against the original scripts' algorithms and the plain tools, pair by pair
// in one run, alternating the two sides round by round, and writes BENCHMARKS.md with a latency chart.
package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"berth/images"
	"berth/internal/base"
	"berth/internal/clone"
	"berth/internal/config"
	"berth/internal/demo"
	"berth/internal/fleet"
	"berth/internal/hostnet"
	"berth/internal/image"
	"berth/internal/rootfs"
	"berth/internal/run"
	"berth/internal/storage"

	"golang.org/x/sys/unix"
)

// Options size a run.
type Options struct {
	Rounds   int    // rounds of each pair (alternating which side goes first)
	Switches int    // switches per algorithm in the availability run
	Out      string // directory receiving BENCHMARKS.md and benchmarks-latency.svg
	Binary   string // the compiled berth binary, for the footprint
}

type env map[string]string

func (e env) config() (*config.Config, error) {
	return config.LoadFrom("/nonexistent/berth.conf", func(k string) (string, bool) {
		if v, ok := e[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	})
}

func (e env) with(kv ...string) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func (e env) list() []string {
	l := os.Environ()
	for k, v := range e {
		l = append(l, k+"="+v)
	}
	return l
}

// timed runs f and returns how long it took. Dirty pages left by the previous sample are flushed first,
// outside the timing, so that one sample's write-back is never billed to the next.
func timed(f func() error) (float64, error) {
	unix.Sync()
	t := time.Now()
	err := f()
	return time.Since(t).Seconds(), err
}

func sh(ctx context.Context, argv ...string) error {
	_, err := run.Cmd{Argv: argv, Timeout: time.Hour, Quiet: true}.Run(ctx)
	return err
}

// Measure measures every pair and writes the report.
func Measure(ctx context.Context, o Options) error {
	work, err := os.MkdirTemp("/var/tmp", "berth-bench-")
	if err != nil {
		return err
	}
	// The demo containers are unprivileged: their root must be able to pass through every directory above
	// their rootfs (MkdirTemp makes 0700).
	if err := os.Chmod(work, 0o711); err != nil {
		return err
	}
	s := &session{ctx: ctx, o: o, work: work, e: env{"BERTH_PATHS_STATE": filepath.Join(work, "state")}}
	defer s.close()
	facts := machineFacts(work)
	stopLoad := sampleLoad(&facts.Load)
	baseDir, err := s.baseRootfs()
	if err != nil {
		return err
	}
	btrfs, err := s.cloneBase(baseDir)
	if err != nil {
		return err
	}
	ov, ovEnv, err := s.demoReset(baseDir, btrfs)
	if err != nil {
		return err
	}
	runs, err := s.availability(ov)
	if err != nil {
		return err
	}
	if err := s.footprint(ovEnv); err != nil {
		return err
	}
	if err := s.buildPair(baseDir); err != nil {
		return err
	}
	stopLoad()
	return s.write(facts, runs)
}

// sampleLoad samples the 1-minute load average every 10 s until the returned stop is called, which writes the
// median and the highest sample into *out: what else ran beside the bench is part of its figures.
func sampleLoad(out *string) (stop func()) {
	var samples []float64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for t := time.NewTicker(10 * time.Second); ; {
			var l float64
			if b, err := os.ReadFile("/proc/loadavg"); err == nil {
				if _, err := fmt.Sscan(string(b), &l); err == nil {
					samples = append(samples, l)
				}
			}
			select {
			case <-done:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		if len(samples) > 0 {
			*out = fmt.Sprintf("%.1f median, %.1f highest (1-minute, sampled every 10 s during the run, %d samples)", Median(samples), slices.Max(samples), len(samples))
		}
	}
}

// session is one Measure run: its work directory, what to undo at the end, the pairs measured so far.
type session struct {
	ctx      context.Context
	o        Options
	work     string
	e        env
	cleanups []func()
	pairs    []Pair
}

func (s *session) close() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	clone.Remove(context.Background(), s.work)
}

// baseRootfs is step 1. Base rootfs: bare debootstrap (the floor) vs berth with an empty cache, then berth
// with unchanged inputs. It returns the base the later steps start from.
func (s *session) baseRootfs() (string, error) {
	ctx, o, work, e := s.ctx, s.o, s.work, s.e
	var cold, bare, bareMM, warm []float64
	var baseDir string
	for r := range o.Rounds {
		ce := e.with("BERTH_PATHS_CACHE", filepath.Join(work, fmt.Sprint("cache", r)), "BERTH_PATHS_MACHINES", filepath.Join(work, fmt.Sprint("machines", r)))
		c, err := ce.config()
		if err != nil {
			return "", err
		}
		os.MkdirAll(c.Paths.Machines, 0o755)
		bareDir := filepath.Join(work, "debootstrap")
		bareRun := func() error {
			defer clone.Remove(ctx, bareDir)
			return sh(ctx, "debootstrap", "--variant=minbase", "--include="+strings.Join(c.Base.Packages, ","), "--arch="+debArch(runtime.GOARCH),
				c.Base.Suite, bareDir, c.Base.Mirror)
		}
		bareMMRun := func() error {
			defer clone.Remove(ctx, bareDir)
			return sh(ctx, "mmdebstrap", "--variant=minbase", "--include="+strings.Join(c.Base.Packages, ","), "--arch="+debArch(runtime.GOARCH),
				c.Base.Suite, bareDir, c.Base.Mirror)
		}
		berthRun := func() error { _, err := base.Build(ctx, c, base.Options{}); return err }
		warmRun := berthRun
		if o.Binary != "" { // what an operator's second "berth base:build" costs, process start and all
			warmRun = func() error {
				cmd := exec.CommandContext(ctx, o.Binary, "base:build")
				cmd.Env = ce.list()
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("berth base:build: %w: %s", err, run.Tail(out, 5))
				}
				return nil
			}
		}
		for _, side := range order(r, 3) {
			switch side {
			case 0:
				sec, err := timed(bareRun)
				if err != nil {
					return "", fmt.Errorf("debootstrap: %w", err)
				}
				bare = append(bare, sec)
			case 1:
				sec, err := timed(bareMMRun)
				if err != nil {
					return "", fmt.Errorf("mmdebstrap: %w", err)
				}
				bareMM = append(bareMM, sec)
			default:
				sec, err := timed(berthRun)
				if err != nil {
					return "", err
				}
				cold = append(cold, sec)
			}
		}
		sec, err := timed(warmRun)
		if err != nil {
			return "", err
		}
		warm = append(warm, sec)
		baseDir = base.Dir(c)
		if r < o.Rounds-1 {
			machines := c.Paths.Machines
			s.cleanups = append(s.cleanups, func() { clone.Remove(context.Background(), machines) })
		}
		os.RemoveAll(c.Paths.Cache)
		logger().Info("base round", "round", r+1, "debootstrap", bare[len(bare)-1], "mmdebstrap", bareMM[len(bareMM)-1], "berth_cold", cold[len(cold)-1], "berth_warm", warm[len(warm)-1])
	}
	c0, _ := e.config()
	s.pairs = append(s.pairs,
		Pair{Group: "Base rootfs", Name: c0.Base.Suite + " minbase + " + strings.Join(c0.Base.Packages, " "), Baseline: "bare debootstrap",
			Berth: "base:build, empty cache (" + rootfs.ResolveTool(c0.Base.Bootstrapper) + ")", Unit: "s", A: bare, B: cold, LowerIsBetter: true,
			Note: "berth's cold build does more than the bare tools: packages from the updates and security suites too, the Go toolchain (downloaded and checksum-checked, while the bootstrap runs), the recipe, the root password, packing the tree into the cache and an atomic swap. " +
				"With mmdebstrap the bootstrap installs the updated packages directly, so the recipe skips apt-get update and full-upgrade, and the tree goes straight into staging (no pack-then-unpack); the three sides ran in turn each round",
			Repro: fmt.Sprintf("time debootstrap --variant=minbase --include=%s %s /tmp/rootfs %s", strings.Join(c0.Base.Packages, ","), c0.Base.Suite, c0.Base.Mirror)},
		Pair{Group: "Base rootfs", Name: c0.Base.Suite + " minbase + " + strings.Join(c0.Base.Packages, " "), Baseline: "bare mmdebstrap",
			Berth: "base:build, empty cache (" + rootfs.ResolveTool(c0.Base.Bootstrapper) + ")", Unit: "s", A: bareMM, B: cold, LowerIsBetter: true,
			Note:  "the same berth samples as the row above",
			Repro: fmt.Sprintf("time mmdebstrap --variant=minbase --include=%s %s /tmp/rootfs %s", strings.Join(c0.Base.Packages, ","), c0.Base.Suite, c0.Base.Mirror)},
		Pair{Group: "Base rootfs", Name: "the same, inputs unchanged", Baseline: "bare debootstrap", Berth: "berth base:build, warm (the compiled binary)",
			Unit: "s", A: bare, B: warm, LowerIsBetter: true, Repro: "time ./mage base:build   # twice; the second is the warm one"})
	return baseDir, nil
}

// cloneBase is step 2. Base to machine: cp -a vs berth's clone, on ext4, btrfs and xfs (loop devices). It
// returns the btrfs mount, where step 3 puts its btrfs demo.
func (s *session) cloneBase(baseDir string) (string, error) {
	ctx, work := s.ctx, s.work
	btrfs, xfs := filepath.Join(work, "btrfs"), filepath.Join(work, "xfs")
	for _, fs := range []struct{ dir, mkfs string }{{btrfs, "mkfs.btrfs"}, {xfs, "mkfs.xfs"}} {
		img := fs.dir + ".img"
		args := []string{fs.mkfs, "-q", img}
		if fs.mkfs == "mkfs.xfs" {
			args = []string{fs.mkfs, "-q", "-m", "reflink=1", img}
		}
		os.MkdirAll(fs.dir, 0o755)
		for _, argv := range [][]string{{"truncate", "-s", "12G", img}, args, {"mount", "-o", "loop", img, fs.dir}} {
			if err := sh(ctx, argv...); err != nil {
				return "", err
			}
		}
		dir := fs.dir
		s.cleanups = append(s.cleanups, func() { run.Command(context.Background(), "umount", "-l", dir) })
	}
	if err := clone.Subvolume(ctx, baseDir, filepath.Join(btrfs, "base")); err != nil {
		return "", err
	}
	if err := sh(ctx, "cp", "-a", baseDir, filepath.Join(xfs, "base")); err != nil {
		return "", err
	}
	for _, fs := range []struct{ name, src string }{{"ext4", baseDir}, {"btrfs", filepath.Join(btrfs, "base")}, {"xfs (reflink)", filepath.Join(xfs, "base")}} {
		p, err := s.clonePair(fs.name, fs.src)
		if err != nil {
			return "", err
		}
		s.pairs = append(s.pairs, p)
	}
	return btrfs, nil
}

// clonePair times cp -a against berth's clone of src on file system fsName.
func (s *session) clonePair(fsName, src string) (Pair, error) {
	ctx, o := s.ctx, s.o
	var a, b []float64
	var method clone.Method
	for r := range o.Rounds {
		dst := filepath.Join(filepath.Dir(src), "copy")
		for _, side := range order(r, 2) {
			sec, err := timed(func() error {
				if side == 0 {
					return sh(ctx, "cp", "-a", src, dst)
				}
				m, err := clone.Tree(ctx, src, dst)
				method = m
				return err
			})
			if err != nil {
				return Pair{}, err
			}
			if side == 0 {
				a = append(a, sec)
			} else {
				b = append(b, sec)
			}
			if err := clone.Remove(ctx, dst); err != nil {
				return Pair{}, err
			}
		}
	}
	p := Pair{Group: "Base to machine", Name: "copy of the base (" + du(src) + ") on " + fsName, Baseline: "cp -a",
		Berth: "berth install clone (" + string(method) + ")", Unit: "s", A: a, B: b, LowerIsBetter: true,
		Repro: "time cp -a " + src + " /same/fs/copy"}
	if Median(b) > Median(a) {
		p.Note = "berth runs the same GNU cp (coreutils 9 reflinks by default where the file system can, so on xfs cp -a clones too) and then flushes the copy to disk (syncfs) before publishing it, so that a crash never leaves a half-written machine; cp -a stops with the data still in the page cache: that flush is the difference. " +
			"What would close it: a btrfs [Paths] Machines (a snapshot instead of per-file clones), or giving up the crash safety"
	}
	return p, nil
}

// demoReset is step 3. Demo: an overlayfs demo and a btrfs demo, each from the base and demo-web; their
// reset against the original's lxc-snapshot -r. It returns the overlayfs demo and its environment.
func (s *session) demoReset(baseDir, btrfs string) (*demo.Demo, env, error) {
	ctx, work, e := s.ctx, s.work, s.e
	mk := func(backend, lxc string) (*demo.Demo, env, error) {
		de := e.with("BERTH_PATHS_MACHINES", filepath.Dir(baseDir), "BERTH_PATHS_LXC", lxc, "BERTH_PATHS_STATE", filepath.Join(work, "state-"+backend),
			"BERTH_DEMO_IMAGE", "demo-web", "BERTH_DEMO_BACKEND", backend, "BERTH_DEMO_HEALTHPATH", "/health",
			"BERTH_DEMO_BRIDGE", fmt.Sprintf("bdb%04x", rand.IntN(1<<16)), "BERTH_DEMO_SUBNET", freeSubnet().String(),
			"BERTH_DEMO_HTTP", freeAddr(), "BERTH_DEMO_HTTPS", freeAddr())
		c, err := de.config()
		if err != nil {
			return nil, nil, err
		}
		d, err := demo.Open(c, images.FS)
		if err != nil {
			return nil, nil, err
		}
		s.cleanups = append(s.cleanups, func() { d.Remove(context.Background()) })
		return d, de, d.Build(ctx, false)
	}
	ov, ovEnv, err := mk("overlayfs", filepath.Join(work, "lxc"))
	if err != nil {
		return nil, nil, err
	}
	bt, _, err := mk("btrfs", filepath.Join(btrfs, "lxc"))
	if err != nil {
		return nil, nil, err
	}
	// The original's reset: lxc-snapshot -r of a directory-backed container.
	origPath := filepath.Join(work, "lxc-orig")
	pristine, _ := ov.PristineDir()
	os.MkdirAll(filepath.Join(origPath, "orig"), 0o755)
	if err := sh(ctx, "cp", "-a", pristine, filepath.Join(origPath, "orig", "rootfs")); err != nil {
		return nil, nil, err
	}
	os.WriteFile(filepath.Join(origPath, "orig", "config"), []byte("lxc.uts.name = orig\nlxc.rootfs.path = dir:"+filepath.Join(origPath, "orig", "rootfs")+"\nlxc.net.0.type = empty\n"), 0o644)
	if err := sh(ctx, "lxc-snapshot", "-P", origPath, "-n", "orig"); err != nil {
		return nil, nil, err
	}
	for _, size := range []string{"", "1.5 GB"} {
		if size != "" { // grow every pristine state to 1.5 GB with incompressible data
			filler := filepath.Join(work, "filler")
			if err := sh(ctx, "dd", "if=/dev/urandom", "of="+filler, "bs=1M", "count=1000", "status=none"); err != nil {
				return nil, nil, err
			}
			ptB, _ := bt.PristineDir()
			for _, dst := range []string{filepath.Join(pristine, "filler"), filepath.Join(ptB, "filler"), filepath.Join(origPath, "orig", "snaps", "snap0", "rootfs", "filler")} {
				if err := sh(ctx, "cp", filler, dst); err != nil {
					return nil, nil, err
				}
			}
			os.Remove(filler)
		}
		if err := s.resetPairs("reset of a container ("+du(pristine)+")", origPath, ov, bt); err != nil {
			return nil, nil, err
		}
		if size != "" {
			continue
		}
		ptB, _ := bt.PristineDir()
		for _, u := range []struct{ backend, gen string }{{"overlayfs", pristine}, {"btrfs", ptB}} {
			if err := s.upgradePair(u.backend, u.gen); err != nil {
				return nil, nil, err
			}
		}
	}
	bt.Remove(ctx)
	return ov, ovEnv, nil
}

// resetPairs times the original's reset (lxc-snapshot -r of a directory-backed container at origPath)
// against berth's reset of the overlayfs and the btrfs demo, the three in turn each round.
func (s *session) resetPairs(name, origPath string, ov, bt *demo.Demo) error {
	ctx, o := s.ctx, s.o
	var a, bo, bb []float64
	for r := range o.Rounds {
		for _, side := range order(r, 3) {
			switch side {
			case 0:
				sec, err := timed(func() error { return sh(ctx, "lxc-snapshot", "-P", origPath, "-n", "orig", "-r", "snap0") })
				if err != nil {
					return err
				}
				a = append(a, sec)
			case 1, 2:
				d := map[int]*demo.Demo{1: ov, 2: bt}[side]
				unix.Sync() // as timed does
				t, err := d.Switch(ctx)
				if err != nil {
					return err
				}
				if side == 1 {
					bo = append(bo, t.Reset.Seconds())
				} else {
					bb = append(bb, t.Reset.Seconds())
				}
			}
		}
	}
	repro := "time lxc-snapshot -n <container> -r snap0   # dir backend"
	s.pairs = append(s.pairs,
		Pair{Group: "Demo reset", Name: name, Baseline: "lxc-snapshot -r (dir)", Berth: "berth reset (overlayfs)", Unit: "s", A: a, B: bo, LowerIsBetter: true, Repro: repro},
		Pair{Group: "Demo reset", Name: name, Baseline: "lxc-snapshot -r (dir)", Berth: "berth reset (btrfs)", Unit: "s", A: a, B: bb, LowerIsBetter: true,
			Note: "the two berth rows share the baseline samples; each round ran the three in turn"})
	return nil
}

// upgradePair times the tree work of a nightly upgrade that finds nothing to upgrade, on a demo's pristine
// generation gen on backend: berth's fork (overlayfs: an overlay over the generation, merged on success into
// hard links of its files; btrfs: a snapshot) against the previous method, a full copy; and the bytes the new
// tree takes beyond the generation (written).
func (s *session) upgradePair(backend, gen string) error {
	ctx, o := s.ctx, s.o
	be, err := storage.Pick(backend, filepath.Dir(gen))
	if err != nil {
		return err
	}
	path := filepath.Join(filepath.Dir(filepath.Dir(gen)), "bench-upgrade", "rootfs") // beside the generations, on their file system
	os.MkdirAll(filepath.Dir(path), 0o755)
	var a, b, aBytes, bBytes []float64
	for r := range o.Rounds {
		for _, side := range order(r, 2) {
			sec, err := timed(func() error {
				if side == 0 {
					return clone.TreeWith(ctx, gen, path, clone.Copy)
				}
				err := be.Fork(ctx, gen, path)
				if err == nil { // what an upgrade with nothing to upgrade writes: its log
					err = os.WriteFile(filepath.Join(path, "var/log/berth-bench-upgrade.log"), []byte("0 upgraded, 0 newly installed\n"), 0o644)
				}
				if err == nil {
					err = be.Settle(ctx, gen, path)
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("upgrade fork on %s (side %d): %w", backend, side, err)
			}
			unix.Sync()
			mib, err := writtenMiB(ctx, backend, gen, path)
			if err != nil {
				return err
			}
			if side == 0 {
				a, aBytes = append(a, sec), append(aBytes, mib)
			} else {
				b, bBytes = append(b, sec), append(bBytes, mib)
			}
			if err := be.Discard(ctx, path); err != nil {
				return err
			}
		}
	}
	name := "nightly upgrade with nothing to upgrade, tree work (" + du(gen) + ")"
	berth := "berth fork + settle (" + backend + ")"
	counted := "du -sk <generation> <new tree> (hard-linked files count once)"
	if backend == "btrfs" {
		counted = "btrfs filesystem du -s --raw <new tree>, its Exclusive bytes (extents shared with the generation do not count)"
	}
	s.pairs = append(s.pairs,
		Pair{Group: "Demo upgrade", Name: name + ": time", Baseline: "full copy (the previous method)", Berth: berth,
			Unit: "s", A: a, B: b, LowerIsBetter: true,
			Note:  "the rest of an upgrade (booting the container, apt, the hooks) is the same on both sides and not timed here",
			Repro: "time cp -a --reflink=never <generation> /same/fs/rootfs   # the previous method"},
		Pair{Group: "Demo upgrade", Name: name + ": MB written", Baseline: "full copy (the previous method)", Berth: berth,
			Unit: "MB", A: aBytes, B: bBytes, LowerIsBetter: true,
			Note: "the space the new tree takes beyond the generation: " + counted, Repro: counted})
	return nil
}

// writtenMiB is what the tree at path takes beyond the generation gen: on btrfs the tree's exclusive extents,
// elsewhere what du counts for it after gen (du counts an inode once across its arguments).
func writtenMiB(ctx context.Context, backend, gen, path string) (float64, error) {
	argv, field := []string{"du", "-sk", gen, path}, 0
	if backend == "btrfs" {
		argv, field = []string{"btrfs", "filesystem", "du", "-s", "--raw", path}, 1
	}
	out, err := run.Cmd{Argv: argv, Quiet: true}.Run(ctx)
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var n float64
	if len(lines) != 2 || len(strings.Fields(lines[1])) <= field { // a header or gen's line, then path's
		return 0, fmt.Errorf("%s: unexpected output %q", strings.Join(argv, " "), out)
	}
	if _, err := fmt.Sscan(strings.Fields(lines[1])[field], &n); err != nil {
		return 0, fmt.Errorf("%s: %w in %q", strings.Join(argv, " "), err, out)
	}
	if backend == "btrfs" {
		return n / (1 << 20), nil
	}
	return n / 1024, nil
}

// availability is step 4. Switch availability under a constant request rate: berth's switch vs the
// original algorithm.
func (s *session) availability(ov *demo.Demo) ([]Run, error) {
	ctx, o := s.ctx, s.o
	var err error
	var runs []Run
	var berthSw, origSw []float64
	var failedB, failedO float64
	for _, alg := range []string{"berth", "original"} {
		addr := ov.Config().HTTP
		var stopProxy func()
		if alg == "original" {
			addr = freeAddr()
			if stopProxy, err = PassiveProxy(ctx, filepath.Join(s.work, "passive-proxy"), addr, ov.Servers()); err != nil {
				return nil, err
			}
		}
		loop := startLoop("http://"+addr+"/", 50)
		var sws []Switch
		for range o.Switches {
			start := loop.since()
			var t demo.SwitchTimes
			if alg == "berth" {
				t, err = ov.Switch(ctx)
			} else {
				t, err = OriginalSwitch(ctx, ov)
			}
			if err != nil {
				loop.stop()
				return nil, err
			}
			sws = append(sws, Switch{Start: start, End: loop.since()})
			if alg == "berth" {
				berthSw = append(berthSw, t.Switch.Seconds())
			} else {
				origSw = append(origSw, t.Switch.Seconds())
			}
			time.Sleep(time.Second)
		}
		reqs := loop.stop()
		if stopProxy != nil {
			stopProxy()
		}
		runs = append(runs, Run{Name: alg, Requests: reqs, Switches: sws})
		n := 0.0
		for _, r := range reqs {
			if r.Failed {
				n++
			}
		}
		if alg == "berth" {
			failedB = n
		} else {
			failedO = n
		}
		logger().Info("availability run", "algorithm", alg, "requests", len(reqs), "failed", n)
	}
	s.pairs = append(s.pairs,
		Pair{Group: "Switch availability", Name: fmt.Sprintf("%d switches at 50 requests/s through HAProxy", o.Switches), Baseline: "original algorithm",
			Berth: "berth demo:switch", Unit: "requests failed", A: []float64{failedO}, B: []float64{failedB}, LowerIsBetter: true,
			Repro: "start the idle container; sleep 10; lxc-stop the active one (nginx/HAProxy upstream with both, passive failover)"},
		Pair{Group: "Switch availability", Name: "switch duration", Baseline: "original algorithm", Berth: "berth demo:switch",
			Unit: "s", A: origSw, B: berthSw, LowerIsBetter: true,
			Note: "the original's duration is its fixed 10 s wait plus the stop; berth's ends when the new container passed its health check and has the traffic"})
	return runs, nil
}

// buildPair is step 6. `build` of the machines over the base: one after another against fleet.Parallel() at a
// time, with the test fixtures as their git sources (the real ones are on GitHub). Nothing else is cached
// between builds (packages and npm modules are downloaded each time), so the first sample pays no more than
// the others. A sample takes minutes: two rounds at most.
func (s *session) buildPair(baseDir string) error {
	ctx, o, work := s.ctx, s.o, s.work
	fixtures := filepath.Join(o.Out, "internal", "fleet", "testdata")
	sources := map[string]string{}
	dirs, err := os.ReadDir(fixtures)
	if err != nil {
		return fmt.Errorf("build: the source fixtures: %w", err)
	}
	for _, d := range dirs {
		sources[strings.ToUpper(d.Name())] = filepath.Join(fixtures, d.Name())
	}
	c, err := s.e.with("BERTH_PATHS_MACHINES", filepath.Dir(baseDir), "BERTH_PATHS_SRV", filepath.Join(work, "srv"),
		"BERTH_PATHS_NSPAWN", filepath.Join(work, "nspawn"), "BERTH_PATHS_STATE", filepath.Join(work, "state-build"),
		"BERTH_PATHS_CACHE", filepath.Join(work, "cache-build")).config()
	if err != nil {
		return err
	}
	fo := fleet.Options{Images: images.FS, Sources: sources}
	n := fleet.Parallel()
	var a, b []float64
	for r := range min(o.Rounds, 2) {
		for _, side := range order(r, 2) {
			at := []int{1, n}[side]
			sec, err := timed(func() error { return fleet.InstallAll(ctx, c, fo, at) })
			if err != nil {
				return fmt.Errorf("build (%d at a time): %w", at, err)
			}
			if side == 0 {
				a = append(a, sec)
			} else {
				b = append(b, sec)
			}
			logger().Info("build round", "round", r+1, "side", side, "seconds", sec)
		}
	}
	names, _ := image.NamesOfKind(images.FS, "machine")
	s.pairs = append(s.pairs, Pair{Group: "Machines", Name: fmt.Sprintf("build of the %d machines (%s) over the base", len(names), strings.Join(names, ", ")),
		Baseline: "one after another", Berth: fmt.Sprintf("berth build, %d at a time", n), Unit: "s", A: a, B: b, LowerIsBetter: true,
		Note:  fmt.Sprintf("fleet.Parallel() is one per CPU, at most four: %d on this machine. Sources are the test fixtures (internal/fleet/testdata; the real ones are on GitHub); packages, npm and pnpm come from their registries each time", n),
		Repro: "./mage build   # berth installs the machines over the base as many at a time as fleet.Parallel() says"})
	return nil
}

// footprint is step 5. Footprint of the compiled binary.
func (s *session) footprint(ovEnv env) error {
	ctx, o := s.ctx, s.o
	if o.Binary != "" {
		for _, target := range []string{"demo:switch", "demo:upgrade"} {
			cmd := exec.CommandContext(ctx, o.Binary, target)
			cmd.Env = append(ovEnv.list(), "BERTH_DEBUG=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %w: %s", target, err, run.Tail(out, 5))
			}
			self, ok := peakRSS(out)
			if !ok {
				return fmt.Errorf("%s: no %s line in its output: %s", target, peakKey, run.Tail(out, 5))
			}
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			s.pairs = append(s.pairs,
				Pair{Group: "Footprint", Name: "berth " + target + ": peak RSS of berth itself", Baseline: "none (no baseline)", Berth: "compiled berth binary",
					Unit: "MB", B: []float64{self}, LowerIsBetter: true, Repro: "BERTH_DEBUG=1 berth " + target + " 2>&1 | grep " + peakKey,
					Note: "getrusage(RUSAGE_SELF) ru_maxrss, logged by berth as it ends: its own threads only. wait4's figure for the same run, which also counts the largest command it ran (apt inside the container), was " + fmt.Sprintf("%.1f MB", float64(ru.Maxrss)/1024)},
				Pair{Group: "Footprint", Name: "berth " + target + ": CPU time (user+system, with its children)", Baseline: "none (no baseline)",
					Berth: "compiled berth binary", Unit: "s", B: []float64{cpu.Seconds()}, LowerIsBetter: true,
					Note: "CPU time includes the commands it waited for (lxc-start, apt inside the container for the upgrade)"})
		}
	}
	return nil
}

// write writes the latency chart and BENCHMARKS.md into Options.Out.
func (s *session) write(facts Facts, runs []Run) error {
	o := s.o
	chart := "benchmarks-latency.svg"
	f, err := os.Create(filepath.Join(o.Out, chart))
	if err != nil {
		return err
	}
	if err := SVG(f, runs, 1000, 420); err != nil {
		return err
	}
	f.Close()
	md, err := os.Create(filepath.Join(o.Out, "BENCHMARKS.md"))
	if err != nil {
		return err
	}
	defer md.Close()
	return Markdown(md, facts, s.pairs, runs, chart, fmt.Sprintf("./mage prereqs base:build\nBENCH_ROUNDS=%d BENCH_SWITCHES=%d ./mage bench", o.Rounds, o.Switches))
}

// order is the sides 0..n-1 of round r, rotated so that each side goes first in turn.
func order(r, n int) []int {
	var o []int
	for i := range n {
		o = append(o, (r+i)%n)
	}
	return o
}

func debArch(goarch string) string {
	if goarch == "arm64" {
		return "arm64"
	}
	return "amd64"
}

func du(dir string) string {
	out, err := run.Output(context.Background(), "du", "-sh", "--apparent-size", dir)
	if err != nil {
		return "?"
	}
	return strings.Fields(out)[0] + "B"
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

func freeSubnet() netip.Prefix {
	for {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + rand.IntN(50)), byte(rand.IntN(250)), 0}), 24)
		if hostnet.CheckOverlap(p, "") == nil {
			return p
		}
	}
}

func machineFacts(dir string) Facts {
	cpu, _ := run.Output(context.Background(), "sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; nproc")
	mem, _ := run.Output(context.Background(), "sh", "-c", "free -h | awk '/Mem:/ {print $2}'")
	fs, _ := run.Output(context.Background(), "findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", dir)
	kernel, _ := run.Output(context.Background(), "uname", "-r")
	return Facts{CPU: strings.Join(strings.Fields(cpu), " ") + " cores", Memory: mem, FS: fs + " (plus btrfs and xfs on loop devices)",
		Kernel: kernel, Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
}

// loop sends GET requests at a constant rate, each on a new connection, and records every one.
type loop struct {
	start time.Time
	mu    sync.Mutex
	reqs  []Latency
	done  chan struct{}
	wg    sync.WaitGroup
}

func startLoop(url string, perSecond int) *loop {
	l := &loop{start: time.Now(), done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for {
			select {
			case <-l.done:
				return
			case <-tick.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				at := time.Now()
				resp, err := client.Get(url)
				failed := err != nil
				if err == nil {
					failed = resp.StatusCode != 200
					resp.Body.Close()
				}
				l.mu.Lock()
				l.reqs = append(l.reqs, Latency{At: at.Sub(l.start), Took: time.Since(at), Failed: failed})
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

func (l *loop) since() time.Duration { return time.Since(l.start) }

func (l *loop) stop() []Latency {
	close(l.done)
	l.wg.Wait()
	return l.reqs
}

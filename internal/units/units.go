// Package units generates the systemd units that run berth's scheduled and boot-time jobs (instead of the
// original's hand-written cron lines and Type=forking service), writes them into a directory, and checks
// them with systemd-analyze. It does not talk to systemd: internal/units/install installs, enables and
// removes them through systemd's D-Bus API.
//
// What is generated from the configuration (Generate), all running the compiled binary at [Paths] Binary
// with a target name as argument (never go or mage), reading $BERTH_CONFIG and the optional
// /etc/berth/berth.env:
//
//	berth-demo.service                 demo:start at boot, demo:stop at shutdown (oneshot, RemainAfterExit)
//	berth-demo-switch.timer/.service   demo:switch every [Demo] SwitchEvery; a failure starts the repair
//	berth-demo-upgrade.timer/.service  demo:upgrade nightly at [Demo] UpgradeAt, caught up after downtime
//	berth-demo-restore-crash.service   demo:restoreCrash, started by OnFailure= of the switch and the demo
//	berth-demo-renew.timer/.service    demo:renew daily (randomized within an hour, caught up after downtime)
//	berth-relay-renew.timer/.service   relay:renew daily (randomized within an hour, caught up after downtime)
//	berth-machines.target              wants systemd-nspawn@<m>.service for each of [Relay] Machines; drop-ins
//	                                   systemd-nspawn@<m>.service.d/50-berth-order.conf order each machine
//	                                   after the one before it, so they start in [Relay] Machines order
//
// How the pieces relate:
//
//   - The demo's timers are WantedBy= and PartOf= berth-demo.service: starting the demo arms its rotation,
//     nightly upgrade and daily certificate renewal, `systemctl stop berth-demo` stops them (the original
//     commented its cron line out with sed, and left it that way when the repair died half-way). systemd 252
//     computes a restarted calendar timer's next elapse from its first activation, so starting the demo
//     again later runs one switch at once (seen in the test host); it waits for demo:start (After=) and is
//     an ordinary switch.
//   - The demo's jobs are skipped (ConditionPathExists=, not a failure) while neither LXC container
//     [Paths] LXC/<name>/config exists: units can be installed before demo:build, and on a host that runs
//     only the relay. One container missing is not a skip: the switch fails and the repair rebuilds it.
//   - A switch never collides with an upgrade. Their services do not use Conflicts= (a start would cancel
//     the other's running job), and no After= between the two (it only orders jobs that are queued at the
//     same moment, one way). Instead the timers never fire together (UpgradeCalendar moves the upgrade
//     off the switch ticks), and whatever still overlaps (an upgrade outlasting several switches, the
//     repair) is serialised by the one demo flock that demo:switch, demo:upgrade and demo:restoreCrash take,
//     whose waiter logs the holder. A switch that finds an upgrade (or a repair, build, start, renewal)
//     holding it skips its turn with one log line and exits 0 (no OnFailure= repair, no alert); the repair
//     waits for a running upgrade. Every TimeoutStartSec= is the job's lock wait plus its work
//     (internal/budget). All of them are After=berth-demo.service, so a job that fires while the demo is
//     being brought up at boot waits for it.
//   - Hardening: see ContainerJobHardening and RenewHardening.
package units

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"berth/internal/budget"
	"berth/internal/config"
	"berth/internal/systemd/unitname"
)

// The units berth generates.
const (
	Demo           = "berth-demo.service"
	Switch         = "berth-demo-switch.service"
	SwitchTimer    = "berth-demo-switch.timer"
	Upgrade        = "berth-demo-upgrade.service"
	UpgradeTimer   = "berth-demo-upgrade.timer"
	RestoreCrash   = "berth-demo-restore-crash.service"
	DemoRenew      = "berth-demo-renew.service"
	DemoRenewTimer = "berth-demo-renew.timer"
	Renew          = "berth-relay-renew.service"
	RenewTimer     = "berth-relay-renew.timer"
	Machines       = "berth-machines.target"
	Pull           = "berth-machines-pull.service"
	PullTimer      = "berth-machines-pull.timer"
)

// EnvFile holds optional BERTH_* overrides for the units (systemd's EnvironmentFile= syntax).
const EnvFile = "/etc/berth/berth.env"

// OrderDropIn is the name of the drop-in that orders a relay machine after the one before it.
const OrderDropIn = "50-berth-order.conf"

// Timeouts of the jobs (TimeoutStartSec=). The demo's come from internal/budget, where each is the job's
// wait for the demo's lock plus its work, the same figures the demo waits with.
var (
	SwitchTimeout       = budget.Switch.Timeout()
	UpgradeTimeout      = budget.Upgrade.Timeout()
	RestoreCrashTimeout = budget.RestoreCrash.Timeout()
	DemoStartTimeout    = budget.Start.Timeout()
	DemoStopTimeout     = budget.Stop.Timeout()
	DemoRenewTimeout    = budget.Renew.Timeout()
	RenewTimeout        = 15 * time.Minute
	PullTimeout         = 2 * time.Hour
)

// Option is one unit setting.
type Option struct{ Name, Value string }

// ContainerJobHardening is the sandboxing of the demo's jobs (berth-demo, switch, upgrade, restore-crash).
// These jobs start LXC containers that live on after the job has ended, and a container inherits from the
// job's process whatever is per process: seccomp filters, no_new_privs, the mount, UTS and other
// namespaces, the capability bounding set, the umask. (It does not stay in the job's cgroup: as root,
// LXC moves it into cgroups of its own, lxc.payload.<name> and lxc.monitor.<name>, so systemd does not
// kill it when the oneshot job ends, and the job's device policy does not follow it.) So only options that
// leave a full Debian system inside the container, and the host's mounts, devices and network to the job:
//
//   - SystemCallArchitectures=native, LockPersonality=yes, RestrictRealtime=yes: seccomp filters the
//     containers inherit; the demo's images are native-architecture Debian systems that neither run
//     foreign-architecture binaries, nor change their execution domain, nor ask for realtime scheduling.
//   - UMask=0022, explicit: upgrade hooks and the payload's upgrade run inside the container through an
//     attach that keeps the job's umask; 0077 would leave the guest's new files unreadable to its services.
//
// Left out on purpose, each for what it would break: NoNewPrivileges and RestrictSUIDSGID (sudo and setuid
// programs in the containers, dpkg installing them during the upgrade); ProtectHostname (its seccomp filter
// forbids sethostname, which LXC calls in every new container); PrivateTmp, ProtectHome, ProtectSystem,
// ProtectKernelLogs/Modules/Tunables, ProtectControlGroups (each gives the job a mount namespace of its
// own: mounts the demo engine makes would be invisible to the host and to the next job); ProtectClock and
// PrivateDevices (a device policy: loop devices, /dev/net/tun, /dev/fuse); MemoryDenyWriteExecute (JITs in
// the containers' apps); RestrictNamespaces, RestrictAddressFamilies and CapabilityBoundingSet (container
// runtime).
var ContainerJobHardening = []Option{
	{"SystemCallArchitectures", "native"},
	{"LockPersonality", "yes"},
	{"RestrictRealtime", "yes"},
	{"UMask", "0022"},
}

// RenewHardening is the sandboxing of relay:renew and demo:renew, which start no container: they read and
// write files under [Paths], talk to systemd over D-Bus, reach an ACME server, and reload HAProxy: the
// demo's proxy with a signal, the relay's edge in its machine with `systemctl -M haproxy`, which enters the
// machine's namespaces with setns (so no RestrictNamespaces, no capability bounding set). ProtectHome=read-only
// is left out when one of berth's paths lies under /home, /root or /run/user (see Generate).
var RenewHardening = []Option{
	{"NoNewPrivileges", "yes"},
	{"PrivateTmp", "yes"},
	{"ProtectHome", "read-only"},
	{"ProtectClock", "yes"},
	{"ProtectKernelLogs", "yes"},
	{"ProtectKernelModules", "yes"},
	{"ProtectKernelTunables", "yes"},
	{"ProtectControlGroups", "yes"},
	{"ProtectHostname", "yes"},
	{"RestrictRealtime", "yes"},
	{"RestrictSUIDSGID", "yes"},
	{"LockPersonality", "yes"},
	{"SystemCallArchitectures", "native"},
	{"UMask", "0077"},
}

// File is one generated file: a unit, or a drop-in for another unit.
type File struct {
	Path    string   // relative to the units directory: "berth-demo.service", "systemd-nspawn@x.service.d/50-berth-order.conf"
	Comment []string // lines written as "# ..." above the settings
	Options []*unit.UnitOption
}

// Unit is the name of the unit the file configures (for a drop-in, the unit it extends).
func (f File) Unit() string {
	if dir, _, ok := strings.Cut(f.Path, "/"); ok {
		return strings.TrimSuffix(dir, ".d")
	}
	return f.Path
}

// DropIn says whether the file is a drop-in for a unit berth does not own.
func (f File) DropIn() bool { return strings.Contains(f.Path, "/") }

// Installable says whether the unit has an [Install] section (enable/disable apply to it).
func (f File) Installable() bool {
	return !f.DropIn() && slices.ContainsFunc(f.Options, func(o *unit.UnitOption) bool { return o.Section == "Install" })
}

// Values returns the values of section/name in order.
func (f File) Values(section, name string) []string {
	var out []string
	for _, o := range f.Options {
		if o.Section == section && o.Name == name {
			out = append(out, o.Value)
		}
	}
	return out
}

// Bytes is the file's content: the comment, then the settings as go-systemd serializes them.
func (f File) Bytes() []byte {
	var b bytes.Buffer
	for _, l := range f.Comment {
		b.WriteString(strings.TrimRight("# "+l, " ") + "\n")
	}
	if len(f.Comment) > 0 {
		b.WriteString("\n")
	}
	if _, err := b.ReadFrom(unit.Serialize(f.Options)); err != nil {
		panic(err) // reading from a bytes.Buffer does not fail
	}
	return b.Bytes()
}

const header = "Generated by berth (units:generate, units:install) from its configuration; changes here are overwritten."

// builder collects the options of one unit.
type builder struct{ opts []*unit.UnitOption }

func (b *builder) add(section, name string, values ...string) *builder {
	for _, v := range values {
		b.opts = append(b.opts, unit.NewUnitOption(section, name, v))
	}
	return b
}

func (b *builder) unit(name string, values ...string) *builder {
	return b.add("Unit", name, values...)
}

func (b *builder) service(name string, values ...string) *builder {
	return b.add("Service", name, values...)
}

func (b *builder) hardening(set []Option) *builder {
	for _, o := range set {
		b.service(o.Name, o.Value)
	}
	return b
}

// Generate returns the files for configuration c, sorted by path. It is pure: the same configuration
// always gives the same bytes.
func Generate(c *config.Config) ([]File, error) {
	if err := checkPaths(c); err != nil {
		return nil, err
	}
	cfgFile, err := filepath.Abs(c.File)
	if err != nil {
		return nil, err
	}
	g := &generator{c: c, cfgFile: cfgFile}
	if err := g.demo(); err != nil {
		return nil, err
	}
	g.renew()
	g.machines()
	g.pull()
	slices.SortFunc(g.files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return g.files, nil
}

// generator collects the files Generate makes from one configuration.
type generator struct {
	c       *config.Config
	cfgFile string // absolute BERTH_CONFIG
	files   []File
}

// job makes b a service running target: the compiled binary with a target, the configuration it was
// generated from, the optional overrides file.
func (g *generator) job(b *builder, target string, timeout time.Duration) *builder {
	b.service("Type", "oneshot").
		service("Environment", quoteArg("BERTH_CONFIG="+g.cfgFile)).
		service("EnvironmentFile", "-"+EnvFile).
		service("ExecStart", execLine(g.c.Paths.Binary, target)).
		service("TimeoutStartSec", Span(timeout))
	return b
}

func (g *generator) add(path string, comment []string, b *builder) {
	g.files = append(g.files, File{Path: path, Comment: append([]string{header}, comment...), Options: b.opts})
}

// demo adds the demo's units: berth-demo.service, the switch and the upgrade with their timers, the repair.
func (g *generator) demo() error {
	c, job, add := g.c, g.job, g.add
	switchCal, err := SwitchCalendar(c.Demo.SwitchEvery)
	if err != nil {
		return err
	}
	upgradeCal, upgradeNote, err := UpgradeCalendar(c.Demo.UpgradeAt, c.Demo.SwitchEvery)
	if err != nil {
		return err
	}
	every := Span(c.Demo.SwitchEvery)
	// The demo's jobs: skipped while neither container exists (the demo is not built here).
	var built []string
	for _, name := range c.Demo.Containers {
		built = append(built, "|"+escapeSpecifiers(filepath.Join(c.Paths.LXC, name, "config")))
	}
	demoUnit := func(b *builder, desc string, after ...string) *builder {
		return b.unit("Description", desc).
			unit("Wants", "network-online.target").
			// lxc.service loads LXC's AppArmor profiles; at shutdown it stops every container, after ours.
			unit("After", strings.Join(append([]string{"network-online.target", "lxc.service"}, after...), " "))
	}

	b := demoUnit(&builder{}, "berth demo: bring the demo up at boot and down at shutdown")
	b.unit("OnFailure", RestoreCrash).unit("ConditionPathExists", built...)
	job(b, "demo:start", DemoStartTimeout).
		service("RemainAfterExit", "yes").
		service("ExecStop", execLine(c.Paths.Binary, "demo:stop")).
		service("TimeoutStopSec", Span(DemoStopTimeout)).
		hardening(ContainerJobHardening).
		add("Install", "WantedBy", "multi-user.target")
	add(Demo, []string{"Its timers (switch, upgrade) are wanted by it and part of it: stopping the demo stops its rotation."}, b)

	b = demoUnit(&builder{}, "berth demo: switch to the idle container", Demo).
		unit("OnFailure", RestoreCrash).
		unit("ConditionPathExists", built...)
	job(b, "demo:switch", SwitchTimeout).hardening(ContainerJobHardening)
	add(Switch, []string{"Started by " + SwitchTimer + "; a failure starts " + RestoreCrash + "."}, b)

	b = (&builder{}).unit("Description", "berth demo: switch every "+every).unit("PartOf", Demo).
		add("Timer", "OnCalendar", switchCal...).
		add("Timer", "AccuracySec", "1s").
		// A missed switch is not made up at boot: berth-demo.service has just brought the demo up.
		add("Timer", "Persistent", "false").
		add("Install", "WantedBy", Demo)
	add(SwitchTimer, []string{"Every " + every + " ([Demo] SwitchEvery), at the same times every day."}, b)

	b = demoUnit(&builder{}, "berth demo: nightly upgrade through upgrade.d", Demo).
		unit("ConditionPathExists", built...)
	job(b, "demo:upgrade", UpgradeTimeout).hardening(ContainerJobHardening)
	add(Upgrade, []string{"Started by " + UpgradeTimer + ". It rolls back and alerts by itself: no OnFailure=."}, b)

	upgradeDesc, upgradeComment := "berth demo: nightly upgrade at "+c.Demo.UpgradeAt, []string{"Nightly at [Demo] UpgradeAt " + c.Demo.UpgradeAt + "; missed runs are caught up at boot."}
	if upgradeNote != "" {
		at := strings.TrimPrefix(upgradeCal, "*-*-* ")
		upgradeDesc = "berth demo: nightly upgrade at " + at
		upgradeComment = append(upgradeComment, upgradeNote+", at "+at+".")
	}
	b = (&builder{}).unit("Description", upgradeDesc).unit("PartOf", Demo).
		add("Timer", "OnCalendar", upgradeCal).
		add("Timer", "AccuracySec", "1s").
		add("Timer", "Persistent", "true").
		add("Install", "WantedBy", Demo)
	add(UpgradeTimer, upgradeComment, b)

	b = demoUnit(&builder{}, "berth demo: repair crashed containers", Demo).
		unit("ConditionPathExists", built...)
	job(b, "demo:restoreCrash", RestoreCrashTimeout).hardening(ContainerJobHardening)
	add(RestoreCrash, []string{"Started by OnFailure= of " + Switch + " and " + Demo + ", or by hand."}, b)

	// The certificate: like relay:renew, it starts no container (RenewHardening); it reloads the demo's
	// proxy, a process of the host.
	hardening, note := g.renewHardening()
	b = demoUnit(&builder{}, "berth demo: renew the TLS certificate when it is due", Demo).
		unit("ConditionPathExists", built...)
	job(b, "demo:renew", DemoRenewTimeout).hardening(hardening)
	add(DemoRenew, append([]string{"Started by " + DemoRenewTimer + "."}, note...), b)
	b = (&builder{}).unit("Description", "berth demo: daily certificate renewal").unit("PartOf", Demo).
		add("Timer", "OnCalendar", "daily").
		add("Timer", "RandomizedDelaySec", "1h").
		add("Timer", "Persistent", "true").
		add("Install", "WantedBy", Demo)
	add(DemoRenewTimer, []string{"A certificate with fewer than 30 days left is replaced ([Demo] ACMEDirectory, or self-signed)."}, b)
	return nil
}

// renewHardening is RenewHardening without ProtectHome= when one of berth's paths lies under a home
// directory, with the note that says so.
func (g *generator) renewHardening() ([]Option, []string) {
	if p := homePath(g.c); p != "" {
		return slices.DeleteFunc(slices.Clone(RenewHardening), func(o Option) bool { return o.Name == "ProtectHome" }),
			[]string{"No ProtectHome=: " + p + " is under a home directory."}
	}
	return RenewHardening, nil
}

// renew adds the certificate renewal and its timer.
func (g *generator) renew() {
	c, job, add := g.c, g.job, g.add
	renewHardening, note := g.renewHardening()
	b := (&builder{}).unit("Description", "berth relay: renew the TLS certificate when it is due").
		unit("Wants", "network-online.target").
		unit("After", "network-online.target "+Machines).
		// Nothing to renew before relay:configure has run.
		unit("ConditionPathExists", escapeSpecifiers(filepath.Join(c.Paths.State, "relay", "secrets.env")))
	job(b, "relay:renew", RenewTimeout).hardening(renewHardening)
	add(Renew, append([]string{"Started by " + RenewTimer + "."}, note...), b)

	b = (&builder{}).unit("Description", "berth relay: daily certificate renewal").
		add("Timer", "OnCalendar", "daily").
		add("Timer", "RandomizedDelaySec", "1h").
		add("Timer", "Persistent", "true").
		add("Install", "WantedBy", "timers.target")
	add(RenewTimer, nil, b)
}

// pull adds berth-machines-pull.service and its timer when [Publish] PullEvery is set: new published builds
// are pulled and the machines restarted one at a time, each waited on through its health check, stopping at
// the first failure with an alert.
func (g *generator) pull() {
	c := g.c
	if c.Publish.PullEvery == 0 {
		return
	}
	b := (&builder{}).unit("Description", "berth machines: pull new published builds, one machine at a time").
		unit("Wants", "network-online.target").
		unit("After", "network-online.target "+Machines)
	g.job(b, "pull", PullTimeout)
	g.add(Pull, []string{"Started by " + PullTimer + " ([Publish] PullEvery)."}, b)
	b = (&builder{}).unit("Description", "berth machines: pull new builds every "+Span(c.Publish.PullEvery)).
		add("Timer", "OnBootSec", Span(c.Publish.PullEvery)).
		add("Timer", "OnUnitActiveSec", Span(c.Publish.PullEvery)).
		add("Timer", "RandomizedDelaySec", Span(c.Publish.PullEvery/10)).
		add("Install", "WantedBy", "timers.target")
	g.add(PullTimer, nil, b)
}

// machines adds berth-machines.target and the drop-ins that order the relay machines.
func (g *generator) machines() {
	c, add := g.c, g.add
	var wants []string
	for _, m := range c.Relay.Machines {
		wants = append(wants, unitname.NSpawn(m))
	}
	b := (&builder{}).unit("Description", "berth relay machines: "+strings.Join(c.Relay.Machines, ", ")).
		unit("Wants", strings.Join(wants, " ")).
		unit("After", strings.Join(wants, " ")).
		add("Install", "WantedBy", "multi-user.target")
	add(Machines, []string{"Starts the relay machines at boot; the " + OrderDropIn + " drop-ins start them in [Relay] Machines order."}, b)
	for i := 1; i < len(c.Relay.Machines); i++ {
		prev, m := c.Relay.Machines[i-1], c.Relay.Machines[i]
		b = (&builder{}).unit("After", unitname.NSpawn(prev))
		add(unitname.NSpawn(m)+".d/"+OrderDropIn, []string{"[Relay] Machines order: " + m + " starts after " + prev + " when both start together (at boot)."}, b)
	}
}

// DefaultConfig is the configuration units/ is generated from: every default, no environment, and
// BERTH_CONFIG at its default path.
func DefaultConfig() (*config.Config, error) {
	dir, err := os.MkdirTemp("", "berth-units-defaults-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	c, err := config.LoadFrom(filepath.Join(dir, "absent.conf"), func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, err
	}
	c.File = config.DefaultPath
	return c, nil
}

// checkPaths refuses paths that cannot be written into a unit file as they are.
func checkPaths(c *config.Config) error {
	for _, p := range []struct{ key, v string }{{"[Paths] Binary", c.Paths.Binary}, {"[Paths] LXC", c.Paths.LXC},
		{"[Paths] State", c.Paths.State}, {"BERTH_CONFIG", c.File}} {
		if strings.ContainsFunc(p.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("units: %s = %q: a path in a unit file cannot hold control characters", p.key, p.v)
		}
	}
	if c.File == "" {
		return errors.New("units: the configuration has no file path (BERTH_CONFIG)")
	}
	return nil
}

// homePath returns the first of berth's paths that ProtectHome= would make read-only, or "".
func homePath(c *config.Config) string {
	for _, p := range []string{c.Paths.State, c.Paths.Srv, c.Paths.Machines, c.Paths.NSpawn, c.Paths.Cache, c.Paths.LXC,
		c.Paths.Units, c.Paths.Binary, c.File} {
		for _, home := range []string{"/home", "/root", "/run/user"} {
			if p == home || strings.HasPrefix(p, home+"/") {
				return p
			}
		}
	}
	return ""
}

// execLine is a command line for ExecStart=/ExecStop=: each argument quoted when it needs to be, with
// systemd's specifier (%) and variable ($) characters escaped.
func execLine(argv ...string) string {
	var parts []string
	for _, a := range argv {
		parts = append(parts, strings.ReplaceAll(quoteArg(a), "$", "$$"))
	}
	return strings.Join(parts, " ")
}

// quoteArg quotes one word for a unit setting that splits on spaces (ExecStart=, Environment=), escaping %.
func quoteArg(s string) string {
	s = escapeSpecifiers(s)
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

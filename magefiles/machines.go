package main

import (
	"github.com/magefile/mage/mg"

	"berth/internal/fleet"
)

// machineDo runs a machine action with the operator's knobs; the generated namespaces call it too.
func machineDo(action, image string) error { return fleet.Do(action, image, knobs.fleet()) }

// Machine works on any image folder by name (machine:install haproxy, ...).
type Machine mg.Namespace

// Install builds <image> from the base into a staging copy and swaps it into [Paths] Machines/<image>
// (a running machine restarts on the new tree). PLAN=1 prints every step instead. BERTH_SOURCE_<NAME>=<path>
// replaces a git source with a local checkout or tarball; BERTH_IMAGES=<dir> reads image folders from dir
// instead of the ones compiled into berth.
func (Machine) Install(image string) error { return machineDo("install", image) }

// Clean stops the machine and removes its rootfs, .nspawn file and password; data under [Paths] Srv stays.
func (Machine) Clean(image string) error { return machineDo("clean", image) }

// Purge deletes the machine's data directories under [Paths] Srv after naming them; it needs CONFIRM=<image>.
func (Machine) Purge(image string) error { return machineDo("purge", image) }

// Console starts the machine if needed, prints where its root password is, and logs in.
func (Machine) Console(image string) error { return machineDo("console", image) }

// Start starts the machine through systemd (systemd-nspawn@<image>.service).
func (Machine) Start(image string) error { return machineDo("start", image) }

// Stop stops the machine.
func (Machine) Stop(image string) error { return machineDo("stop", image) }

// Status prints one table: machine, state, enabled, health, ports, image build time.
func (Machine) Status(image string) error { return machineDo("status", image) }

// Enable starts the machine at boot.
func (Machine) Enable(image string) error { return machineDo("enable", image) }

// Logs prints the machine's recent journal.
func (Machine) Logs(image string) error { return machineDo("logs", image) }

// Publish exports <image>'s installed tree (this host's secrets stripped) as a signed zstd tarball and uploads
// it to [Publish] Endpoint/Bucket/Prefix; index.json names it once every object is there. Credentials:
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the 0600 file [Publish] Credentials.
func (Machine) Publish(image string) error { return machineDo("publish", image) }

// Pull downloads <image>'s published build through systemd-importd (verified by [Publish] Verify), takes an
// install's host-side steps and swaps it in, restarting a running machine; the installed build is not pulled
// again unless FORCE=1.
func (Machine) Pull(image string) error { return machineDo("pull", image) }

package main

import (
	"os"
	"path/filepath"

	"github.com/magefile/mage/mg"

	"berth/internal/bench"
	"berth/internal/prereqs"
	"berth/internal/units/install"
)

// Bench measures berth side by side with the original algorithms and the plain tools in one run (base
// rootfs vs bare debootstrap and bare mmdebstrap, the nightly upgrade's tree work vs a full copy, base to machine vs cp -a on ext4/btrfs/xfs, demo reset vs lxc-snapshot -r, switch
// availability vs the original switch under a constant request rate, the binary's footprint), alternating
// the two sides round by round, and writes BENCHMARKS.md and benchmarks-latency.svg into the checkout.
// BENCH_ROUNDS (default 3) and BENCH_SWITCHES (default 20) size it. Needs root; takes about 20 minutes.
func Bench() error {
	mg.Deps(Prereqs)
	ctx := interruptible()
	if err := prereqs.Install(ctx, prereqs.Bench); err != nil {
		return err
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "berth-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "berth")
	if _, err := install.Binary(ctx, bin, wd); err != nil {
		return err
	}
	return bench.Measure(ctx, bench.Options{Rounds: knobs.BenchRounds, Switches: knobs.BenchSwitches, Out: wd, Binary: bin})
}

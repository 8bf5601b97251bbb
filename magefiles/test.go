package main

import (
	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"

	"berth/internal/prereqs"
)

// Test runs berth's tests in tiers: test:all (also `test`) is every test, test:unit the quick unit tier.
type Test mg.Namespace

// Aliases keeps `./mage test` the full suite.
var Aliases = map[string]interface{}{"test": Test.All}

// All installs what the tests need, then runs every test: unit tests, and as root the integration tests on
// real debootstrap, systemd-nspawn, LXC and a booted systemd test host. Rootfs tarballs are cached in
// BERTH_TEST_CACHE (default /var/cache/berth-test). TESTFLAGS adds flags to go test (e.g. TESTFLAGS=-short).
func (Test) All() error {
	mg.Deps(Prereqs)
	if err := prereqs.Install(interruptible(), prereqs.Test); err != nil {
		return err
	}
	if err := prereqs.InstallGoTools(interruptible()); err != nil {
		return err
	}
	return goTest("-timeout=60m")
}

// Unit runs the unit tier, `go test -short ./...`: no root, nothing installed, under a minute; integration and
// system tests skip (even under CI=true), and actionlint checks .github/workflows. TESTFLAGS adds flags.
func (Test) Unit() error { return goTest("-short", "-timeout=10m") }

// goTest runs go test on every package with TESTFLAGS, uncached.
func goTest(flags ...string) error {
	args := append([]string{"test", "-count=1"}, flags...)
	args = append(args, knobs.TestFlags...)
	return sh.RunV("go", append(args, "./...")...)
}

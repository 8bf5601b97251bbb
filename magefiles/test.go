package main

import (
	"os"
	"strings"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"

	"berth/internal/prereqs"
)

// Test installs what the tests need, then runs every test: unit tests, and as root the integration tests on
// real debootstrap, systemd-nspawn, LXC and a booted systemd test host. Rootfs tarballs are cached in
// BERTH_TEST_CACHE (default /var/cache/berth-test). TESTFLAGS adds flags to go test (e.g. TESTFLAGS=-short).
func Test() error {
	mg.Deps(Prereqs)
	if err := prereqs.Install(interruptible(), prereqs.Test); err != nil {
		return err
	}
	args := []string{"test", "-count=1", "-timeout=60m"}
	args = append(args, strings.Fields(os.Getenv("TESTFLAGS"))...)
	return sh.RunV("go", append(args, "./...")...)
}

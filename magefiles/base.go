package main

import (
	"fmt"
	"os"
	"time"

	"github.com/magefile/mage/mg"

	"berth/internal/base"
	"berth/internal/progress"
	"berth/internal/run"
)

// Base builds and opens the base rootfs every image starts from.
type Base mg.Namespace

// Build debootstraps [Base] Suite with systemd and dbus, upgrades it, installs the checksum-verified Go
// [Base] GoVersion and sets a random root password (kept 0600 under [Paths] State). Unchanged inputs reuse
// the existing base; FORCE=1 rebuilds from scratch. A failed build leaves the previous base untouched.
func (Base) Build() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := base.Build(ctx, c, base.Options{Force: knobs.Force})
	if err != nil {
		return err
	}
	state := "built"
	if res.Reused {
		state = "up to date"
	}
	fmt.Printf("base %s: %s (key %s) in %s\n", state, res.Dir, res.Key, time.Since(start).Round(time.Millisecond))
	return nil
}

// Clean removes the base rootfs, its password file and berth's caches. Nothing under [Paths] Srv is touched.
func (Base) Clean() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	removed, err := base.Clean(ctx, c)
	for _, p := range removed {
		fmt.Println("removed", p)
	}
	return err
}

// Console boots a throw-away copy of the base (the template itself is never modified) and logs in as root;
// it prints the root password on a terminal (where it is otherwise). Leave with Ctrl-] three times.
func (Base) Console() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	argv, err := base.ConsoleArgv(c)
	if err != nil {
		return err
	}
	if err := base.ShowPassword(os.Stdout, base.PasswordFile(c), progress.IsTerminal(os.Stdout)); err != nil {
		return err
	}
	return run.Interactive(ctx, 24*time.Hour, argv...)
}

// Shell opens a root shell in the base without booting it; changes are discarded on exit (edit rootfs/
// recipes and rebuild to change the base).
func (Base) Shell() error {
	ctx, c, err := setup()
	if err != nil {
		return err
	}
	argv, err := base.ShellArgv(c)
	if err != nil {
		return err
	}
	return run.Interactive(ctx, 24*time.Hour, argv...)
}

package main

import (
	"fmt"

	"berth/internal/prereqs"
)

// Prereqs installs the Debian packages berth needs on the host (only the missing ones, non-interactively)
// and writes the inotify and ephemeral-port sysctls to /etc/sysctl.d/60-berth.conf, applied at once.
func Prereqs() error {
	ctx := interruptible()
	if err := prereqs.Install(ctx, prereqs.Host); err != nil {
		return err
	}
	if err := prereqs.ApplySysctls(ctx, prereqs.SysctlFile); err != nil {
		return err
	}
	fmt.Println(prereqs.Report(ctx))
	return nil
}

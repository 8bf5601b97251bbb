package image

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth/internal/testutil"
)

// TestShippedScriptsPassShellcheck runs shellcheck on every shell script berth ships: the images' provision
// scripts (sourced by bash, so checked as bash) and executables, the base recipe and the upgrade.d hooks.
func TestShippedScriptsPassShellcheck(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		testutil.SkipOrFail(t, "needs shellcheck (Debian's package; ./mage test installs it)")
	}
	var scripts []string
	for _, top := range []string{"../../images", "../../rootfs", "../../upgrade.d"} {
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if strings.HasSuffix(p, ".sh") || bytes.HasPrefix(b, []byte("#!/bin/bash")) || bytes.HasPrefix(b, []byte("#!/bin/sh")) {
				scripts = append(scripts, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(scripts) < 10 {
		t.Fatalf("found only %d scripts: %v", len(scripts), scripts)
	}
	out, err := exec.Command("shellcheck", append([]string{"--shell=bash", "--external-sources"}, scripts...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
	t.Logf("shellcheck clean on %d scripts", len(scripts))
}

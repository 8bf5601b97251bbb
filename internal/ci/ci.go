// Package ci checks berth's CI definition: the GitHub Actions workflows under .github/workflows, linted with
// actionlint's Go API (and shellcheck on their run: scripts when it is installed), so that the unit tier
// fails on a broken workflow before GitHub ever sees it.
package ci

import (
	"io"
	"os/exec"
	"path/filepath"

	"github.com/rhysd/actionlint"
)

// Workflows is where the workflows live, relative to the checkout.
const Workflows = ".github/workflows"

// Lint lints every workflow under root/.github/workflows and returns actionlint's findings; out receives
// them formatted as actionlint prints them (file:line:col: message [rule], with the line).
func Lint(root string, out io.Writer) ([]*actionlint.Error, error) {
	opts := &actionlint.LinterOptions{WorkingDir: root}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		opts.Shellcheck = sc
	}
	l, err := actionlint.NewLinter(out, opts)
	if err != nil {
		return nil, err
	}
	return l.LintDir(filepath.Join(root, Workflows), nil)
}

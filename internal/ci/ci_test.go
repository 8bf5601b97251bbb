package ci

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth/internal/testutil"
)

// TestWorkflowsLint fails when actionlint finds anything in .github/workflows.
func TestWorkflowsLint(t *testing.T) {
	root := testutil.RepoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, Workflows, "*.yml"))
	if len(files) == 0 {
		t.Fatalf("no workflow under %s", Workflows)
	}
	var out bytes.Buffer
	errs, err := Lint(root, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("actionlint: %d problem(s) in %s:\n%s", len(errs), Workflows, out.String())
	}
}

// TestLintCatchesBrokenWorkflow: the same check fails on a broken workflow (an unknown input of setup-go, an
// undefined job in needs, a bad expression).
func TestLintCatchesBrokenWorkflow(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, Workflows)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	broken := `on: push
jobs:
  test:
    needs: nosuchjob
    runs-on: ubuntu-latest
    steps:
      - uses: actions/setup-go@v5
        with:
          go-version-fle: go.mod
      - run: echo ${{ github.nosuchthing }}
`
	if err := os.WriteFile(filepath.Join(dir, "ci.yml"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	errs, err := Lint(root, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nosuchjob", "go-version-fle", "nosuchthing"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("actionlint did not report %s; it said (%d):\n%s", want, len(errs), out.String())
		}
	}
}

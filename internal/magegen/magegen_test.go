package magegen

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth/internal/image"
	"berth/internal/testutil"
)

// TestImagesGenIsCurrent fails when magefiles/images_gen.go differs from what the generator makes from
// images/ now: an image folder without its namespace, or a namespace without its folder.
func TestImagesGenIsCurrent(t *testing.T) {
	root := testutil.RepoRoot(t)
	mf := filepath.Join(root, "magefiles")
	taken, err := Declared(mf, File)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate(os.DirFS(filepath.Join(root, "images")), taken)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mf, File))
	if err != nil {
		t.Fatalf("%v: run `go generate ./...` and commit the result", err)
	}
	machines, err := image.NamesOfKind(os.DirFS(filepath.Join(root, "images")), "machine")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, n := range machines {
		if !bytes.Contains(got, []byte("\ntype "+Namespace(n)+" mg.Namespace\n")) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 || !bytes.Equal(got, want) {
		t.Fatalf("magefiles/%s is stale (machine folders without a namespace: %q); regenerate it with `go generate ./...` and commit the result",
			File, missing)
	}
}

// writeImage makes images/<name>/image.conf under dir.
func writeImage(t *testing.T, dir, name, conf string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, "image.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNewFolderGetsNamespace: a new machine folder gets a namespace with every action; a container folder
// gets none; a folder whose namespace would clash with a magefile's target is refused by name.
func TestNewFolderGetsNamespace(t *testing.T) {
	dir := t.TempDir()
	writeImage(t, dir, "zeppelin", "[Image]\nDescription=A throw-away test machine\nPackages=nginx-light\n")
	writeImage(t, dir, "web-cache", "[Image]\nDescription=Another one\n")
	writeImage(t, dir, "democ", "[Image]\nDescription=A demo container\nKind=container\n")
	src, err := Generate(os.DirFS(dir), map[string]bool{"Build": true})
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	if !strings.HasPrefix(s, "// Code generated ") || !strings.Contains(s, "DO NOT EDIT.\n") {
		t.Errorf("no generated-code header:\n%s", s)
	}
	for _, a := range Actions {
		for _, want := range []string{
			"func (Zeppelin) " + a.Method + `() error { return machineDo("` + a.Action + `", "zeppelin") }`,
			"func (WebCache) " + a.Method + `() error { return machineDo("` + a.Action + `", "web-cache") }`,
		} {
			if !strings.Contains(s, want) {
				t.Errorf("missing %s in:\n%s", want, s)
			}
		}
	}
	if !strings.Contains(s, "// Zeppelin is the zeppelin machine (images/zeppelin): A throw-away test machine.\n") {
		t.Errorf("namespace doc:\n%s", s)
	}
	if strings.Contains(s, "Democ") {
		t.Errorf("a Kind=container folder got a machine namespace:\n%s", s)
	}

	writeImage(t, dir, "build", "[Image]\n")
	if _, err := Generate(os.DirFS(dir), map[string]bool{"Build": true}); err == nil || !strings.Contains(err.Error(), "image build") {
		t.Errorf("clash with the build target: %v", err)
	}

	empty, err := Generate(os.DirFS(t.TempDir()), nil)
	if err != nil || strings.Contains(string(empty), "import") {
		t.Errorf("no machine: %v\n%s", err, empty)
	}
}

// TestDeclaredSkipsIgnoredAndGenerated: the generator's own build-ignored main and the generated file do
// not count as clashes.
func TestDeclaredSkipsIgnoredAndGenerated(t *testing.T) {
	taken, err := Declared(filepath.Join(testutil.RepoRoot(t), "magefiles"), File)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Build", "Status", "Machine", "interruptible"} {
		if !taken[want] {
			t.Errorf("%s not declared: %v", want, taken)
		}
	}
	for _, not := range []string{"main", "Haproxy"} {
		if taken[not] {
			t.Errorf("%s counted (from gen_images.go or %s)", not, File)
		}
	}
}

// TestNewFolderEndToEnd is the promise itself, on a copy of the checkout: add images/zeppelin/image.conf, run
// `go generate ./...`, and Mage lists zeppelin:install and every other machine target; outside -short, berth
// compiled from the copy lists them too and plans `zeppelin:install` from the embedded folder, built with
// -trimpath so that its packages come from the build cache wherever the copy lives. On 2 busy cores: under 1 s
// with -short (a few seconds from a cold cache), 3 s in full once cached, about a minute from a cold cache.
func TestNewFolderEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	root := testutil.RepoRoot(t)
	tmp := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		from, to := filepath.Join(root, e.Name()), filepath.Join(tmp, e.Name())
		switch {
		case e.Name() == ".git":
		case e.IsDir():
			if err := os.CopyFS(to, os.DirFS(from)); err != nil {
				t.Fatal(err)
			}
		case e.Type().IsRegular():
			copyFile(t, from, to)
		}
	}
	writeImage(t, filepath.Join(tmp, "images"), "zeppelin", "[Image]\nDescription=A throw-away test machine\nPackages=nginx-light\n")

	env := append(os.Environ(), "MAGEFILE_CACHE="+filepath.Join(tmp, ".magecache"))
	if !testing.Short() {
		// Compiling all of berth: without the copy's path in the cache keys, a second run reuses the first.
		env = append(env, "GOFLAGS=-trimpath")
	}
	goCmd := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir, cmd.Env = tmp, env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("go %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	goCmd("generate", "./...")
	if testing.Short() {
		// The unit tier stops at what `./mage -l` shows (Mage parses the magefiles, it does not compile them):
		// compiling a copy of berth from a cold build cache takes a minute on two busy cores.
		checkList(t, goCmd("run", "mage.go", "-l"))
		return
	}
	// Compile berth as units:install does, and ask the binary.
	bin := filepath.Join(tmp, "berth")
	goCmd("run", "mage.go", "-compile", bin)
	out, err := exec.Command(bin, "-l").CombinedOutput()
	if err != nil {
		t.Fatalf("berth -l: %v\n%s", err, out)
	}
	checkList(t, string(out))
	// The folder is compiled in without being named anywhere: the binary plans its build.
	plan := exec.Command(bin, "zeppelin:install")
	plan.Env = append(os.Environ(), "PLAN=1", "BERTH_CONFIG="+filepath.Join(tmp, "none.conf"))
	for _, k := range []string{"MACHINES", "NSPAWN", "SRV", "STATE", "CACHE"} {
		plan.Env = append(plan.Env, "BERTH_PATHS_"+k+"="+filepath.Join(tmp, strings.ToLower(k)))
	}
	out, err = plan.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "zeppelin: step 1/") || !strings.Contains(string(out), "apt-get install nginx-light") {
		t.Errorf("PLAN=1 berth zeppelin:install: %v\n%s", err, out)
	}
}

// checkList checks a target listing: every zeppelin target, no demo container's.
func checkList(t *testing.T, list string) {
	t.Helper()
	for _, a := range Actions {
		if want := "zeppelin:" + strings.ToLower(a.Method[:1]) + a.Method[1:]; !strings.Contains(list, want) {
			t.Errorf("the listing lacks %s:\n%s", want, list)
		}
	}
	if strings.Contains(list, "demoWeb:") || strings.Contains(list, "yunohost:") {
		t.Errorf("a demo container got machine targets:\n%s", list)
	}
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, to, data)
}

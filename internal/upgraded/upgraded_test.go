package upgraded

import (
	"berth/internal/testutil"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
)

var writeHook = testutil.WriteScript

// newHooks returns Hooks over a fresh tmp/upgrade.d, logging to tmp/log, with ORDER naming a shared file.
func newHooks(t *testing.T) (Hooks, string) {
	t.Helper()
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "upgrade.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	order := filepath.Join(tmp, "order")
	return Hooks{Dir: dir, LogDir: filepath.Join(tmp, "log"), Timeout: 20 * time.Second,
		Env: map[string]string{"ORDER": order}}, order
}

func hookReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func hookNames(results []HookResult) []string {
	var n []string
	for _, r := range results {
		n = append(n, r.Name)
	}
	return n
}

func TestHooksOrderAndIgnoredNames(t *testing.T) {
	h, order := newHooks(t)
	for _, name := range []string{"20-b", "10-a", "always/50-y", "always/40-x", "Constant_upgrade/10-z",
		".hidden", "_off", "README", "exemple", "30-c~", "40-d.swp", "sub/10-deep", "always/.x", "always/README.md"} {
		writeHook(t, h.Dir, name, `echo `+name+` >>"$ORDER"`, 0o755)
	}
	writeHook(t, h.Dir, "README.md", "not a hook", 0o644)
	want := []string{"10-a", "20-b", "always/40-x", "always/50-y", "Constant_upgrade/10-z"}
	if p, err := h.Pending(); err != nil || !reflect.DeepEqual(p, want[:2]) {
		t.Fatalf("Pending = %v, %v", p, err)
	}
	if a, err := h.AlwaysHooks(); err != nil || !reflect.DeepEqual(a, want[2:]) {
		t.Fatalf("AlwaysHooks = %v, %v", a, err)
	}
	if err := h.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	results := h.Run(context.Background(), "demo1", nil)
	if got := hookNames(results); !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if got := strings.Fields(hookReadFile(t, order)); !reflect.DeepEqual(got, want) {
		t.Fatalf("order file %v, want %v", got, want)
	}
	for i, r := range results {
		if r.Err != nil || r.Always != (i >= 2) || r.Log != filepath.Join(h.LogDir, r.Name+".log") {
			t.Errorf("result %+v", r)
		}
	}

	// Nothing moved by Run; the always hooks stay on a second run, minus skipped names.
	if err := os.Remove(order); err != nil {
		t.Fatal(err)
	}
	results = h.Run(context.Background(), "demo1", map[string]bool{"20-b": true, "always/40-x": true})
	want = []string{"10-a", "always/50-y", "Constant_upgrade/10-z"}
	if got := hookNames(results); !reflect.DeepEqual(got, want) {
		t.Fatalf("second run %v, want %v", got, want)
	}
	if got := strings.Fields(hookReadFile(t, order)); !reflect.DeepEqual(got, want) {
		t.Fatalf("second order file %v, want %v", got, want)
	}
}

func TestHooksArgumentsEnvStdinCwd(t *testing.T) {
	h, _ := newHooks(t)
	out := filepath.Join(t.TempDir(), "out")
	h.Env["DEMO_VAR"] = "hello world"
	h.Env["OUT"] = out
	writeHook(t, h.Dir, "10-args", `printf '%s|%s|%s|%s\n' "$#" "$1" "$DEMO_VAR" "$PATH" >"$OUT"
pwd >"$OUT.pwd"
readlink /proc/$$/fd/0 >"$OUT.fd0"
cat >"$OUT.stdin"
echo done`, 0o755)
	done := make(chan []HookResult)
	go func() { done <- h.Run(context.Background(), "demo2", nil) }()
	var results []HookResult
	select {
	case results = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("a hook reading stdin did not end")
	}
	if len(results) != 1 || results[0].Err != nil {
		t.Fatalf("results %+v", results)
	}
	if got, want := hookReadFile(t, out), "1|demo2|hello world|"+os.Getenv("PATH")+"\n"; got != want {
		t.Errorf("args and env %q, want %q", got, want)
	}
	if got := strings.TrimSpace(hookReadFile(t, out+".pwd")); got != h.Dir {
		t.Errorf("cwd %q, want %q", got, h.Dir)
	}
	if got := strings.TrimSpace(hookReadFile(t, out+".fd0")); got != "/dev/null" {
		t.Errorf("stdin is %q", got)
	}
	if got := hookReadFile(t, out+".stdin"); got != "" {
		t.Errorf("stdin gave %q", got)
	}
}

func TestHooksFailureKeepsGoingAndLogs(t *testing.T) {
	h, order := newHooks(t)
	writeHook(t, h.Dir, "10-fail", `echo 10-fail >>"$ORDER"; echo to-stdout; echo to-stderr >&2; exit 3`, 0o755)
	writeHook(t, h.Dir, "20-ok", `echo 20-ok >>"$ORDER"; echo ok-output`, 0o755)
	writeHook(t, h.Dir, "always/50-y", `echo always/50-y >>"$ORDER"; exit 1`, 0o755)
	results := h.Run(context.Background(), "demo1", nil)
	if got, want := strings.Fields(hookReadFile(t, order)), []string{"10-fail", "20-ok", "always/50-y"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if len(results) != 3 {
		t.Fatalf("results %+v", results)
	}
	fail := results[0]
	if fail.Err == nil {
		t.Fatal("failing hook reported no error")
	}
	msg := fail.Err.Error()
	for _, want := range []string{"10-fail", "exit status 3", fail.Log} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error %q is not one line", msg)
	}
	if results[1].Err != nil || results[2].Err == nil || !strings.Contains(results[2].Err.Error(), "always/50-y") {
		t.Errorf("results %+v", results)
	}
	log := hookReadFile(t, fail.Log)
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "demo1") || !strings.Contains(lines[0], time.Now().Format("2006-01-02")) ||
		!strings.Contains(lines[3], "exit status 3") || !strings.Contains(log, "to-stdout\n") || !strings.Contains(log, "to-stderr\n") {
		t.Errorf("log of the failing hook:\n%s", log)
	}
	if log := hookReadFile(t, filepath.Join(h.LogDir, "20-ok.log")); !strings.Contains(log, "ok-output") || !strings.Contains(log, "exit 0") {
		t.Errorf("log of the good hook:\n%s", log)
	}
	if st, err := os.Stat(filepath.Join(h.LogDir, "always", "50-y.log")); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("always hook log: %v %v", st, err)
	}
}

// hookPidGone reports whether pid no longer runs (a zombie waiting for a reaper counts as gone).
func hookPidGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

func TestHooksTimeoutKillsProcessGroup(t *testing.T) {
	h, _ := newHooks(t)
	h.Timeout = 300 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "pid")
	h.Env["PIDFILE"] = pidFile
	writeHook(t, h.Dir, "10-hang", `sleep 30 & echo $! >"$PIDFILE"; sleep 30`, 0o755)
	writeHook(t, h.Dir, "20-next", `echo next`, 0o755)
	start := time.Now()
	results := h.Run(context.Background(), "demo1", nil)
	if time.Since(start) > 20*time.Second {
		t.Fatalf("Run took %v", time.Since(start))
	}
	if len(results) != 2 || results[0].Err == nil || !strings.Contains(results[0].Err.Error(), "timed out") ||
		!strings.Contains(results[0].Err.Error(), "10-hang") || results[1].Err != nil {
		t.Fatalf("results %+v", results)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(hookReadFile(t, pidFile)))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !hookPidGone(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("background child %d of the timed-out hook still runs", pid)
		}
	}
	if log := hookReadFile(t, results[0].Log); !strings.Contains(log, "timed out") {
		t.Errorf("log:\n%s", log)
	}
}

func TestHooksCancelStops(t *testing.T) {
	h, _ := newHooks(t)
	writeHook(t, h.Dir, "10-hang", `sleep 30`, 0o755)
	writeHook(t, h.Dir, "20-next", `echo next`, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	results := h.Run(ctx, "demo1", nil)
	if len(results) != 1 || results[0].Err == nil || !strings.Contains(results[0].Err.Error(), "interrupted") {
		t.Fatalf("results %+v", results)
	}
}

func TestHooksCheck(t *testing.T) {
	h, _ := newHooks(t)
	if err := (Hooks{Dir: filepath.Join(h.Dir, "missing")}).Check(); err != nil {
		t.Fatalf("missing dir: %v", err)
	}
	if p, err := (Hooks{Dir: filepath.Join(h.Dir, "missing")}).Pending(); err != nil || len(p) != 0 {
		t.Fatalf("missing dir: %v %v", p, err)
	}
	writeHook(t, h.Dir, "README.md", "doc", 0o644)
	writeHook(t, h.Dir, ".notes", "doc", 0o600)
	writeHook(t, h.Dir, "archive/05-old", "old", 0o644)
	writeHook(t, h.Dir, "quarantine/06-bad", "bad", 0o644)
	writeHook(t, h.Dir, "20-ok", "true", 0o755)
	if err := h.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// Without the exec bit a hook runs with bash (as the original tool ran every hook): no refusal.
	writeHook(t, h.Dir, "always/50-y", "true", 0o600)
	writeHook(t, h.Dir, "10-x", "true", 0o644)
	if err := h.Check(); err != nil {
		t.Fatalf("Check with hooks lacking the exec bit: %v", err)
	}
	if err := os.Mkdir(filepath.Join(h.Dir, "always", "60-dir.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A directory is left out like any subdirectory; a FIFO is no hook at all.
	if err := syscall.Mkfifo(filepath.Join(h.Dir, "15-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Check(); err == nil || !strings.Contains(err.Error(), "hook upgrade.d/15-fifo is not a regular file") {
		t.Fatalf("Check with a FIFO: %v", err)
	}
}

// TestImportOriginal imports an original tool's upgrade.d (scripts without the exec bit, a failed one
// renamed *.fail, done ones in old_scripts/, repeated ones in Constant_upgrade/), then runs an upgrade's
// hooks for real: exactly the pending and the always ones run, bash running those without the exec bit; the
// successes and failures then land where the README says.
func TestImportOriginal(t *testing.T) {
	h, order := newHooks(t)
	orig := t.TempDir()
	script := func(rel, body string) {
		p := filepath.Join(orig, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("echo "+filepath.Base(rel)+" >> \"$ORDER\"\n"+body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script("01-pending", "")
	script("02-failing", "exit 4")
	script("03-broke.fail", "")
	script("old_scripts/00-done", "")
	script("Constant_upgrade/99-every-night", "")
	report, err := h.Import(orig)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("import:\n%s", strings.Join(report, "\n"))
	for _, p := range []string{"01-pending", "02-failing", "quarantine/03-broke", "archive/00-done", "always/99-every-night"} {
		if _, err := os.Stat(filepath.Join(h.Dir, p)); err != nil {
			t.Errorf("after import: %v", err)
		}
	}
	if again, _ := h.Import(orig); len(again) != 5 || !strings.Contains(strings.Join(again, "\n"), "kept") {
		t.Errorf("a second import overwrote something: %v", again)
	}
	if err := h.Check(); err != nil {
		t.Fatal(err)
	}
	h.Env = map[string]string{"ORDER": order}
	results := h.Run(context.Background(), "demo2", nil)
	if got := strings.Fields(hookReadFile(t, order)); !reflect.DeepEqual(got, []string{"01-pending", "02-failing", "99-every-night"}) {
		t.Fatalf("ran %v", got)
	}
	for _, r := range results {
		if r.Always {
			continue
		}
		move := h.Archive
		if r.Err != nil {
			move = h.Quarantine
		}
		if err := move(r.Name); err != nil {
			t.Fatal(err)
		}
	}
	arch, _ := h.Archived()
	quar, _ := h.Quarantined()
	if !reflect.DeepEqual(arch, []string{"00-done", "01-pending"}) || !reflect.DeepEqual(quar, []string{"02-failing", "03-broke"}) {
		t.Fatalf("archived %v, quarantined %v", arch, quar)
	}
	if log := hookReadFile(t, filepath.Join(h.LogDir, "01-pending.log")); !strings.Contains(log, "is not executable (mode 0644): run with bash") {
		t.Errorf("no warning line in the hook's log:\n%s", log)
	}
}

func TestHooksArchiveQuarantine(t *testing.T) {
	h, _ := newHooks(t)
	writeHook(t, h.Dir, "archive/.gitkeep", "", 0o644)
	writeHook(t, h.Dir, "always/50-y", "true", 0o755)
	stamped := regexp.MustCompile(`^10-a\.\d{8}-\d{4}$`)
	for i := 0; i < 3; i++ {
		writeHook(t, h.Dir, "10-a", "true", 0o755)
		if err := h.Archive("10-a"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(h.Dir, "10-a")); !os.IsNotExist(err) {
			t.Fatalf("10-a still pending: %v", err)
		}
	}
	archived, err := h.Archived()
	if err != nil || len(archived) != 3 || archived[0] != "10-a" || !stamped.MatchString(archived[1]) ||
		archived[2] != archived[1]+"-2" {
		t.Fatalf("Archived = %v, %v", archived, err)
	}

	for i := 0; i < 2; i++ {
		writeHook(t, h.Dir, "20-b", "exit 1", 0o755)
		if err := h.Quarantine("20-b"); err != nil {
			t.Fatal(err)
		}
	}
	q, err := h.Quarantined()
	if err != nil || len(q) != 2 || q[0] != "20-b" || !regexp.MustCompile(`^20-b\.\d{8}-\d{4}$`).MatchString(q[1]) {
		t.Fatalf("Quarantined = %v, %v", q, err)
	}
	if p, err := h.Pending(); err != nil || len(p) != 0 {
		t.Fatalf("Pending = %v, %v", p, err)
	}
	if results := h.Run(context.Background(), "demo1", nil); !reflect.DeepEqual(hookNames(results), []string{"always/50-y"}) {
		t.Fatalf("ran %v", hookNames(results))
	}

	for _, name := range []string{"always/50-y", "../x", "", "missing"} {
		if err := h.Quarantine(name); err == nil {
			t.Errorf("Quarantine(%q) succeeded", name)
		}
	}
	if _, err := os.Stat(filepath.Join(h.Dir, "always", "50-y")); err != nil {
		t.Fatalf("always hook moved: %v", err)
	}
}

func TestShippedUpgradeD(t *testing.T) {
	h := Hooks{Dir: filepath.Join(testutil.RepoRoot(t), "upgrade.d")}
	if err := h.Check(); err != nil {
		t.Fatalf("shipped upgrade.d: %v", err)
	}
	if p, err := h.Pending(); err != nil || len(p) != 0 {
		t.Errorf("shipped one-shot hooks %v, %v", p, err)
	}
	if a, err := h.AlwaysHooks(); err != nil || !reflect.DeepEqual(a, []string{"always/10-demo-login"}) {
		t.Errorf("shipped always hooks %v, %v", a, err)
	}
}

func TestInstall(t *testing.T) {
	h, _ := newHooks(t)
	shipped := fstest.MapFS{
		"always/10-a":  {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		"always/20-b":  {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		"30-oneshot":   {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		"40-done":      {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		"50-quarantin": {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		"always/60-ro": {Data: []byte("#!/bin/sh\n"), Mode: 0o444}, // as embedded files are
	}
	writeHook(t, h.Dir, "always/20-b", "# the operator's own", 0o700)
	writeHook(t, h.Dir, "archive/40-done", "", 0o755)
	writeHook(t, h.Dir, "quarantine/50-quarantin", "", 0o755)
	for range 2 {
		if err := h.Install(shipped); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := os.Stat(filepath.Join(h.Dir, "always/10-a")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("always/10-a: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(h.Dir, "always/60-ro")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("always/60-ro (embedded, 0444) is not installed executable: %v %v", st, err)
	}
	if left, _ := filepath.Glob(filepath.Join(h.Dir, ".shipped-*")); len(left) > 0 {
		t.Fatalf("staging left behind: %v", left)
	}
	if got := hookReadFile(t, filepath.Join(h.Dir, "always/20-b")); !strings.Contains(got, "the operator's own") {
		t.Fatalf("the operator's hook was replaced: %q", got)
	}
	if p, err := h.Pending(); err != nil || !reflect.DeepEqual(p, []string{"30-oneshot"}) {
		t.Fatalf("pending after Install: %v %v (archived and quarantined hooks come back?)", p, err)
	}
	if err := h.Check(); err != nil {
		t.Fatal(err)
	}
}

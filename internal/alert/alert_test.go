package alert

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSend(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "command-got")
	s := Sender{Component: "demo", Log: filepath.Join(dir, "alerts.log"),
		Command: []string{"/bin/sh", "-c", `cat > "$0"; echo "env: $BERTH_ALERT" >> "$0"`, out}}
	s.Send(context.Background(), "switch failed")
	s.Send(context.Background(), "again")
	log, _ := os.ReadFile(s.Log)
	if strings.Count(string(log), "\n") != 2 || !strings.Contains(string(log), " switch failed\n") {
		t.Errorf("alerts.log:\n%s", log)
	}
	if st, err := os.Stat(s.Log); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("alerts.log mode: %v %v", st, err)
	}
	if got, _ := os.ReadFile(out); string(got) != "again\nenv: again\n" {
		t.Errorf("the command got %q", got)
	}
	// A failing command does not panic or block; the log still gets the alert.
	Sender{Component: "demo", Log: s.Log, Command: []string{"/bin/false"}}.Send(context.Background(), "third")
	if log, _ := os.ReadFile(s.Log); !strings.Contains(string(log), " third\n") {
		t.Errorf("alerts.log after a failing command:\n%s", log)
	}
}

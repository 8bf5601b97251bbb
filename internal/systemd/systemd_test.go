package systemd

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestConnectWithoutSystemd(t *testing.T) {
	old := RunDir
	RunDir = filepath.Join(t.TempDir(), "absent")
	t.Cleanup(func() { RunDir = old })
	if _, err := Connect(context.Background()); !errors.Is(err, ErrNoSystemd) {
		t.Fatalf("Connect: %v, want ErrNoSystemd", err)
	}
	if err := Run(context.Background(), "start", "x.service", 0); !errors.Is(err, ErrNoSystemd) {
		t.Fatalf("Run: %v, want ErrNoSystemd", err)
	}
}

func TestJobUnknownVerb(t *testing.T) {
	err := Job(context.Background(), nil, "kill", "x.service", 0)
	if err == nil || err.Error() != "kill x.service: unknown job type" {
		t.Fatalf("Job: %v", err)
	}
}

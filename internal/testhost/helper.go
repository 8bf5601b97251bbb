package testhost

import (
	"context"
	"strings"
	"testing"
	"time"

	"berth/internal/testutil"
)

// New boots a test host for t and stops it when t ends. When a test host cannot run here (not root, a tool
// missing) it skips t with the reason, except under CI=true, where a missing prerequisite fails t instead.
// A host that fails to boot fails t with the tail of its boot log; when t fails, the cleanup logs that tail.
func New(t testing.TB, opts Options) *Host {
	t.Helper()
	Require(t)
	start := time.Now()
	h, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	state := "running"
	if h.Degraded != nil {
		state = "degraded, failed units: " + strings.Join(h.Degraded, ", ")
	}
	t.Logf("testhost %s: up in %s (boot %s), %s; rootfs %s", h.Name, time.Since(start).Round(time.Millisecond),
		h.BootTime.Round(time.Millisecond), state, h.Dir)
	t.Cleanup(func() {
		if tl := h.LogTail(40); t.Failed() && tl != "" {
			t.Logf("testhost %s: end of %s:\n%s", h.Name, h.Log, tl)
		}
		ctx, cancel := context.WithTimeout(context.Background(), StopTimeout+2*time.Minute)
		defer cancel()
		if err := h.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return h
}

// Require skips t, with the reason, when a test host cannot run here; under CI=true it fails t instead.
// Under -short (the unit tier) it always skips.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: system test in a booted test host, not part of the unit tier (-short)")
	}
	if err := Check(); err != nil {
		testutil.SkipOrFail(t, "testhost: "+err.Error())
	}
}

// Must runs argv in the guest and returns its output, trimmed; a failure fails t with the output.
func (h *Host) Must(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := h.Run(context.Background(), argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return strings.TrimSpace(out)
}

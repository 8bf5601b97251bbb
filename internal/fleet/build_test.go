package fleet

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBounded: at most n run at once, all run when all succeed; the first failure cancels the running ones,
// starts no more, and is the error returned (named after its machine), not the cancellations it caused.
func TestBounded(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e", "f"}
	var running, peak atomic.Int32
	var mu sync.Mutex
	var ran []string
	err := bounded(context.Background(), names, 2, func(ctx context.Context, name string) error {
		if now := running.Add(1); now > peak.Load() {
			peak.Store(now)
		}
		defer running.Add(-1)
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		ran = append(ran, name)
		mu.Unlock()
		return nil
	})
	if err != nil || len(ran) != len(names) || peak.Load() != 2 {
		t.Fatalf("all succeed: err %v, ran %v, peak %d (want 2)", err, ran, peak.Load())
	}

	ran = nil
	started := map[string]bool{}
	err = bounded(context.Background(), names, 2, func(ctx context.Context, name string) error {
		mu.Lock()
		started[name] = true
		mu.Unlock()
		if name == "b" {
			time.Sleep(10 * time.Millisecond)
			return errors.New("provision failed")
		}
		select { // a long install: stops when cancelled
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
			return nil
		}
	})
	if err == nil || err.Error() != "b: provision failed" {
		t.Fatalf("first failure: %v", err)
	}
	if started["c"] || started["d"] {
		t.Fatalf("names after the failure were started: %v", started)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := bounded(ctx, names, 2, func(ctx context.Context, name string) error { return ctx.Err() }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled by the caller: %v", err)
	}
	if err := bounded(context.Background(), []string{"x"}, 1, func(context.Context, string) error { return errors.New("x: named already") }); err == nil || strings.Count(err.Error(), "x:") != 1 {
		t.Fatalf("an error that names its machine is not named twice: %v", err)
	}
}

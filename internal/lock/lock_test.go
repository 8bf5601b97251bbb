package lock

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSecondHolderWaitsAndNamesTheFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.lock")
	ctx := context.Background()
	l, err := Acquire(ctx, path, "demo switch", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(ctx, path, "demo upgrade", 150*time.Millisecond)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())+" (demo switch)") {
		t.Fatalf("want a timeout naming the holder, got %v", err)
	}
	done := make(chan error)
	go func() {
		l2, err := Acquire(ctx, path, "demo upgrade", 5*time.Second)
		if err == nil {
			err = l2.Release()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	l.Release()
	if err := <-done; err != nil {
		t.Fatalf("waiter did not get the lock after release: %v", err)
	}
}

// TestLockDiesWithItsHolder: a process killed while holding the lock leaves nothing stale behind.
func TestLockDiesWithItsHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	cmd := exec.Command("flock", "--no-fork", path, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1) from util-linux: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := Acquire(context.Background(), path, "probe", 10*time.Millisecond)
		if err != nil {
			break // the child holds it now
		}
		l.Release()
		if time.Now().After(deadline) {
			t.Fatal("child never took the lock")
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := Acquire(context.Background(), path, "after kill", time.Second)
	if err != nil {
		t.Fatalf("lock stale after its holder was killed: %v", err)
	}
	l.Release()
}

// TestYieldToHolder: a waiter that yields to the holder's job gives up at once, naming the holder and since when.
func TestYieldToHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.lock")
	ctx := context.Background()
	l, err := Acquire(ctx, path, "demo upgrade", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	start := time.Now()
	_, err = AcquireOrYield(ctx, path, "demo switch", time.Minute, func(h Info) bool { return h.What == "demo upgrade" })
	var y *YieldError
	if !errors.As(err, &y) || y.Holder.Pid != os.Getpid() || y.Holder.What != "demo upgrade" || time.Since(y.Holder.Since) > time.Minute {
		t.Fatalf("want a YieldError naming this process's upgrade and its start, got %v (%+v)", err, y)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("yielding took %s", time.Since(start))
	}
	_, err = AcquireOrYield(ctx, path, "demo stop", 50*time.Millisecond, func(h Info) bool { return h.What == "demo switch" })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("a waiter that does not yield to this holder must time out, got %v", err)
	}
	t.Logf("yielded: %v", err)
}

// TestShared: installs cloning the base hold it together; a base build waits for them, and they wait for it.
func TestShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "base.lock")
	ctx := context.Background()
	a, err := AcquireShared(ctx, path, "a clones the base", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := AcquireShared(ctx, path, "b clones the base", 150*time.Millisecond)
	if err != nil {
		t.Fatalf("a second shared holder: %v", err)
	}
	if _, err := Acquire(ctx, path, "base build", 150*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("an exclusive holder beside shared ones: %v", err)
	}
	a.Release()
	b.Release()
	x, err := Acquire(ctx, path, "base build", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcquireShared(ctx, path, "c clones the base", 150*time.Millisecond); !errors.Is(err, ErrTimeout) ||
		!strings.Contains(err.Error(), "(base build)") {
		t.Fatalf("a shared holder beside an exclusive one: %v", err)
	}
	x.Release()
}

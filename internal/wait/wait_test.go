package wait

import (
	"context"
	"errors"
	"io/fs"
	"testing"
	"time"
)

func TestUntilHolds(t *testing.T) {
	n := 0
	err := Until(context.Background(), time.Second, time.Millisecond, func(context.Context) (bool, error) {
		n++
		return n == 3, nil
	})
	if err != nil || n != 3 {
		t.Fatalf("err %v after %d calls, want nil after 3", err, n)
	}
}

func TestUntilTimeoutKeepsLastError(t *testing.T) {
	n := 0
	err := Until(context.Background(), 20*time.Millisecond, time.Millisecond, func(context.Context) (bool, error) {
		n++
		return false, fs.ErrNotExist
	})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, fs.ErrNotExist) || err.Error() != fs.ErrNotExist.Error() {
		t.Fatalf("err %v, want the last error wrapped with ErrTimeout", err)
	}
	if n < 2 {
		t.Fatalf("%d calls, want it polled", n)
	}
	err = Until(context.Background(), 0, time.Millisecond, func(context.Context) (bool, error) { return false, nil })
	if !errors.Is(err, ErrTimeout) || err.Error() != "timed out after 0s" {
		t.Fatalf("err %v, want a bare timeout", err)
	}
}

func TestUntilGivesUp(t *testing.T) {
	n := 0
	stop := errors.New("broken")
	err := Until(context.Background(), time.Second, time.Millisecond, func(context.Context) (bool, error) {
		n++
		return true, stop
	})
	if err != stop || n != 1 {
		t.Fatalf("err %v after %d calls, want %v after 1", err, n, stop)
	}
}

func TestUntilContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	err := Until(ctx, time.Minute, 10*time.Millisecond, func(context.Context) (bool, error) {
		cancel()
		return false, errors.New("not yet")
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) || time.Since(start) > time.Second {
		t.Fatalf("err %v after %s, want context.Canceled at once", err, time.Since(start))
	}
}

// Package lock takes one flock per resource, with a timeout, and names the holder when it has to wait or give up.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"berth/internal/wait"
)

// Lock is a held lock; Release lets it go. The kernel releases it too if the process dies, so a crash never
// leaves a stale lock behind.
type Lock struct {
	f      *os.File
	path   string
	shared bool
}

// ErrTimeout is wrapped by Acquire's error when the lock stayed taken for the whole timeout.
var ErrTimeout = errors.New("lock timeout")

// Acquire takes the exclusive lock at path, waiting at most timeout. what describes the holder's job
// (for example "demo switch"); it is written into the lock file with the pid so that waiters can name it.
func Acquire(ctx context.Context, path, what string, timeout time.Duration) (*Lock, error) {
	return acquire(ctx, path, what, timeout, unix.LOCK_EX)
}

// AcquireShared takes the lock at path shared: any number of shared holders at once (jobs that only read
// the resource, such as installs cloning the base), none beside an exclusive holder (a job that replaces it).
// A shared holder does not write its name into the lock file, which names the last exclusive holder.
func AcquireShared(ctx context.Context, path, what string, timeout time.Duration) (*Lock, error) {
	return acquire(ctx, path, what, timeout, unix.LOCK_SH)
}

func acquire(ctx context.Context, path, what string, timeout time.Duration, how int) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	logged := false
	// A waiter tries every 10 ms (a flock call is cheap), so that it takes the lock right after the holder
	// lets go, before a job that starts later can: waiters run in the order they came, as a switch queued
	// behind an upgrade expects.
	err = wait.Until(ctx, timeout, 10*time.Millisecond, func(context.Context) (bool, error) {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return true, fmt.Errorf("lock %s: %w", path, err)
		}
		if !logged {
			logger().Info("waiting for lock", "lock", path, "held_by", Holder(path), "timeout", timeout)
			logged = true
		}
		return false, fmt.Errorf("lock %s is held by %s after waiting %s: %w", path, Holder(path), timeout, ErrTimeout)
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	if how == unix.LOCK_SH {
		return &Lock{f: f, path: path, shared: true}, nil
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(fmt.Sprintf("%d %s\n", os.Getpid(), what)), 0)
	}
	return &Lock{f: f, path: path}, nil
}

// Holder describes who holds the lock at path, as written by Acquire: "pid 123 (demo switch)".
func Holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "an unknown process"
	}
	pid, what, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if _, err := strconv.Atoi(pid); err != nil {
		return "an unknown process"
	}
	return fmt.Sprintf("pid %s (%s)", pid, what)
}

// Release lets the lock go. The file stays, so that its inode is the one every process locks.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	if !l.shared {
		l.f.Truncate(0)
	}
	err := l.f.Close()
	l.f = nil
	return err
}

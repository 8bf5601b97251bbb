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
	return acquire(ctx, path, what, timeout, unix.LOCK_EX, nil)
}

// Info is what a holder wrote into the lock file: its pid, its job and when it took the lock.
type Info struct {
	Pid   int
	What  string
	Since time.Time
}

func (i Info) String() string {
	if i.Pid == 0 {
		return "an unknown process"
	}
	return fmt.Sprintf("pid %d (%s)", i.Pid, i.What)
}

// YieldError is AcquireOrYield's error when the lock was held by a job the caller yields to.
type YieldError struct{ Holder Info }

func (e *YieldError) Error() string {
	return fmt.Sprintf("lock held by %s since %s", e.Holder, e.Holder.Since.Format(time.DateTime))
}

// AcquireOrYield is Acquire, except that while it waits it gives up at once with a *YieldError when
// yield(holder) says so (a switch does not wait out an upgrade: it skips its turn).
func AcquireOrYield(ctx context.Context, path, what string, timeout time.Duration, yield func(Info) bool) (*Lock, error) {
	return acquire(ctx, path, what, timeout, unix.LOCK_EX, yield)
}

// AcquireShared takes the lock at path shared: any number of shared holders at once (jobs that only read
// the resource, such as installs cloning the base), none beside an exclusive holder (a job that replaces it).
// A shared holder does not write its name into the lock file, which names the last exclusive holder.
func AcquireShared(ctx context.Context, path, what string, timeout time.Duration) (*Lock, error) {
	return acquire(ctx, path, what, timeout, unix.LOCK_SH, nil)
}

func acquire(ctx context.Context, path, what string, timeout time.Duration, how int, yield func(Info) bool) (*Lock, error) {
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
		if yield != nil {
			if h := Read(path); h.Pid != 0 && yield(h) {
				return true, &YieldError{Holder: h}
			}
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
		f.WriteAt([]byte(fmt.Sprintf("%d %s\nsince %s\n", os.Getpid(), what, time.Now().Format(time.RFC3339))), 0)
	}
	return &Lock{f: f, path: path}, nil
}

// Holder describes who holds the lock at path, as written by Acquire: "pid 123 (demo switch)".
func Holder(path string) string { return Read(path).String() }

// Read is what the holder of the lock at path wrote (a zero Info when nobody holds it or it cannot be read).
func Read(path string) Info {
	b, err := os.ReadFile(path)
	if err != nil {
		return Info{}
	}
	first, rest, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	pid, what, _ := strings.Cut(first, " ")
	n, err := strconv.Atoi(pid)
	if err != nil {
		return Info{}
	}
	i := Info{Pid: n, What: what}
	if s, ok := strings.CutPrefix(strings.TrimSpace(rest), "since "); ok {
		i.Since, _ = time.Parse(time.RFC3339, s)
	}
	return i
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

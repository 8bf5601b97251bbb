// Package run executes external commands with argv (never a shell string), a timeout on every call, and errors
// that carry the command line and the tail of its output.
package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultTimeout bounds a command whose Cmd sets no Timeout.
const DefaultTimeout = 10 * time.Minute

// Cmd describes one external command.
type Cmd struct {
	Argv    []string
	Dir     string
	Env     []string      // added to the environment of this process
	Stdin   io.Reader     // nil means /dev/null
	Stdout  io.Writer     // nil: captured and returned by Output; also tailed into errors
	Stderr  io.Writer     // nil: captured and tailed into errors
	Timeout time.Duration // 0 means DefaultTimeout
	Quiet   bool          // do not log the command line (for commands whose argv is not worth a line)
	Ignore  []string      // lines containing one of these are left out of error tails (known harmless noise)
}

// Error is returned when a command fails; it names the command and keeps the end of its output.
type Error struct {
	Argv   []string
	Err    error
	Output string // last lines of stderr (or stdout when stderr was empty)
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Argv, " "), e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// tailLines keeps the last n non-empty lines of b that contain none of ignore, joined with " | " so that an
// error stays one line.
func tailLines(b []byte, n int, ignore []string) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var kept []string
	for i := len(lines) - 1; i >= 0 && len(kept) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !slices.ContainsFunc(ignore, func(s string) bool { return strings.Contains(l, s) }) {
			kept = append([]string{l}, kept...)
		}
	}
	return strings.Join(kept, " | ")
}

// Tail is the last n non-empty lines of a command's output, joined with " | " (the tail errors carry), for
// callers that run a command themselves.
func Tail(b []byte, n int) string { return tailLines(b, n, nil) }

// Run runs c and returns its standard output when c.Stdout is nil.
func (c Cmd) Run(ctx context.Context) ([]byte, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("run: empty command")
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	cmd.Stdin = c.Stdin
	cmd.WaitDelay = 5 * time.Second
	// stdout is returned when the caller does not take it; both streams also feed the error's tail.
	var stdout, stderr, streamed SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if c.Stdout != nil {
		cmd.Stdout = io.MultiWriter(c.Stdout, &streamed)
	}
	if c.Stderr != nil {
		cmd.Stderr = io.MultiWriter(c.Stderr, &streamed)
	}
	if !c.Quiet {
		logger().Debug("run", "argv", strings.Join(c.Argv, " "))
	}
	err := cmd.Run()
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s", timeout)
		}
		out := tailLines(streamed.Bytes(), 5, c.Ignore)
		if c.Stderr == nil {
			out = tailLines(stderr.Bytes(), 5, c.Ignore)
		}
		if out == "" {
			out = tailLines(stdout.Bytes(), 5, c.Ignore)
		}
		return stdout.Bytes(), &Error{Argv: c.Argv, Err: err, Output: out}
	}
	return stdout.Bytes(), nil
}

// Command runs argv with the default timeout and returns its standard output.
func Command(ctx context.Context, argv ...string) ([]byte, error) {
	return Cmd{Argv: argv}.Run(ctx)
}

// Output runs argv and returns its trimmed standard output as a string.
func Output(ctx context.Context, argv ...string) (string, error) {
	out, err := Command(ctx, argv...)
	return strings.TrimSpace(string(out)), err
}

// Interactive runs argv attached to this process's terminal (stdin, stdout, stderr), for consoles and shells.
// timeout still bounds it, as for every command.
func Interactive(ctx context.Context, timeout time.Duration, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return &Error{Argv: argv, Err: err}
	}
	return nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers, such as the goroutines that copy a command's
// stdout and stderr.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Bytes()
}

// String returns the contents written so far.
func (b *SyncBuffer) String() string { return string(b.Bytes()) }

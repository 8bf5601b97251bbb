// Package wait polls a condition until it holds, a timeout passes or the context ends: the one poll loop
// that every wait-until in berth uses.
package wait

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrTimeout is wrapped by Until's error when the condition did not hold within the timeout.
var ErrTimeout = errors.New("timed out")

// Until calls cond at once and then every `every` until it reports done, at most timeout (a timeout of 0
// or less calls it once). done ends the wait with cond's error (nil: the condition holds; an error: give up
// now). Not done with an error means "not yet, and this is why": when the time is up, Until returns that
// last error as it is, wrapped so that errors.Is(err, ErrTimeout) holds; without one it says it timed out.
// When ctx ends first, Until returns ctx.Err().
func Until(ctx context.Context, timeout, every time.Duration, cond func(context.Context) (done bool, err error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := cond(ctx)
		if done {
			return err
		}
		if time.Now().After(deadline) {
			return &timeoutError{after: timeout, last: err}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

type timeoutError struct {
	after time.Duration
	last  error
}

func (e *timeoutError) Error() string {
	if e.last != nil {
		return e.last.Error()
	}
	return fmt.Sprintf("%v after %s", ErrTimeout, e.after)
}

func (e *timeoutError) Unwrap() []error {
	if e.last == nil {
		return []error{ErrTimeout}
	}
	return []error{ErrTimeout, e.last}
}

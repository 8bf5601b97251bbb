package fleet

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"berth/internal/config"
	"berth/internal/image"
)

// Parallel is how many machines `build` installs at once: one per CPU, at most four (each provision runs apt
// and often a compiler; more than that only makes them share the disk).
func Parallel() int { return min(max(runtime.NumCPU(), 1), 4) }

// installAll installs the machines names, up to n at a time. Each reports its steps with its own name
// (progress lines job=<name>:install, never a live terminal line that another would overwrite); the first
// failure cancels the others, which stop at their next command and leave their previous machine as it was
// (staging is removed, nothing is swapped), and is the error returned.
func installAll(ctx context.Context, c *config.Config, o Options, names []string, n int) error {
	fsys := o.images()
	return bounded(ctx, names, n, func(ctx context.Context, name string) error {
		m, err := image.Load(fsys, name)
		if err != nil {
			return err
		}
		return image.Install(ctx, c, fsys, name, image.Options{Sources: image.SourceOverrides(m, o.Sources), Plain: n > 1})
	})
}

// bounded runs f on each name, at most n at a time, in names' order. The first error cancels the context the
// others run with, starts no further name, and is returned (errors that only report the cancellation come
// later and are dropped by errgroup); it names the machine when f's error does not.
func bounded(ctx context.Context, names []string, n int, f func(context.Context, string) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(n, 1))
	for _, name := range names {
		g.Go(func() error {
			if err := ctx.Err(); err != nil { // a slot freed by the first failure: start nothing more
				return err
			}
			err := f(ctx, name)
			if err != nil && !strings.HasPrefix(err.Error(), name+":") {
				err = fmt.Errorf("%s: %w", name, err)
			}
			return err
		})
	}
	return g.Wait()
}

// machineOrder lists the machine images, [Relay] Machines first (the order All uses).
func machineOrder(c *config.Config, o Options) ([]string, error) {
	names, err := image.NamesOfKind(o.images(), "machine")
	var ordered []string
	for _, n := range append(slices.Clone(c.Relay.Machines), names...) {
		if slices.Contains(names, n) && !slices.Contains(ordered, n) {
			ordered = append(ordered, n)
		}
	}
	return ordered, err
}

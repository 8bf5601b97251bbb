// berth builds and operates containers on a Debian host: systemd-nspawn machines for a Nostr relay platform
// and a two-container LXC demo. Targets are thin wrappers over the engine in internal/.
//
// Configuration: $BERTH_CONFIG (default /etc/berth/berth.conf), overridden by BERTH_<SECTION>_<KEY>;
// `config:show` prints the effective values and their origins. Per-run knobs (PLAN, CONFIRM, FORCE,
// BERTH_IMAGES, BERTH_SOURCE_<NAME>, ...) are read once, in knobs.go.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"berth/internal/config"
)

func init() {
	level := slog.LevelInfo
	if knobs.Debug {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

// setup loads and validates the configuration before anything on the host changes, and returns a context
// cancelled by SIGINT/SIGTERM.
func setup() (context.Context, *config.Config, error) {
	c, err := config.Load()
	if err != nil {
		return nil, nil, err
	}
	return interruptible(), c, nil
}

// interruptible returns a context cancelled by SIGINT or SIGTERM, so that commands stop and clean up.
func interruptible() context.Context {
	ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	return ctx
}

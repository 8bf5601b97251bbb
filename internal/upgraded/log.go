package upgraded

import "log/slog"

// logger is the default logger (set by the magefiles when berth starts, so it is looked up at each call, not
// captured at init) with component=upgraded: constant messages, snake_case keys.
func logger() *slog.Logger { return slog.Default().With("component", "upgraded") }

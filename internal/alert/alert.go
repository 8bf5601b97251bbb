// Package alert reports a problem an operator must see: at error priority in the log (journald's "<3>"
// prefix when stderr is the journal), appended to a log file, and through an operator's command that gets
// the message on its standard input and in BERTH_ALERT.
package alert

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"berth/internal/run"
)

// Sender is where alerts of one component go.
type Sender struct {
	Component string   // "demo"
	Log       string   // file the alerts are appended to (0600)
	Command   []string // optional; run with the alert text
}

// Send reports msg; a failing command is logged, never returned: an alert must not fail what it reports on.
func (s Sender) Send(ctx context.Context, msg string) {
	slog.Error("alert", "component", s.Component, "alert", msg)
	if os.Getenv("JOURNAL_STREAM") != "" {
		fmt.Fprintf(os.Stderr, "<3>berth %s alert: %s\n", s.Component, msg)
	}
	if f, err := os.OpenFile(s.Log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		fmt.Fprintf(f, "%s %s\n", time.Now().Format(time.RFC3339), msg)
		f.Close()
	}
	if len(s.Command) > 0 {
		_, err := run.Cmd{Argv: s.Command, Stdin: strings.NewReader(msg + "\n"), Env: []string{"BERTH_ALERT=" + msg}, Timeout: time.Minute}.Run(ctx)
		if err != nil {
			slog.Error("alert command failed", "component", s.Component, "err", err)
		}
	}
}

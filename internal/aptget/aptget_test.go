package aptget

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestUpgradeSequence checks the steps and what a skipped source changes, over a recording runner (the
// real apt in a real container: internal/demo's TestDemoPayloadOnLXC).
func TestUpgradeSequence(t *testing.T) {
	for _, tc := range []struct {
		name       string
		update     string // what the update script prints
		updateErr  error
		skipped    []string
		sourcePart bool
		steps      int
	}{
		{"all reachable", "Hit:1 http://deb.debian.org/debian bookworm InRelease\n", nil, nil, false, 5},
		{"third-party skipped", "berth: apt-get update failed\nberth-skipped: sury.list yarn.list\n", nil, []string{"sury.list", "yarn.list"}, true, 5},
		{"debian fails", "E: Failed to fetch\n", errors.New("exit status 100"), nil, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ran [][]string
			exec := func(_ context.Context, out io.Writer, _ time.Duration, argv ...string) error {
				ran = append(ran, argv)
				if len(ran) == 1 {
					fmt.Fprint(out, tc.update)
					return tc.updateErr
				}
				return nil
			}
			var log bytes.Buffer
			skipped, err := Upgrade(context.Background(), exec, &log)
			if !errors.Is(err, tc.updateErr) || !slices.Equal(skipped, tc.skipped) || len(ran) != tc.steps {
				t.Fatalf("skipped %v, err %v, ran %v", skipped, err, ran)
			}
			if tc.steps > 1 {
				dist := strings.Join(ran[1], " ")
				if !strings.Contains(dist, "dist-upgrade") || !strings.Contains(dist, "--force-confold") ||
					strings.Contains(dist, "SourceParts="+reachable) != tc.sourcePart {
					t.Errorf("dist-upgrade: %s", dist)
				}
			}
			if !strings.Contains(log.String(), tc.update) || strings.Count(log.String(), "### ") != tc.steps {
				t.Errorf("log:\n%s", log.String())
			}
		})
	}
}

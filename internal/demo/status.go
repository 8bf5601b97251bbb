package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"berth/internal/image"
	"berth/internal/systemd"
	"berth/internal/units"
	"berth/internal/units/install"
)

// timers says whether the demo's timers are installed (units:install's manifest) and, when systemd answers,
// when the switch timer fires next (zero when it is not installed or not armed).
func (d *Demo) timers(ctx context.Context) (string, time.Time) {
	m, err := units.ReadManifest(install.ManifestPath(d.c))
	if err != nil {
		return "unknown: " + err.Error(), time.Time{}
	}
	var have []string
	for _, t := range []string{units.SwitchTimer, units.UpgradeTimer, units.DemoRenewTimer} {
		if slices.Contains(m, t) {
			have = append(have, t)
		}
	}
	if len(have) == 0 {
		return "not installed (run units:install): nothing switches or upgrades the demo by itself", time.Time{}
	}
	conn, err := systemd.Connect(ctx)
	if err != nil {
		return "installed (" + strings.Join(have, ", ") + "); " + err.Error(), time.Time{}
	}
	defer conn.Close()
	var states []string
	var next time.Time
	for _, t := range have {
		state := "unknown"
		if p, err := conn.GetUnitPropertyContext(ctx, t, "ActiveState"); err == nil {
			state = strings.Trim(p.Value.String(), `"`)
		}
		states = append(states, t+" "+state)
		if t != units.SwitchTimer || state != "active" {
			continue
		}
		if p, err := conn.GetUnitTypePropertyContext(ctx, t, "Timer", "NextElapseUSecRealtime"); err == nil {
			if us, ok := p.Value.Value().(uint64); ok && us > 0 {
				next = time.UnixMicro(int64(us))
			}
		}
	}
	return "installed: " + strings.Join(states, ", "), next
}

// apps is the per-app summary of the newest build log of [Demo] Image: its "app <name>: ..." lines and the
// "apps: N failed" total, as the image's provision script writes them (images/yunohost/apps); nil when the
// image installs no apps or no build log is left.
func (d *Demo) apps() ([]string, string) {
	return appSummary(image.LogDir(d.c), d.cfg.Image)
}

func appSummary(logDir, img string) ([]string, string) {
	logs, _ := filepath.Glob(filepath.Join(logDir, img+"-*.log"))
	if len(logs) == 0 {
		return nil, ""
	}
	newest := slices.Max(logs) // <image>-YYYYmmdd-HHMMSS.log: the names sort by time
	f, err := os.Open(newest)
	if err != nil {
		return nil, ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		// The log holds what the guest printed: only printable text is shown.
		l = strings.Map(func(r rune) rune {
			if unicode.IsPrint(r) {
				return r
			}
			return -1
		}, l)
		if name, rest, ok := strings.Cut(l, ": "); ok && strings.HasPrefix(name, "app ") && !strings.Contains(name[4:], " ") && rest != "" {
			lines = append(lines, l)
		} else if strings.HasPrefix(l, "apps: ") && strings.HasSuffix(l, " failed") {
			lines = append(lines, l)
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		lines = append(lines, "(a line of the build log is too long to read on)")
	}
	if len(lines) == 0 {
		return nil, ""
	}
	return lines, newest
}

// statusTimers are the rows Status shows about the timers: installed or not, and the next switch.
func (d *Demo) statusTimers(ctx context.Context) []string {
	state, next := d.timers(ctx)
	rows := []string{"timers\t" + state}
	switch {
	case !next.IsZero():
		rows = append(rows, "next switch\t"+next.Format("2006-01-02 15:04:05")+" (from "+units.SwitchTimer+")")
	case strings.HasPrefix(state, "installed ("):
		rows = append(rows, fmt.Sprintf("next switch\tabout %s (every %s, computed: systemd does not answer)",
			nextSwitch(time.Now(), d.cfg.SwitchEvery).Format("2006-01-02 15:04:05"), units.Span(d.cfg.SwitchEvery)))
	default:
		rows = append(rows, "next switch\tnone (no armed switch timer; [Demo] SwitchEvery "+units.Span(d.cfg.SwitchEvery)+" applies once the timers run)")
	}
	return rows
}

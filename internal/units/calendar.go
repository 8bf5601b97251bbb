package units

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SwitchCalendar returns the OnCalendar= expressions of a timer that fires every `every`, at the same
// times every day, the first at midnight. every must be whole minutes that divide a day (config guarantees
// it for [Demo] SwitchEvery). All expressions are in systemd's normalized form:
//
//	a divisor of an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30min)  *-*-* *:00/30:00
//	whole hours dividing a day (1, 2, 3, 4, 6, 8, 12h)              *-*-* 00/2:00:00
//	a day                                                           *-*-* 00:00:00
//
// Any other divisor of a day (such as 48min or 90min) is not one repetition of the minute or hour field:
// the ticks repeat every lcm(every, 1h), so there is one expression per tick within that cycle, each
// repeating its hour every lcm/1h hours (48min: *-*-* 00/4:00:00, *-*-* 00/4:48:00, *-*-* 01/4:36:00, ...),
// or not at all when the cycle is a day (288min: *-*-* 00:00:00, *-*-* 04:48:00, ...).
func SwitchCalendar(every time.Duration) ([]string, error) {
	m, err := dayMinutes(every)
	if err != nil {
		return nil, err
	}
	switch {
	case m == 24*60:
		return []string{"*-*-* 00:00:00"}, nil
	case m%60 == 0:
		return []string{fmt.Sprintf("*-*-* 00/%d:00:00", m/60)}, nil
	case 60%m == 0:
		return []string{fmt.Sprintf("*-*-* *:00/%d:00", m)}, nil
	}
	cycle := lcm(m, 60) // minutes; divides a day because both m and 60 do
	var out []string
	for t := 0; t < cycle; t += m {
		if cycle == 24*60 { // once a day: systemd refuses a repetition of 24h
			out = append(out, fmt.Sprintf("*-*-* %02d:%02d:00", t/60, t%60))
		} else {
			out = append(out, fmt.Sprintf("*-*-* %02d/%d:%02d:00", t/60, cycle/60, t%60))
		}
	}
	return out, nil
}

// UpgradeCalendar returns the OnCalendar= expression for the nightly upgrade at `at` (HH:MM), moved off the
// switch ticks of SwitchCalendar(every): when `at` falls on a switch, the upgrade starts half a period later
// (03:02 with a 2min switch: 03:03:00; with a 1min switch: 03:02:30), so that a switch and an upgrade are
// never started at the same second. note says why it moved ("" when it did not).
func UpgradeCalendar(at string, every time.Duration) (expr, note string, err error) {
	m, err := dayMinutes(every)
	if err != nil {
		return "", "", err
	}
	hh, mm, ok := strings.Cut(at, ":")
	h, err1 := strconv.Atoi(hh)
	mi, err2 := strconv.Atoi(mm)
	if !ok || err1 != nil || err2 != nil || len(hh) != 2 || len(mm) != 2 || h < 0 || h > 23 || mi < 0 || mi > 59 {
		return "", "", fmt.Errorf("units: upgrade time %q: expected HH:MM", at)
	}
	secs := (h*60 + mi) * 60
	if (h*60+mi)%m == 0 {
		secs += m * 30
		note = fmt.Sprintf("%s falls on a switch (every %s): the upgrade starts half a period later", at, Span(every))
	}
	return fmt.Sprintf("*-*-* %02d:%02d:%02d", secs/3600, secs/60%60, secs%60), note, nil
}

// dayMinutes checks that every is whole minutes dividing a day and returns the minutes.
func dayMinutes(every time.Duration) (int, error) {
	if every < time.Minute || every > 24*time.Hour || every%time.Minute != 0 || (24*time.Hour)%every != 0 {
		return 0, fmt.Errorf("units: switch period %s: expected whole minutes that divide a day", every)
	}
	return int(every / time.Minute), nil
}

// Span writes a duration of whole minutes the way systemd and berth's configuration do: 30min, 2h, 1h 30min.
func Span(d time.Duration) string {
	m := int(d / time.Minute)
	switch {
	case m%60 == 0:
		return fmt.Sprintf("%dh", m/60)
	case m < 60:
		return fmt.Sprintf("%dmin", m)
	}
	return fmt.Sprintf("%dh %dmin", m/60, m%60)
}

func lcm(a, b int) int {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}

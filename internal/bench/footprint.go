package bench

import (
	"regexp"
	"strconv"
	"syscall"
)

// peakKey is the log key of LogPeakRSS's figure, which the bench reads from the binary's output.
const peakKey = "peak_rss_self_kib"

// LogPeakRSS logs (debug level, BERTH_DEBUG=1) the peak resident set of this process alone: getrusage
// RUSAGE_SELF's ru_maxrss, in KiB, which counts every thread of berth and none of the commands it ran (a
// child's peak, apt's inside a container say, is in RUSAGE_CHILDREN and in wait4's figure for berth, not
// here). The demo targets call it as they end.
func LogPeakRSS() {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		logger().Debug("footprint", peakKey, ru.Maxrss)
	}
}

var peakRE = regexp.MustCompile(peakKey + `=(\d+)`)

// peakRSS reads the last LogPeakRSS figure from a run's output, in MB.
func peakRSS(out []byte) (float64, bool) {
	m := peakRE.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return 0, false
	}
	kib, err := strconv.ParseFloat(string(m[len(m)-1][1]), 64)
	return kib / 1024, err == nil
}

// Package aptget upgrades a running Debian system through a command runner (lxc-attach for a demo
// container): apt-get update, in which any index that cannot be fetched fails except a third-party source
// (sources.list.d) that does not answer, which is skipped and named; dist-upgrade keeping the configuration
// files; autoremove; clean.
package aptget

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"berth/internal/run"
)

// Exec runs argv inside the system, both output streams to out.
type Exec func(ctx context.Context, out io.Writer, timeout time.Duration, argv ...string) error

// reachable holds, inside the system, the third-party apt sources that answered (for this upgrade only).
const reachable = "/var/tmp/berth-apt-reachable"

// updateScript runs apt-get update so that any index that cannot be fetched fails; when one fails, it tries
// every third-party source alone, keeps those that answer in reachable, names the others on a
// "berth-skipped:" line, and updates again without them: what an installer added (sury, yarn) must not stop
// the nightly upgrade, but Debian's own suites must answer.
const updateScript = `apt-get -q --error-on=any update && exit 0
echo "berth: apt-get update failed; trying the third-party sources one by one"
rm -rf ` + reachable + ` && mkdir -p ` + reachable + `
skipped=""
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -e "$f" ] || continue
	one=$(mktemp -d)
	cp "$f" "$one/"
	if apt-get -q --error-on=any -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$one" update; then
		cp "$f" ` + reachable + `/
	else
		skipped="$skipped ${f##*/}"
	fi
	rm -rf "$one"
done
[ -n "$skipped" ] || { echo "berth: the index that fails is not a third-party source's"; exit 100; }
echo "berth-skipped:$skipped"
apt-get -q --error-on=any -o Dir::Etc::SourceParts=` + reachable + ` update
`

// Upgrade updates and upgrades the system, its output to log; it returns the third-party sources skipped.
func Upgrade(ctx context.Context, exec Exec, log io.Writer) (skipped []string, err error) {
	step := func(out io.Writer, argv ...string) error {
		fmt.Fprintf(log, "### %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
		return exec(ctx, out, time.Hour, argv...)
	}
	var out run.SyncBuffer
	if err := step(io.MultiWriter(log, &out), "/bin/bash", "-c", updateScript); err != nil {
		return nil, err
	}
	opts := []string{"-q", "-y", "-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef"}
	for _, l := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(l, "berth-skipped:"); ok {
			skipped = strings.Fields(rest)
			opts = append(opts, "-o", "Dir::Etc::SourceParts="+reachable)
		}
	}
	for _, argv := range [][]string{
		append(append([]string{"apt-get"}, opts...), "dist-upgrade"),
		append(append([]string{"apt-get"}, opts...), "autoremove", "--purge"),
		{"apt-get", "clean"},
		{"rm", "-rf", reachable},
	} {
		if err := step(log, argv...); err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

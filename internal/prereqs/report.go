package prereqs

import (
	"context"
	"fmt"
	"strings"

	lxc "github.com/lxc/go-lxc"

	"berth/internal/run"
)

// Report is one line naming the versions of the tools berth drives, liblxc as seen through go-lxc.
func Report(ctx context.Context) string {
	first := func(argv ...string) string {
		out, err := run.Output(ctx, argv...)
		if err != nil {
			return "missing"
		}
		line, _, _ := strings.Cut(out, "\n")
		return line
	}
	return fmt.Sprintf("debootstrap %s; %s; liblxc %s; %s",
		first("dpkg-query", "-W", "-f", "${Version}", "debootstrap"), first("systemd-nspawn", "--version"),
		lxc.Version(), first("haproxy", "-v"))
}

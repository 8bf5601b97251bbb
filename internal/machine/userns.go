package machine

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"berth/internal/lxc"
	"berth/internal/run"
)

// IDRange is a run of host uids (or gids): First and the Count after it.
type IDRange struct{ First, Count uint64 }

// Overlaps tells whether the two ranges share an id.
func (r IDRange) Overlaps(o IDRange) bool {
	return r.First < o.First+o.Count && o.First < r.First+r.Count
}

func (r IDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.First+r.Count-1) }

// DemoIDs are the host ids of the demo's unprivileged LXC containers (root:1000000:65536 in /etc/subuid).
var DemoIDs = IDRange{lxc.DemoIDBase, lxc.IDs}

// HostIDs parses a /proc/<pid>/uid_map: the host ids the namespace's ids map to. The identity map ("0 0
// 4294967295", no user namespace) is one range from 0.
func HostIDs(uidMap string) ([]IDRange, error) {
	var out []IDRange
	for _, line := range strings.Split(strings.TrimSpace(uidMap), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("uid_map line %q: expected three numbers", line)
		}
		outside, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 33)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("uid_map line %q: expected three numbers", line)
		}
		out = append(out, IDRange{outside, count})
	}
	return out, nil
}

// UserNamespace reads the host uids the running machine's init maps to (its leader's uid_map); ok is false
// without a user namespace (the identity map).
func UserNamespace(ctx context.Context, name string) (ids []IDRange, ok bool, err error) {
	leader, err := run.Output(ctx, "machinectl", "show", name, "--property=Leader", "--value")
	if err != nil {
		return nil, false, err
	}
	b, err := os.ReadFile("/proc/" + strings.TrimSpace(leader) + "/uid_map")
	if err != nil {
		return nil, false, fmt.Errorf("machine %s: its user namespace: %w", name, err)
	}
	if ids, err = HostIDs(string(b)); err != nil {
		return nil, false, err
	}
	return ids, !(len(ids) == 1 && ids[0].First == 0 && ids[0].Count == 1<<32-1), nil
}

// checkIDs refuses a machine that systemd-nspawn's PrivateUsers=pick gave host ids of the demo containers'
// range (nspawn knows nothing of /etc/subuid): root in one could then own the other's files. The machine is
// stopped and the error says what to do.
func checkIDs(ctx context.Context, name string) error {
	ids, userns, err := UserNamespace(ctx, name)
	if err != nil || !userns {
		return err
	}
	for _, r := range ids {
		if r.Overlaps(DemoIDs) {
			stopped := "stopped it"
			if err := Stop(ctx, name); err != nil {
				stopped = "could not stop it (" + err.Error() + ")"
			}
			return fmt.Errorf("machine %s: its user namespace got host uids %s, which overlap the demo containers' %s; %s: "+
				"give it a range of its own with [Exec] PrivateUsers=<first uid, a multiple of 65536>:65536 in its image.conf", name, r, DemoIDs, stopped)
		}
		logger().Info("machine runs in a user namespace", "machine", name, "host_uids", r.String())
	}
	return nil
}

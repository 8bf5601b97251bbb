package fleet

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"berth/internal/machine"
	"berth/internal/testhost"
)

// machineProc is one process of a running machine as the test host sees it.
type machineProc struct {
	pid, hostUID, uid int // uid is the one inside the machine's user namespace
	comm              string
}

// machineProcs reads the machine's init's uid_map and every process in its unit's cgroup but systemd-nspawn
// itself (the supervisor, the host's root by design): its uid on the host and inside.
func machineProcs(t *testing.T, h *testhost.Host, name string) (uidMap string, procs []machineProc) {
	t.Helper()
	const script = `leader=$(machinectl show "$1" --property=Leader --value)
cat /proc/"$leader"/uid_map
echo ---
cg=/sys/fs/cgroup$(systemctl show --property=ControlGroup --value "systemd-nspawn@$1.service")
for p in $(find "$cg" -name cgroup.procs -exec cat {} +); do
	[ -r /proc/"$p"/status ] || continue
	printf '%s %s %s\n' "$p" "$(awk '/^Uid:/{print $2}' /proc/"$p"/status)" "$(tr -d '\n' </proc/"$p"/comm | tr ' ' _)"
done`
	out, err := h.Run(context.Background(), "sh", "-c", script, "sh", name)
	if err != nil {
		t.Fatalf("the processes of machine %s: %v\n%s", name, err, out)
	}
	uidMap, list, _ := strings.Cut(out, "---\n")
	ids, err := machine.HostIDs(uidMap)
	if err != nil || len(ids) == 0 {
		t.Fatalf("machine %s: uid_map %q: %v", name, uidMap, err)
	}
	shift := int(ids[0].First)
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] == "systemd-nspawn" {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		uid, _ := strconv.Atoi(f[1])
		procs = append(procs, machineProc{pid: pid, hostUID: uid, uid: uid - shift, comm: f[2]})
	}
	if len(procs) == 0 {
		t.Fatalf("machine %s: no processes found:\n%s", name, out)
	}
	return strings.Join(strings.Fields(uidMap), " "), procs
}

// assertUserNS: the machine's init runs in a user namespace of its own (not the identity map, not the demo
// containers' ids), none of its processes is the host's root, and each of services (process names) runs and
// is not root inside the machine either.
func assertUserNS(t *testing.T, h *testhost.Host, name string, services ...string) []machineProc {
	t.Helper()
	uidMap, procs := machineProcs(t, h, name)
	ids, _ := machine.HostIDs(uidMap)
	if len(ids) != 1 || ids[0].First == 0 || ids[0].Count != 65536 || ids[0].Overlaps(machine.DemoIDs) {
		t.Fatalf("machine %s: uid_map %q: want 65536 ids of its own, clear of 0 and of the demo's %s", name, uidMap, machine.DemoIDs)
	}
	var owners []string
	for _, p := range procs {
		if p.hostUID == 0 {
			t.Fatalf("machine %s: %s (pid %d) is uid 0 on the host", name, p.comm, p.pid)
		}
		owners = append(owners, p.comm+"="+strconv.Itoa(p.uid)+"/"+strconv.Itoa(p.hostUID))
	}
	for _, s := range services {
		found := false
		for _, p := range procs {
			if p.comm == s {
				found = true
				if p.uid == 0 {
					t.Fatalf("machine %s: %s (pid %d) runs as root inside the machine", name, s, p.pid)
				}
			}
		}
		if !found {
			t.Fatalf("machine %s: no %s process among %v", name, s, owners)
		}
	}
	t.Logf("userns figure: %s: uid_map %q; processes (name=uid inside/uid on the host): %s", name, uidMap, strings.Join(owners, " "))
	return procs
}

package machine_test

import (
	"testing"

	"berth/internal/machine"
)

// TestHostIDs: a uid_map's host ranges, and which of systemd-nspawn's pick ranges (multiples of 0x10000 from
// 0x80000) meet the demo containers' ids (1000000-1065535).
func TestHostIDs(t *testing.T) {
	ids, err := machine.HostIDs("         0     983040      65536\n")
	if err != nil || len(ids) != 1 || ids[0] != (machine.IDRange{First: 983040, Count: 65536}) {
		t.Fatalf("HostIDs: %v %v", ids, err)
	}
	if ids, err := machine.HostIDs("0 0 4294967295"); err != nil || ids[0].First != 0 || ids[0].Count != 1<<32-1 {
		t.Fatalf("identity map: %v %v", ids, err)
	}
	if _, err := machine.HostIDs("0 x 65536"); err == nil {
		t.Fatal("a bad uid_map line was accepted")
	}
	for base, want := range map[uint64]bool{0xE0000: false, 0xF0000: true, 0x100000: true, 0x110000: false} {
		if got := (machine.IDRange{First: base, Count: 65536}).Overlaps(machine.DemoIDs); got != want {
			t.Errorf("pick range %#x overlaps the demo's %s: %v, want %v", base, machine.DemoIDs, got, want)
		}
	}
}

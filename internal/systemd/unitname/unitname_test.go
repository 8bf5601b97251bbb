package unitname

import "testing"

func TestNSpawn(t *testing.T) {
	if got := NSpawn("mysql"); got != "systemd-nspawn@mysql.service" {
		t.Errorf("NSpawn(mysql) = %s", got)
	}
	if MachinesTarget != "machines.target" {
		t.Errorf("MachinesTarget = %s", MachinesTarget)
	}
}

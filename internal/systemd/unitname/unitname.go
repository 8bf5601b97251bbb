// Package unitname names the systemd units berth controls but does not generate itself. It imports no
// D-Bus, so that the unit generator and the D-Bus code share the names.
package unitname

// NSpawn is the unit that runs machine: the instance of systemd-nspawn@.service.
func NSpawn(machine string) string { return "systemd-nspawn@" + machine + ".service" }

// MachinesTarget is systemd's target that wants the machines enabled to start at boot.
const MachinesTarget = "machines.target"

package lxc

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestConfig(t *testing.T) {
	c := Container{Path: "/var/lib/lxc", Name: "demo1", Log: "/var/lib/berth/demo/logs/demo1.lxc.log"}
	n := Net{Bridge: "berthdemo0", Addr: netip.MustParsePrefix("10.1.5.3/24"), Gateway: netip.MustParseAddr("10.1.5.1")}
	cfg := c.Config("dir:/var/lib/lxc/demo1/rootfs", n)
	for _, want := range []string{
		"lxc.uts.name = demo1\n", "lxc.rootfs.path = dir:/var/lib/lxc/demo1/rootfs\n", "lxc.net.0.link = berthdemo0\n",
		"lxc.net.0.ipv4.address = 10.1.5.3/24\n", "lxc.net.0.ipv4.gateway = 10.1.5.1\n",
		"lxc.log.file = /var/lib/berth/demo/logs/demo1.lxc.log\n", "lxc.net.0.hwaddr = 02:",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if again := c.Config("dir:/var/lib/lxc/demo1/rootfs", n); again != cfg {
		t.Error("two renderings differ")
	}
	// The veth name and the MAC address differ per container and bridge, and the veth name fits IFNAMSIZ.
	other := Container{Name: "demo2"}.Config("dir:x", n)
	pair := func(s string) string {
		_, v, _ := strings.Cut(s, "lxc.net.0.veth.pair = ")
		v, _, _ = strings.Cut(v, "\n")
		return v
	}
	mac := func(s string) string {
		_, v, _ := strings.Cut(s, "lxc.net.0.hwaddr = ")
		v, _, _ = strings.Cut(v, "\n")
		return v
	}
	if pair(cfg) == pair(other) || mac(cfg) == mac(other) || len(pair(cfg)) > 15 {
		t.Errorf("veth %q/%q, hwaddr %q/%q", pair(cfg), pair(other), mac(cfg), mac(other))
	}
}

func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	c := Container{Path: filepath.Join(dir, "lxc"), Name: "demo1", Log: filepath.Join(dir, "state", "logs", "demo1.lxc.log")}
	n := Net{Bridge: "br0", Addr: netip.MustParsePrefix("10.1.5.3/24"), Gateway: netip.MustParseAddr("10.1.5.1")}
	if err := c.WriteConfig("dir:/x", n); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "lxc", "demo1", "config"))
	if err != nil || string(b) != c.Config("dir:/x", n) {
		t.Fatalf("config file: %v\n%s", err, b)
	}
	if st, err := os.Stat(filepath.Join(dir, "state", "logs")); err != nil || !st.IsDir() {
		t.Fatalf("log directory: %v", err)
	}
	// The same configuration again is not rewritten (same inode); another one is.
	ino := func() uint64 {
		st, err := os.Stat(filepath.Join(dir, "lxc", "demo1", "config"))
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	before := ino()
	if err := c.WriteConfig("dir:/x", n); err != nil || ino() != before {
		t.Fatalf("unchanged configuration rewritten: %v", err)
	}
	if err := c.WriteConfig("dir:/y", n); err != nil || ino() == before {
		t.Fatalf("changed configuration not written: %v", err)
	}
}

func TestConfigUnprivileged(t *testing.T) {
	n := Net{Bridge: "br0", Addr: netip.MustParsePrefix("10.1.5.3/24"), Gateway: netip.MustParseAddr("10.1.5.1")}
	c := Container{Path: "/var/lib/lxc", Name: "demo1", Log: "/l", IDBase: 1000000, Limits: Limits{Memory: 2 << 30, CPUs: 1.5, Tasks: 1024}}
	cfg := c.Config("overlay:/g:/d", n)
	for _, want := range []string{"lxc.include = /usr/share/lxc/config/userns.conf\n", "lxc.idmap = u 0 1000000 65536\n",
		"lxc.idmap = g 0 1000000 65536\n", c.Limits.lines(hostCgroups())} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "unconfined") || strings.Contains(cfg, "apparmor") != AppArmor() {
		t.Errorf("AppArmor (enabled here: %v):\n%s", AppArmor(), cfg)
	}
	if priv := (Container{Name: "b"}).Config("dir:/x", n); strings.Contains(priv, "idmap") || !strings.Contains(priv, "unconfined") {
		t.Errorf("privileged builder:\n%s", priv)
	}
}

func TestLimitLines(t *testing.T) {
	l := Limits{Memory: 2 << 30, CPUs: 1.5, Tasks: 1024}
	all := map[string]bool{"memory": true, "cpu": true, "pids": true}
	if got := l.lines(cgroups{v2: all}); got != "lxc.cgroup2.memory.max = 2147483648\nlxc.cgroup2.cpu.max = 150000 100000\nlxc.cgroup2.pids.max = 1024\n" {
		t.Errorf("v2:\n%s", got)
	}
	if got := l.lines(cgroups{v1: all}); got != "lxc.cgroup.memory.limit_in_bytes = 2147483648\nlxc.cgroup.cpu.cfs_period_us = 100000\nlxc.cgroup.cpu.cfs_quota_us = 150000\nlxc.cgroup.pids.max = 1024\n" {
		t.Errorf("v1:\n%s", got)
	}
	if got := l.lines(cgroups{v2: map[string]bool{"pids": true}}); got != "lxc.cgroup2.pids.max = 1024\n" {
		t.Errorf("only pids offered:\n%s", got)
	}
}

func TestLogCause(t *testing.T) {
	log := filepath.Join(t.TempDir(), "demo1.lxc.log")
	os.WriteFile(log, []byte(`lxc-start demo1 20261123191245.882 ERROR    utils - ../src/lxc/utils.c:mkdir_p:236 - Permission denied - Failed to create directory "/var/lib/lxc/demo1/work"
lxc-start demo1 20261123191245.882 ERROR    conf - ../src/lxc/conf.c:lxc_setup:4375 - Failed to setup rootfs
lxc-start demo1 20261123191245.882 ERROR    sync - ../src/lxc/sync.c:sync_wait:34 - An error occurred in another process (expected sequence number 3)
lxc-start demo1 20261123191245.882 ERROR    lxccontainer - ../src/lxc/lxccontainer.c:wait_on_daemonized_start:878 - Received container state "ABORTING" instead of "RUNNING"
lxc-start demo1 20261123191245.883 ERROR    start - ../src/lxc/start.c:__lxc_start:2107 - Failed to spawn container "demo1"
`), 0o644)
	got := Container{Name: "demo1", Log: log}.logCause()
	if got != `Permission denied - Failed to create directory "/var/lib/lxc/demo1/work" | Failed to setup rootfs` {
		t.Errorf("cause: %q", got)
	}
}

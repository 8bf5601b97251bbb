package demo

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// outside is a network namespace the test makes to stand for a place a container might reach through
// the host: a veth from the host (hostCIDR on the host's side) to the namespace, whose addresses are
// nsCIDRs (the first is the veth's, the others on its loopback), with a route on the host to each, and a
// TCP listener on every port of ports on every address, answering "ok".
func outside(t *testing.T, hostCIDR string, nsCIDRs []string, ports ...int) {
	t.Helper()
	name := fmt.Sprintf("bto%04x", rand.IntN(1<<16))
	hostIP, _, _ := strings.Cut(hostCIDR, "/")
	nsIP, _, _ := strings.Cut(nsCIDRs[0], "/")
	must := func(argv ...string) {
		t.Helper()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	must("ip", "netns", "add", name)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", name).Run()
		exec.Command("ip", "link", "del", name+"h").Run()
	})
	must("ip", "link", "add", name+"h", "type", "veth", "peer", "name", name+"n")
	must("ip", "link", "set", name+"n", "netns", name)
	must("ip", "addr", "add", hostCIDR, "dev", name+"h")
	must("ip", "link", "set", name+"h", "up")
	must("ip", "-n", name, "addr", "add", nsCIDRs[0], "dev", name+"n")
	must("ip", "-n", name, "link", "set", name+"n", "up")
	must("ip", "-n", name, "link", "set", "lo", "up")
	must("ip", "-n", name, "route", "add", "default", "via", hostIP)
	for _, extra := range nsCIDRs[1:] {
		must("ip", "-n", name, "addr", "add", extra, "dev", "lo")
		must("ip", "route", "add", extra, "via", nsIP)
	}
	for _, cidr := range nsCIDRs {
		ip, _, _ := strings.Cut(cidr, "/")
		for _, port := range ports {
			l := listenIn(t, "/run/netns/"+name, net.JoinHostPort(ip, fmt.Sprint(port)))
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("ok\n"))
					c.Close()
				}
			}()
			t.Cleanup(func() { l.Close() })
		}
	}
}

// listenIn listens on addr inside the network namespace at nsPath (a socket belongs to the namespace of
// the thread that makes it).
func listenIn(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // the thread ends with the goroutine: it never serves another in the namespace
		ns, err := os.Open(nsPath)
		if err == nil {
			err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
			ns.Close()
		}
		var l net.Listener
		if err == nil {
			l, err = net.Listen("tcp", addr)
		}
		ch <- result{l, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, nsPath, r.err)
	}
	return r.l
}

// reach tells whether the running container name opens a TCP connection to addr (within 2 s).
func reach(t *testing.T, d *Demo, name, addr string) bool {
	host, port, _ := net.SplitHostPort(addr)
	out, _ := exec.Command("lxc-attach", "-P", d.lxcPath, "-n", name, "--", "timeout", "2", "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%s && echo open", host, port)).CombinedOutput()
	return strings.Contains(string(out), "open")
}

// pings tells whether the running container name gets an ICMP echo reply from ip.
func pings(d *Demo, name, ip string) bool {
	return exec.Command("lxc-attach", "-P", d.lxcPath, "-n", name, "--", "ping", "-c", "1", "-W", "2", ip).Run() == nil
}

package hostnet

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Holder names the process listening on the TCP address addr (":443", "127.0.0.1:8080"), as "pid 1234
// (haproxy)", or "" when nothing listens there. A listener on the wildcard address holds every address of
// its port, and one on a specific address holds the wildcard's.
func Holder(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	want, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", err
	}
	var ip netip.Addr
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("%s: not an IP address", addr)
		}
	}
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listeners(table, uint16(want), ip, inodes); err != nil {
			return "", err
		}
	}
	if len(inodes) == 0 {
		return "", nil
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") || !inodes[strings.Trim(link[7:], "[]")] {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		return fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm))), nil
	}
	return "a process berth cannot see", nil
}

// listeners adds the inodes of the sockets in table listening on port at ip (or at a wildcard; any address
// when ip is the zero Addr).
func listeners(table string, port uint16, ip netip.Addr, inodes map[string]bool) error {
	f, err := os.Open(table)
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
			continue
		}
		hexAddr, hexPort, _ := strings.Cut(fields[1], ":")
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || uint16(p) != port {
			continue
		}
		local := procAddr(hexAddr)
		if !ip.IsValid() || local.IsUnspecified() || ip.IsUnspecified() || local.Unmap() == ip.Unmap() {
			inodes[fields[9]] = true
		}
	}
	return sc.Err()
}

// procAddr decodes an address of /proc/net/tcp{,6}: 4-byte words in host (little-endian) order.
func procAddr(h string) netip.Addr {
	var b [16]byte
	n := len(h) / 2
	for i := 0; i < n && i < 16; i++ {
		v, _ := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		b[(i/4)*4+3-i%4] = byte(v)
	}
	if n == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

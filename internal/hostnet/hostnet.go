// Package hostnet prepares the host side of the demo's network: its bridge, IPv4 forwarding and the nft
// table that NATs its subnet out through the egress interface, after checking that the subnet overlaps
// nothing the host already has.
package hostnet

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"berth/internal/fsx"
	"berth/internal/run"
)

const (
	ipForward = "/proc/sys/net/ipv4/ip_forward"
	origFile  = "ip_forward.orig"
)

// cmd runs argv with a short timeout: every command here is a quick query or change of kernel state.
func cmd(ctx context.Context, stdin string, argv ...string) ([]byte, error) {
	return run.Cmd{Argv: argv, Stdin: strings.NewReader(stdin), Timeout: 30 * time.Second}.Run(ctx)
}

// Network is the demo's host side: its bridge, addresses and NAT.
type Network struct {
	Bridge      string       // e.g. "berthdemo0" (≤15 chars)
	Subnet      netip.Prefix // e.g. 10.1.5.0/24
	StateDir    string       // where the previous net.ipv4.ip_forward value is remembered (file ip_forward.orig)
	EgressPorts []int        // TCP ports the containers may reach on public addresses (80, 443)
	HostPorts   []int        // TCP ports of the host the containers may reach on the gateway (a local mirror)
}

// SysctlFile keeps ip_forward on for this network across reboots; named after the bridge, so that two
// configurations on one host do not share it.
func (n Network) SysctlFile() string { return strings.Replace(sysctlGlob, "*", n.Bridge, 1) }

const sysctlGlob = "/etc/sysctl.d/61-berth-demo-*.conf"

// Gateway is the bridge's address: the first address of the subnet plus one (10.1.5.1 for 10.1.5.0/24).
func (n Network) Gateway() netip.Addr { return nth(n.Subnet, 1) }

// Addr is the address of container i (0-based): the subnet's base plus i+3.
func (n Network) Addr(i int) netip.Addr { return nth(n.Subnet, i+3) }

func nth(p netip.Prefix, k int) netip.Addr {
	if !p.Addr().Is4() {
		return netip.Addr{}
	}
	a := p.Masked().Addr().As4()
	binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+uint32(k))
	return netip.AddrFrom4(a)
}

// Table is the name of the demo's nft table: "berth_demo_" and the bridge name reduced to [a-z0-9_].
func (n Network) Table() string {
	return "berth_demo_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, strings.ToLower(n.Bridge))
}

// ifaceNet is one IPv4 network the host has on an interface: an address's network or a route.
type ifaceNet struct {
	Iface string
	Net   netip.Prefix
}

// overlap returns an error naming the first of nets that overlaps subnet, leaving out those on bridge.
func overlap(subnet netip.Prefix, bridge string, nets []ifaceNet) error {
	for _, n := range nets {
		if n.Iface != bridge && n.Net.Overlaps(subnet) {
			return fmt.Errorf("subnet %s overlaps %s on %s", subnet, n.Net, n.Iface)
		}
	}
	return nil
}

// ipJSON runs `ip -j -4 args...` and decodes its output into v.
func ipJSON(ctx context.Context, v any, args ...string) error {
	argv := append([]string{"ip", "-j", "-4"}, args...)
	out, err := cmd(ctx, "", argv...)
	if err == nil && json.Unmarshal(out, v) != nil {
		err = fmt.Errorf("%s: unexpected output %.80q", strings.Join(argv, " "), out)
	}
	return err
}

type route struct{ Dst, Dev string }

// hostNets lists the networks of the host's IPv4 addresses and its main-table routes but the default ones.
func hostNets(ctx context.Context) ([]ifaceNet, error) {
	var links []struct {
		Ifname   string
		AddrInfo []struct {
			Local     string
			Prefixlen int
		} `json:"addr_info"`
	}
	var routes []route
	if err := ipJSON(ctx, &links, "addr", "show"); err != nil {
		return nil, err
	}
	if err := ipJSON(ctx, &routes, "route", "show"); err != nil {
		return nil, err
	}
	var nets []ifaceNet
	for _, l := range links {
		for _, ai := range l.AddrInfo {
			if a, err := netip.ParseAddr(ai.Local); err == nil {
				nets = append(nets, ifaceNet{l.Ifname, netip.PrefixFrom(a, ai.Prefixlen).Masked()})
			}
		}
	}
	for _, r := range routes {
		if !strings.Contains(r.Dst, "/") {
			r.Dst += "/32" // a host route; "default" stays unparsable and is left out
		}
		if p, err := netip.ParsePrefix(r.Dst); err == nil {
			nets = append(nets, ifaceNet{cmp.Or(r.Dev, "(no device)"), p.Masked()})
		}
	}
	return nets, nil
}

// CheckOverlap fails, naming the interface and its network, when subnet overlaps an IPv4 address or route of
// the host that is not on bridge itself.
func CheckOverlap(subnet netip.Prefix, bridge string) error {
	nets, err := hostNets(context.Background())
	if err != nil {
		return fmt.Errorf("listing host networks: %w", err)
	}
	return overlap(subnet.Masked(), bridge, nets)
}

// EgressInterface is the device of the host's IPv4 default route.
func EgressInterface(ctx context.Context) (string, error) {
	var routes []route
	if err := ipJSON(ctx, &routes, "route", "show", "default"); err != nil {
		return "", err
	}
	for _, r := range routes {
		if r.Dev != "" {
			return r.Dev, nil
		}
	}
	return "", errors.New("no IPv4 default route")
}

// Up prepares the host, idempotently: the bridge with the gateway address, IPv4 forwarding (persisted in
// /etc/sysctl.d, the previous value remembered in StateDir) and the demo's nft tables (Rules): the firewall
// and the NAT of the subnet out through the egress interface. Without a default route the tables are left
// out, with a warning, and the containers have no way out.
func (n Network) Up(ctx context.Context) error {
	if n.Bridge == "" || len(n.Bridge) > 15 || strings.ContainsAny(n.Bridge, "/ ") || !n.Subnet.Addr().Is4() || n.Subnet.Bits() > 29 {
		return fmt.Errorf("demo network %q on %s: want a bridge name of 1 to 15 characters and an IPv4 subnet of at least 8 addresses", n.Bridge, n.Subnet)
	}
	if err := CheckOverlap(n.Subnet, n.Bridge); err != nil {
		return err
	}
	if kind, err := n.linkKind(ctx); err != nil {
		return err
	} else if kind == "" {
		if _, err := cmd(ctx, "", "ip", "link", "add", n.Bridge, "type", "bridge"); err != nil {
			return err
		}
	} else if kind != "bridge" {
		return fmt.Errorf("%s exists and is not a bridge but a %s", n.Bridge, kind)
	}
	gw := netip.PrefixFrom(n.Gateway(), n.Subnet.Bits()).String()
	for _, argv := range [][]string{{"ip", "addr", "replace", gw, "dev", n.Bridge}, {"ip", "link", "set", n.Bridge, "up"}} {
		if _, err := cmd(ctx, "", argv...); err != nil {
			return err
		}
	}
	if err := n.enableForwarding(); err != nil {
		return err
	}
	egress, err := EgressInterface(ctx)
	if err != nil {
		logger().Warn("no IPv4 default route: the demo's containers have no way out", "bridge", n.Bridge)
		return n.Down(ctx)
	}
	if err := n.nft(ctx, n.legacyDown()); err != nil {
		return err
	}
	return n.nft(ctx, n.Rules(egress, Resolvers()))
}

// private is every IPv4 range a container must not reach through the host: the RFC 1918 and shared
// ranges (the host's LAN, VPNs, the other demos), loopback, link-local (169.254.169.254, the cloud's
// metadata service), multicast and reserved.
const private = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3"

// Rules is the demo's firewall and NAT, as one nft script that replaces the previous one atomically. In the
// bridge family, frames between two containers' ports are dropped (each container talks only to the
// gateway). In the inet family (IPv4 and IPv6): a container may open connections only to DNS on the host's
// resolvers and to EgressPorts on public addresses (NATed when they leave through egress); the host answers
// it only on HostPorts;
// nothing from outside opens a connection to a container; anything else from the bridge, IPv6 included, is
// dropped. Only the demo's bridge is filtered: the host's other traffic passes as before.
func (n Network) Rules(egress string, dns []netip.Addr) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	br := strconv.Quote(n.Bridge)
	w("table inet %[1]s {}\ndelete table inet %[1]s\ntable bridge %[1]s {}\ndelete table bridge %[1]s", n.Table())
	w("table bridge %s {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;", n.Table())
	w("\t\tiifname \"bd*\" oifname \"bd*\" drop\n\t}\n}")
	w("table inet %s {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;", n.Table())
	w("\t\tiifname %[1]s ct state established,related accept\n\t\toifname %[1]s ct state established,related accept", br)
	if len(dns) > 0 {
		w("\t\tiifname %s ip daddr { %s } meta l4proto { tcp, udp } th dport 53 accept", br, join(dns))
	}
	w("\t\tiifname %s ip daddr { %s } drop", br, private)
	if len(n.EgressPorts) > 0 {
		w("\t\tiifname %s tcp dport { %s } accept", br, join(n.EgressPorts))
	}
	w("\t\tiifname %[1]s drop\n\t\toifname %[1]s drop\n\t}", br)
	w("\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tiifname %s ct state established,related accept", br)
	w("\t\tiifname %s icmp type echo-request accept", br) // the gateway answers a ping: a container can tell the path works
	if len(n.HostPorts) > 0 {
		w("\t\tiifname %s tcp dport { %s } accept", br, join(n.HostPorts))
	}
	w("\t\tiifname %s drop\n\t}", br)
	w("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat;\n\t\tip saddr %s oifname %q masquerade\n\t}\n}", n.Subnet.Masked(), egress)
	return b.String()
}

func join[T any](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// Resolvers are the host's IPv4 name servers (from /etc/resolv.conf) that the containers may ask, through
// the host; loopback ones are left out (a container cannot reach them).
func Resolvers() []netip.Addr {
	b, _ := os.ReadFile("/etc/resolv.conf")
	var out []netip.Addr
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() && !a.IsLoopback() {
				out = append(out, a)
			}
		}
	}
	return out
}

// legacyDown deletes the IPv4-only table of berth's releases before the firewall.
func (n Network) legacyDown() string {
	return fmt.Sprintf("table ip %[1]s {}\ndelete table ip %[1]s\n", n.Table())
}

func (n Network) nft(ctx context.Context, script string) error {
	if _, err := cmd(ctx, script, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("nft table %s: %w", n.Table(), err)
	}
	return nil
}

func (n Network) enableForwarding() error {
	orig := filepath.Join(n.StateDir, origFile)
	if _, err := os.Stat(orig); errors.Is(err, os.ErrNotExist) {
		cur, err := os.ReadFile(ipForward)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
			return err
		}
		if err := fsx.WriteFile(orig, cur, 0o644); err != nil {
			return fmt.Errorf("remembering ip_forward: %w", err)
		}
	}
	if err := fsx.WriteFile(n.SysctlFile(), []byte("# berth demo: its containers reach the outside through NAT\nnet.ipv4.ip_forward = 1\n"), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", n.SysctlFile(), err)
	}
	if cur, err := os.ReadFile(ipForward); err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil // already on (and /proc/sys may be read-only, as in a container sharing the host's network)
	}
	return os.WriteFile(ipForward, []byte("1\n"), 0o644)
}

// linkKind is the kind of the link named Bridge ("bridge", "veth", "device" when plain), or "" if there is none.
func (n Network) linkKind(ctx context.Context) (string, error) {
	var links []struct {
		Ifname   string
		Linkinfo struct {
			InfoKind string `json:"info_kind"`
		}
	}
	if err := ipJSON(ctx, &links, "-d", "link", "show"); err != nil {
		return "", err
	}
	for _, l := range links {
		if l.Ifname == n.Bridge {
			return cmp.Or(l.Linkinfo.InfoKind, "device"), nil
		}
	}
	return "", nil
}

// Down deletes the demo's nft tables (firewall and NAT); a missing table is no error.
func (n Network) Down(ctx context.Context) error {
	return n.nft(ctx, n.legacyDown()+fmt.Sprintf("table inet %[1]s {}\ndelete table inet %[1]s\ntable bridge %[1]s {}\ndelete table bridge %[1]s\n", n.Table()))
}

// Remove undoes Up, idempotently: Down, the bridge, the sysctl file, and ip_forward back to the value
// remembered in StateDir, unless another demo network of this host still needs it.
func (n Network) Remove(ctx context.Context) error {
	if err := n.Down(ctx); err != nil {
		return err
	}
	if kind, err := n.linkKind(ctx); err != nil {
		return err
	} else if kind == "bridge" { // never another device that happens to have the name
		if _, err := cmd(ctx, "", "ip", "link", "del", n.Bridge); err != nil {
			return err
		}
	}
	// berth's releases before per-bridge names wrote 61-berth-demo.conf.
	for _, f := range []string{n.SysctlFile(), "/etc/sysctl.d/61-berth-demo.conf"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	orig := filepath.Join(n.StateDir, origFile)
	v, err := os.ReadFile(orig)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Another demo network on this host still forwards: ip_forward stays on until the last one goes.
	others, _ := filepath.Glob(sysctlGlob)
	if cur, rerr := os.ReadFile(ipForward); err == nil && len(others) == 0 && (rerr != nil || string(cur) != string(v)) {
		if err = os.WriteFile(ipForward, v, 0o644); errors.Is(err, syscall.EROFS) {
			// A container sharing the host's network (Up found forwarding on and left it): not ours to turn off.
			logger().Warn("ip_forward left as it is: /proc/sys is read-only here", "bridge", n.Bridge)
			err = nil
		}
	}
	if err == nil {
		err = os.Remove(orig)
	}
	return err
}

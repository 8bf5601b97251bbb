package hostnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth/internal/run"
	"berth/internal/testutil"
)

func TestNetworkAddresses(t *testing.T) {
	n := Network{Bridge: "Berth-Demo.0", Subnet: netip.MustParsePrefix("10.1.5.0/24")}
	if got := n.Gateway().String(); got != "10.1.5.1" {
		t.Errorf("Gateway = %s, want 10.1.5.1", got)
	}
	for i, want := range []string{"10.1.5.3", "10.1.5.4", "10.1.5.12"} {
		if i == 2 {
			i = 9
		}
		if got := n.Addr(i).String(); got != want {
			t.Errorf("Addr(%d) = %s, want %s", i, got, want)
		}
	}
	// A subnet given with host bits still counts from its network address.
	n.Subnet = netip.MustParsePrefix("10.1.5.77/24")
	if got := n.Gateway().String(); got != "10.1.5.1" {
		t.Errorf("Gateway of unmasked prefix = %s, want 10.1.5.1", got)
	}
	if got := n.Table(); got != "berth_demo_berth_demo_0" {
		t.Errorf("Table = %q", got)
	}
	if got := (Network{Bridge: "berthdemo0"}).Table(); got != "berth_demo_berthdemo0" {
		t.Errorf("Table = %q", got)
	}
}

func TestOverlap(t *testing.T) {
	p := netip.MustParsePrefix
	nets := []ifaceNet{
		{"lo", p("127.0.0.0/8")},
		{"eth0", p("192.168.1.0/24")},
		{"br0", p("10.1.5.0/24")},
		{"wg0", p("10.8.0.0/16")},
	}
	for _, tc := range []struct {
		subnet, bridge, want string // want: "" for no error, else a substring of it
	}{
		{"10.1.6.0/24", "", ""},
		{"10.1.5.0/24", "br0", ""},
		{"10.1.5.0/24", "", "10.1.5.0/24 on br0"},
		{"10.1.5.0/24", "other", "on br0"},
		{"192.168.1.128/25", "br0", "192.168.1.0/24 on eth0"},
		{"10.0.0.0/8", "br0", "10.8.0.0/16 on wg0"},
		{"10.8.3.0/24", "br0", "on wg0"},
		{"127.1.0.0/16", "", "on lo"},
	} {
		err := overlap(p(tc.subnet), tc.bridge, nets)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("overlap(%s, %q) = %v, want nil", tc.subnet, tc.bridge, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("overlap(%s, %q) = %v, want an error with %q", tc.subnet, tc.bridge, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func readForward(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(ipForward)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestNetworkUpRemove(t *testing.T) {
	testutil.Require(t, "nft", "ip")
	ctx := context.Background()
	b := make([]byte, 2)
	rand.Read(b)
	n := Network{Bridge: "bdtest" + hex.EncodeToString(b), StateDir: t.TempDir()}
	for tries := 0; ; tries++ {
		k, _ := rand.Int(rand.Reader, big.NewInt(256))
		n.Subnet = netip.MustParsePrefix("10.231." + k.String() + ".0/24")
		if CheckOverlap(n.Subnet, "") == nil {
			break
		}
		if tries > 50 {
			t.Fatal("no free subnet in 10.231.0.0/16")
		}
	}
	before := readForward(t)
	t.Cleanup(func() {
		if err := n.Remove(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	egress, egressErr := EgressInterface(ctx)
	t.Logf("bridge %s, subnet %s, egress %q (%v), ip_forward %s", n.Bridge, n.Subnet, egress, egressErr, before)

	if err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	table1, _ := run.Output(ctx, "nft", "list", "table", "inet", n.Table())
	if err := n.Up(ctx); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	table2, err := run.Output(ctx, "nft", "list", "table", "inet", n.Table())
	if egressErr == nil {
		if err != nil {
			t.Fatal(err)
		}
		if table1 != table2 {
			t.Errorf("table changed by a second Up:\n%s\n---\n%s", table1, table2)
		}
		want := `ip saddr ` + n.Subnet.String() + ` oifname "` + egress + `" masquerade`
		if !strings.Contains(table2, want) {
			t.Errorf("table lacks %q:\n%s", want, table2)
		}
	} else if err == nil {
		t.Errorf("no default route, yet table %s exists", n.Table())
	}

	out, err := run.Command(ctx, "ip", "-j", "-4", "addr", "show", "dev", n.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Flags    []string `json:"flags"`
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j addr show dev %s: %v: %s", n.Bridge, err, out)
	}
	if ai := links[0].AddrInfo; len(ai) != 1 || ai[0].Local != n.Gateway().String() || ai[0].Prefixlen != 24 {
		t.Errorf("bridge addresses = %+v, want only %s/24", ai, n.Gateway())
	}
	if !strings.Contains(strings.Join(links[0].Flags, ","), "UP") {
		t.Errorf("bridge flags %v lack UP", links[0].Flags)
	}
	if v := readForward(t); v != "1" {
		t.Errorf("ip_forward = %s after Up", v)
	}
	if b, err := os.ReadFile(n.SysctlFile()); err != nil || !strings.Contains(string(b), "net.ipv4.ip_forward = 1") {
		t.Errorf("%s: %v: %q", n.SysctlFile(), err, b)
	}

	// The bridge's own subnet is fine for the bridge; a host network is not.
	if err := CheckOverlap(n.Subnet, n.Bridge); err != nil {
		t.Errorf("CheckOverlap(own subnet, bridge): %v", err)
	}
	if err := CheckOverlap(n.Subnet, ""); err == nil || !strings.Contains(err.Error(), n.Bridge) {
		t.Errorf("CheckOverlap(own subnet, \"\") = %v, want an error naming %s", err, n.Bridge)
	}
	hostIface, hostNet := "lo", netip.MustParsePrefix("127.0.0.0/8")
	nets, err := hostNets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, hn := range nets {
		if egressErr == nil && hn.Iface == egress {
			hostIface, hostNet = hn.Iface, hn.Net
			break
		}
	}
	if err := CheckOverlap(hostNet, n.Bridge); err == nil || !strings.Contains(err.Error(), hostIface) {
		t.Errorf("CheckOverlap(%s) = %v, want an error naming %s", hostNet, err, hostIface)
	}

	for i := range 2 {
		if err := n.Remove(ctx); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if others, _ := filepath.Glob(sysctlGlob); len(others) > 0 {
		t.Logf("ip_forward left on after Remove: another demo network is up (%v)", others)
	} else if v := readForward(t); v != before {
		t.Errorf("ip_forward = %s after Remove, want %s", v, before)
	}
	if kind, err := n.linkKind(ctx); err != nil || kind != "" {
		t.Errorf("bridge %s still exists (%q, %v)", n.Bridge, kind, err)
	}
	if _, err := run.Output(ctx, "nft", "list", "table", "inet", n.Table()); err == nil {
		t.Errorf("table %s still exists", n.Table())
	}
	if _, err := os.Stat(n.SysctlFile()); err == nil {
		t.Errorf("%s still exists", n.SysctlFile())
	}
	if ents, _ := os.ReadDir(n.StateDir); len(ents) != 0 {
		t.Errorf("state dir not empty after Remove: %v", ents)
	}
}

// TestRules checks the firewall's shape and, where nft is installed, that nft accepts it (nft -c changes
// nothing). Its effect on real traffic: internal/demo's TestDemoPayloadOnLXC.
func TestRules(t *testing.T) {
	n := Network{Bridge: "berthdemo0", Subnet: netip.MustParsePrefix("10.1.5.0/24"), EgressPorts: []int{80, 443}, HostPorts: []int{8001}}
	rules := n.Rules("eth0", []netip.Addr{netip.MustParseAddr("10.255.255.53")})
	for _, want := range []string{
		`iifname "bd*" oifname "bd*" drop`,
		`iifname "berthdemo0" ip daddr { 10.255.255.53 } meta l4proto { tcp, udp } th dport 53 accept`,
		`iifname "berthdemo0" ip daddr { ` + private + ` } drop`,
		`iifname "berthdemo0" tcp dport { 80, 443 } accept`,
		`iifname "berthdemo0" tcp dport { 8001 } accept`,
		`ip saddr 10.1.5.0/24 oifname "eth0" masquerade`,
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q:\n%s", want, rules)
		}
	}
	// The private drop comes before the egress accept: a container cannot reach the LAN on port 443.
	if strings.Index(rules, "@private") > 0 || strings.Index(rules, private) > strings.Index(rules, "tcp dport { 80, 443 }") {
		t.Errorf("order:\n%s", rules)
	}
	if _, err := exec.LookPath("nft"); err != nil || os.Geteuid() != 0 {
		testutil.SkipOrFail(t, "nft -c needs nft and root")
	}
	cmd := exec.Command("nft", "-c", "-f", "-")
	cmd.Stdin = strings.NewReader(strings.SplitN(rules, "\n", 5)[4]) // without the deletes of tables that do not exist
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -c: %v\n%s\n%s", err, out, rules)
	}
}

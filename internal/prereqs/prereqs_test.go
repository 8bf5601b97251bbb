package prereqs_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"berth/internal/prereqs"
	"berth/internal/testutil"
)

func TestMissing(t *testing.T) {
	testutil.Require(t, "dpkg-query")
	missing, err := prereqs.Missing(context.Background(), []string{"dpkg", "berth-no-such-package"})
	if err != nil || !slices.Equal(missing, []string{"berth-no-such-package"}) {
		t.Fatalf("missing = %v, %v", missing, err)
	}
}

// TestApplySysctls writes berth's sysctl file for real and checks that the kernel took the port range,
// which the original's `sysctl -p` never loaded.
func TestApplySysctls(t *testing.T) {
	testutil.Require(t, "sysctl")
	if err := prereqs.ApplySysctls(context.Background(), prereqs.SysctlFile); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(string(b)), " "); got != "1024 65535" {
		t.Fatalf("port range %q after sysctl --system", got)
	}
	if b, _ := os.ReadFile("/proc/sys/fs/inotify/max_user_watches"); strings.TrimSpace(string(b)) != "524288" {
		t.Fatalf("max_user_watches %q", b)
	}
	if st, err := os.Stat(prereqs.SysctlFile); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("%s: %v %v", prereqs.SysctlFile, st, err)
	}
}

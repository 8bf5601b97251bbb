package lxc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"berth/internal/fsx"
)

// The files that grant subordinate ids (shadow's newuidmap and newgidmap read them); variables for tests.
var (
	SubUID = "/etc/subuid"
	SubGID = "/etc/subgid"
)

// ensureSubIDs grants root the ids [base, base+n) in SubUID and SubGID when shadow's newuidmap is installed:
// LXC then maps an unprivileged container's ids through newuidmap/newgidmap even for root, which refuse a
// range these files do not grant ("uid range [0-65536) -> [1000000-1065536) not allowed"). An entry that
// already covers the range is left as it is; a missing one is appended (atomically), with a log line.
func ensureSubIDs(base, n uint32) error {
	if _, err := exec.LookPath("newuidmap"); err != nil {
		return nil // LXC writes the maps itself
	}
	for _, f := range []string{SubUID, SubGID} {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if grants(string(b), base, n) {
			continue
		}
		s := string(b)
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += fmt.Sprintf("root:%d:%d\n", base, n)
		if err := fsx.WriteFile(f, []byte(s), 0o644); err != nil {
			return fmt.Errorf("granting root the ids %d-%d for unprivileged containers: %w", base, base+n-1, err)
		}
		logger().Info("granted root subordinate ids for the unprivileged demo containers (newuidmap is installed)", "file", f, "entry", fmt.Sprintf("root:%d:%d", base, n))
	}
	return nil
}

// grants tells whether a subuid/subgid file's content gives root (by name or uid 0) the whole range.
func grants(content string, base, n uint32) bool {
	for _, l := range strings.Split(content, "\n") {
		f := strings.Split(strings.TrimSpace(l), ":")
		if len(f) != 3 || (f[0] != "root" && f[0] != "0") {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 == nil && err2 == nil && start <= uint64(base) && uint64(base)+uint64(n) <= start+count {
			return true
		}
	}
	return false
}

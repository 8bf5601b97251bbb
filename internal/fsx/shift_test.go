package fsx

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func TestShiftOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" && !testing.Short() {
			t.Fatal("needs root (chown); CI=true: a missing prerequisite is a failure")
		}
		t.Skip("skipping: needs root (chown)")
	}
	dir := t.TempDir()
	suid := filepath.Join(dir, "bin", "su")
	os.MkdirAll(filepath.Dir(suid), 0o755)
	os.WriteFile(suid, []byte("x"), 0o755)
	syscall.Chmod(suid, 0o4755)
	mail := filepath.Join(dir, "var", "mail")
	os.MkdirAll(mail, 0o755)
	os.Chown(mail, 0, 8)
	syscall.Chmod(mail, 0o2775)
	os.Symlink("../bin/su", filepath.Join(dir, "var", "link"))
	ping := filepath.Join(dir, "bin", "ping")
	os.WriteFile(ping, []byte("x"), 0o755)
	if out, err := exec.Command("setcap", "cap_net_raw+ep", ping).CombinedOutput(); err != nil {
		t.Fatalf("setcap (libcap2-bin): %v %s", err, out)
	}
	shifted := filepath.Join(dir, "already")
	os.WriteFile(shifted, nil, 0o644)
	os.Chown(shifted, 1000033, 1000033)
	for range 2 { // twice: the second changes nothing
		if err := ShiftOwners(dir, 1000000, 65536); err != nil {
			t.Fatal(err)
		}
	}
	for p, want := range map[string][3]uint32{
		dir: {1000000, 1000000, 0o755}, suid: {1000000, 1000000, 0o4755}, mail: {1000000, 1000008, 0o2775},
		shifted: {1000033, 1000033, 0o644},
	} {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil || st.Uid != want[0] || st.Gid != want[1] || st.Mode&07777 != want[2] {
			t.Errorf("%s: uid %d gid %d mode %o, want %v (%v)", p, st.Uid, st.Gid, st.Mode&07777, want, err)
		}
	}
	caps := fileCaps(ping)
	if len(caps) != 24 || binary.LittleEndian.Uint32(caps)>>24 != 3 || binary.LittleEndian.Uint32(caps[20:]) != 1000000 {
		t.Errorf("ping's capability after the shift: %x", caps)
	}
	var st syscall.Stat_t
	if syscall.Lstat(filepath.Join(dir, "var", "link"), &st); st.Uid != 1000000 {
		t.Errorf("symlink uid %d", st.Uid)
	}
}

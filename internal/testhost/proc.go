package testhost

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"berth/internal/fsx"
)

// procStatus reads the fields of /proc/<pid>/status that matter here.
func procStatus(pid int) (ppid int, nspid []string, name string, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, nil, "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			name = v
		case "PPid":
			ppid, _ = strconv.Atoi(v)
		case "NSpid":
			nspid = strings.Fields(v)
		}
	}
	return ppid, nspid, name, sc.Err()
}

func pids() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// leaderOf returns the guest's systemd among the children of systemd-nspawn (pid 1 of a pid namespace of its
// own, already exec'd into systemd), or 0.
func leaderOf(nspawn int) int {
	for _, pid := range pids() {
		ppid, nspid, name, err := procStatus(pid)
		if err != nil || ppid != nspawn {
			continue
		}
		if len(nspid) >= 2 && nspid[len(nspid)-1] == "1" && name == "systemd" {
			return pid
		}
	}
	return 0
}

// inPidNS says whether pid lives in one of the namespaces nss or in one nested below them.
func inPidNS(pid int, nss []uint64) bool {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/pid", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	for depth := 0; depth < 40; depth++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			break
		}
		if slices.Contains(nss, st.Ino) {
			unix.Close(fd)
			return true
		}
		parent, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		unix.Close(fd)
		if err != nil { // EPERM: the parent is outside of our own namespace, i.e. we reached the top
			return false
		}
		fd = parent
	}
	unix.Close(fd)
	return false
}

type leftover struct {
	pid    int
	reason string
}

// Leftovers lists the processes that still belong to the host: in the host's cgroup, in one of the pid
// namespaces of its boots (or below), with their root or working directory at or under its temporary
// directory, or its systemd-nspawn. Empty once Stop has succeeded.
func (h *Host) Leftovers() []string {
	var out []string
	for _, l := range h.leftoverPIDs() {
		_, _, name, _ := procStatus(l.pid)
		out = append(out, fmt.Sprintf("%d %s (%s)", l.pid, name, l.reason))
	}
	return out
}

func (h *Host) leftoverPIDs() []leftover {
	h.mu.Lock()
	nss := slices.Clone(h.pidNS)
	var nspawn int
	if h.cmd != nil && h.cmd.Process != nil {
		nspawn = h.cmd.Process.Pid
	}
	h.mu.Unlock()
	var inCgroup []int
	if h.cg != nil {
		inCgroup = h.cg.procs()
	}
	self := os.Getpid()
	var out []leftover
	for _, pid := range pids() {
		if pid == self {
			continue
		}
		reason := ""
		switch {
		case pid == nspawn:
			reason = "systemd-nspawn"
		case slices.Contains(inCgroup, pid):
			reason = "in its cgroup"
		case len(nss) > 0 && inPidNS(pid, nss):
			reason = "in its pid namespace"
		default:
			for _, what := range []string{"root", "cwd"} {
				if h.under(fmt.Sprintf("/proc/%d/%s", pid, what)) {
					reason = what + " in its rootfs"
					break
				}
			}
		}
		if reason != "" {
			out = append(out, leftover{pid, reason})
		}
	}
	return out
}

// under says whether the magic link /proc/<pid>/{root,cwd} points at or below the host's directory: by path
// when it is in our mount namespace, by identity when the link is the guest's root seen from another one.
func (h *Host) under(link string) bool {
	if h.tmp == "" {
		return false
	}
	if p, err := os.Readlink(link); err == nil && (p == h.tmp || strings.HasPrefix(p, h.tmp+"/")) {
		return true
	}
	var st syscall.Stat_t
	if err := syscall.Stat(link, &st); err == nil && h.rootIno != 0 && st.Dev == h.rootDev && st.Ino == h.rootIno {
		return true
	}
	return false
}

func unmountAll(mounts []string) {
	for _, m := range mounts {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}

// cgroup is the host's own cgroup: rel below the root of the cgroup2 hierarchy, and the same path in a v1
// name=systemd hierarchy when the VM has one (systemd-nspawn mirrors its cgroups there on a hybrid host).
type cgroup struct {
	v2  string // absolute directory in the cgroup2 hierarchy
	v1  string // absolute directory in the name=systemd hierarchy, "" without one
	rel string
}

// findCgroup2 returns the mount point of the cgroup2 hierarchy and of a v1 name=systemd one ("" if none).
func findCgroup2() (v2 string, err error) {
	v2, _, err = cgroupMounts()
	return v2, err
}

func cgroupMounts() (v2, v1 string, err error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || f[3] != "/" {
			continue
		}
		mp := fsx.UnescapeMount(f[4])
		switch {
		case g[0] == "cgroup2" && v2 == "":
			v2 = mp
		case g[0] == "cgroup" && slices.Contains(strings.Split(g[2], ","), "name=systemd") && v1 == "":
			v1 = mp
		}
	}
	if v2 == "" {
		return "", "", errors.New("a test host needs a cgroup2 hierarchy mounted (at /sys/fs/cgroup or /sys/fs/cgroup/unified)")
	}
	return v2, v1, nil
}

func newCgroup(name string) (*cgroup, error) {
	v2, v1, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	c := &cgroup{v2: filepath.Join(v2, name), rel: name}
	if v1 != "" {
		c.v1 = filepath.Join(v1, name)
	}
	if err := os.Mkdir(c.v2, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return c, nil
}

func (c *cgroup) open() (*os.File, error) {
	return os.OpenFile(c.v2, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// leaf opens (making it first) the cgroup that commands run by Host.Run start in: a leaf below the guest's
// root cgroup, "payload" (where systemd-nspawn --keep-unit puts the guest), that the guest's systemd ignores.
func (c *cgroup) leaf() (*os.File, error) {
	dir := filepath.Join(c.v2, "payload", "berth-nsenter")
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// procs lists every process in the cgroup tree (both hierarchies).
func (c *cgroup) procs() []int {
	var out []int
	for _, top := range []string{c.v2, c.v1} {
		if top == "" {
			continue
		}
		filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, s := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil && !slices.Contains(out, pid) {
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// kill SIGKILLs everything in the cgroup2 tree at once (cgroup.kill, Linux 5.14 and later).
func (c *cgroup) kill() {
	os.WriteFile(filepath.Join(c.v2, "cgroup.kill"), []byte("1"), 0)
}

// clean removes the sub-cgroups a boot left behind (they are empty once the guest has stopped), keeping the
// host's own cgroup for the next boot.
func (c *cgroup) clean() error {
	var errs []error
	for _, top := range []string{c.v2, c.v1} {
		if top == "" {
			continue
		}
		entries, err := os.ReadDir(top)
		if err != nil {
			if !os.IsNotExist(err) {
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				if err := rmdirTree(filepath.Join(top, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// remove removes the host's cgroups altogether.
func (c *cgroup) remove() error {
	var errs []error
	for _, top := range []string{c.v2, c.v1} {
		if top != "" {
			if err := rmdirTree(top); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirTree removes a cgroup directory and its sub-cgroups, deepest first (cgroupfs only allows rmdir).
func rmdirTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rmdir cgroup %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

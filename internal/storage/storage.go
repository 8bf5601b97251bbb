// Package storage keeps the demo's pristine generations and makes its containers' root file systems from
// them, through one Backend interface with a driver per file system (one file each, as Incus's storage
// drivers): btrfs snapshots, an overlayfs over the generation as lower layer, or plain directory copies.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"berth/internal/clone"
	"berth/internal/fsx"
)

// Backend is one way to keep generations and container root file systems. A container lives in a
// directory ctDir (<LXC>/<name>) whose rootfs (and, for overlayfs, delta and work) the backend owns.
type Backend interface {
	// Name is the backend's [Demo] Backend value: "btrfs", "overlayfs" or "dir".
	Name() string
	// Publish makes the tree at staging (on the same file system, consumed) the generation directory gen,
	// which must not exist.
	Publish(ctx context.Context, staging, gen string) error
	// Reset returns the stopped container in ctDir to generation gen: a fresh snapshot (btrfs), an emptied
	// upper layer (overlayfs) or a fresh copy (dir).
	Reset(ctx context.Context, ctDir, gen string) error
	// RootfsSpec is the container's lxc.rootfs.path once reset to gen.
	RootfsSpec(ctDir, gen string) string
	// SharesGeneration tells whether a container reads its generation in place (the overlayfs lower layer),
	// so that a generation a container uses must not be removed.
	SharesGeneration() bool
	// Remove deletes a generation or a container's tree (btrfs subvolumes included); a missing path is no
	// error.
	Remove(ctx context.Context, path string) error

	// Fork makes path (absent or a leftover fork; its parent on the generations' file system) a writable
	// tree that starts as generation gen, for an upgrade that may be thrown away: a btrfs snapshot, an
	// overlay mounted at path with gen as lower layer (writes go to an upper layer beside path), or a full
	// copy (dir).
	Fork(ctx context.Context, gen, path string) error
	// Settle turns a successful fork of gen at path into a standalone tree at path, ready for Store.Add (a
	// fork must not be running): nothing to do for a snapshot or a copy; overlayfs unmounts and merges its
	// upper layer into hard links of gen's files, so that only what the upgrade wrote is written again.
	Settle(ctx context.Context, gen, path string) error
	// Discard removes a fork (unmounting it first); a missing path is no error.
	Discard(ctx context.Context, path string) error
}

// Pick resolves [Demo] Backend: auto takes btrfs snapshots when the LXC path is on btrfs, else an
// overlayfs over a pristine lower layer when the kernel has overlayfs, else plain directories.
func Pick(want, lxcPath string) (Backend, error) {
	dir := lxcPath
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" {
			break
		}
		dir = filepath.Dir(dir)
	}
	fstype, err := clone.FSType(dir)
	if err != nil {
		return nil, err
	}
	fss, _ := os.ReadFile("/proc/filesystems")
	overlay := strings.Contains(string(fss), "\toverlay\n")
	switch want {
	case "btrfs":
		if fstype != "btrfs" {
			return nil, fmt.Errorf("[Demo] Backend = btrfs, but %s is on %s: put [Paths] LXC on btrfs or choose auto", lxcPath, fstype)
		}
	case "overlayfs":
		if !overlay {
			return nil, errors.New("[Demo] Backend = overlayfs, but this kernel has no overlayfs")
		}
	case "dir":
	default: // auto
		switch {
		case fstype == "btrfs":
			want = "btrfs"
		case overlay:
			want = "overlayfs"
		default:
			want = "dir"
		}
	}
	return map[string]Backend{"btrfs": btrfsDriver{}, "overlayfs": overlayfsDriver{}, "dir": dirDriver{}}[want], nil
}

// rootfs is the container's root file system directory (for overlayfs, the mount point).
func rootfs(ctDir string) string { return filepath.Join(ctDir, "rootfs") }

// Store is the demo's pristine generations: <Dir>/gen/<NNNNNN>, the newest the current one, kept by Backend.
type Store struct {
	Dir string // <LXC>/.berth-demo
	Backend
	// IDBase, when set, is where the unprivileged containers' ids start on the host: each generation is
	// owned by IDs ids from there when it is made, and a container's writable layers when it is reset.
	IDBase, IDs uint32
}

func genName(n int) string { return fmt.Sprintf("%06d", n) }

// Generations lists the pristine generations, oldest first.
func (s Store) Generations() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.Dir, "gen"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var gens []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() && len(e.Name()) == 6 {
			gens = append(gens, e.Name())
		}
	}
	return gens, err
}

// Path is generation g's tree.
func (s Store) Path(g string) string { return filepath.Join(s.Dir, "gen", g) }

// Current is the newest generation: the pristine state containers are reset to.
func (s Store) Current() (string, error) {
	gens, err := s.Generations()
	if err != nil || len(gens) == 0 {
		return "", errors.Join(err, errors.New("no pristine state: run demo:build"))
	}
	return gens[len(gens)-1], nil
}

// Add publishes the tree at src (a staging clone on the store's file system, consumed) as the new
// current generation, and prunes the oldest beyond keep archived ones, except, when the backend shares
// generations, those inUse.
func (s Store) Add(ctx context.Context, src string, keep int, inUse func(g string) bool) (string, error) {
	gens, err := s.Generations()
	if err != nil {
		return "", err
	}
	n := 1
	if len(gens) > 0 {
		last, _ := strconv.Atoi(gens[len(gens)-1])
		n = last + 1
	}
	g := genName(n)
	if err := os.MkdirAll(filepath.Join(s.Dir, "gen"), 0o700); err != nil {
		return "", err
	}
	if err := s.own(src); err != nil {
		return "", err
	}
	if err := s.Publish(ctx, src, s.Path(g)); err != nil {
		return "", err
	}
	if err := fsx.SyncDir(filepath.Join(s.Dir, "gen")); err != nil {
		return "", err
	}
	gens = append(gens, g)
	for len(gens) > keep+1 {
		old := gens[0]
		gens = gens[1:]
		if s.SharesGeneration() && inUse(old) { // a running container's lower layer
			continue
		}
		if err := s.Remove(ctx, s.Path(old)); err != nil {
			return "", err
		}
	}
	return g, nil
}

// Fork makes path a writable fork of generation g (Backend.Fork), for an upgrade.
func (s Store) Fork(ctx context.Context, g, path string) error {
	if err := s.Discard(ctx, path); err != nil {
		return err
	}
	return s.Backend.Fork(ctx, s.Path(g), path)
}

// Settle makes the fork of generation g at path a tree Add publishes (Backend.Settle).
func (s Store) Settle(ctx context.Context, g, path string) error {
	return s.Backend.Settle(ctx, s.Path(g), path)
}

// ResetTo returns the stopped container in ctDir to generation g (Backend.Reset), its layers owned by the
// containers' ids, and the directories on the way to them passable by those ids (search permission only).
func (s Store) ResetTo(ctx context.Context, ctDir, g string) error {
	if s.IDBase != 0 {
		for _, dir := range []string{filepath.Dir(ctDir), s.Dir, filepath.Join(s.Dir, "gen"), ctDir} {
			if err := fsx.Searchable(dir); err != nil {
				return err
			}
		}
		var st syscall.Stat_t // a generation made before the containers were unprivileged is owned once
		if err := syscall.Lstat(s.Path(g), &st); err != nil {
			return err
		}
		if st.Uid < s.IDs {
			if err := s.own(s.Path(g)); err != nil {
				return err
			}
		}
	}
	if err := s.Reset(ctx, ctDir, s.Path(g)); err != nil {
		return err
	}
	for _, layer := range []string{"delta", "work"} { // overlayfs: where the container's root writes
		if err := os.Lchown(filepath.Join(ctDir, layer), int(s.IDBase), int(s.IDBase)); s.IDBase != 0 && err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// own makes the tree at dir owned by the containers' ids (fsx.ShiftOwners; nothing without IDBase).
func (s Store) own(dir string) error {
	if s.IDBase == 0 {
		return nil
	}
	if err := fsx.ShiftOwners(dir, s.IDBase, s.IDs); err != nil {
		return fmt.Errorf("owning %s by the containers' ids: %w", dir, err)
	}
	return nil
}

// SetAside moves a damaged generation out of the rotation to <Dir>/broken/, with reason in a .reason file beside it.
func (s Store) SetAside(g, reason string) error {
	if err := os.MkdirAll(filepath.Join(s.Dir, "broken"), 0o700); err != nil {
		return err
	}
	dst := filepath.Join(s.Dir, "broken", g+"-"+time.Now().Format("20060102-150405"))
	if err := os.Rename(s.Path(g), dst); err != nil {
		return err
	}
	return fsx.WriteFile(dst+".reason", []byte(reason+"\n"), 0o600)
}

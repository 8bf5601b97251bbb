package storage

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"berth/internal/clone"
)

// btrfsDriver keeps generations as subvolumes and resets a container with a snapshot of one: O(1) either way.
type btrfsDriver struct{}

func (btrfsDriver) Name() string { return "btrfs" }

func (btrfsDriver) Publish(ctx context.Context, staging, gen string) error {
	err := clone.Subvolume(ctx, staging, gen)
	if err == nil {
		err = clone.Remove(ctx, staging)
	}
	return err
}

// Reset snapshots the generation before it deletes the old rootfs (moved aside first): a snapshot commits a
// btrfs transaction, and that commit then does not carry the deletion's metadata, which a later commit
// writes in the background.
func (btrfsDriver) Reset(ctx context.Context, ctDir, gen string) error {
	old := filepath.Join(ctDir, ".rootfs-old")
	if err := clone.Remove(ctx, old); err != nil { // left by a reset that was killed
		return err
	}
	if err := os.Rename(rootfs(ctDir), old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := clone.TreeWith(ctx, gen, rootfs(ctDir), clone.Snapshot); err != nil {
		return err
	}
	return clone.Remove(ctx, old)
}

func (btrfsDriver) RootfsSpec(ctDir, gen string) string { return "dir:" + rootfs(ctDir) }

func (btrfsDriver) SharesGeneration() bool { return false }

func (btrfsDriver) Remove(ctx context.Context, path string) error { return clone.Remove(ctx, path) }

// Fork snapshots the generation (a subvolume): O(1), and the upgrade's writes are all that is written.
func (btrfsDriver) Fork(ctx context.Context, gen, path string) error {
	return clone.TreeWith(ctx, gen, path, clone.Snapshot)
}

func (btrfsDriver) Settle(ctx context.Context, gen, path string) error { return nil }

func (btrfsDriver) Discard(ctx context.Context, path string) error { return clone.Remove(ctx, path) }

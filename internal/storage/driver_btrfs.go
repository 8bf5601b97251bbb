package storage

import (
	"context"

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

func (btrfsDriver) Reset(ctx context.Context, ctDir, gen string) error {
	return cloneRootfs(ctx, ctDir, gen, clone.Snapshot)
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

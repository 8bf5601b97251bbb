package storage

import (
	"context"
	"os"
	"path/filepath"

	"berth/internal/clone"
)

// overlayfsDriver keeps generations as plain directories and runs a container on an overlay (mounted by LXC)
// with the generation as lower layer and ctDir/delta as upper layer: a reset empties the upper layer.
type overlayfsDriver struct{}

func (overlayfsDriver) Name() string { return "overlayfs" }

func (overlayfsDriver) Publish(ctx context.Context, staging, gen string) error {
	return os.Rename(staging, gen)
}

func (overlayfsDriver) Reset(ctx context.Context, ctDir, gen string) error {
	// work is the work directory LXC 5 uses next to the upper layer ("olwork" before).
	for _, p := range []string{"delta", "work", "olwork", "rootfs"} {
		if err := clone.Remove(ctx, filepath.Join(ctDir, p)); err != nil {
			return err
		}
	}
	for _, p := range []string{"delta", "work", "rootfs"} {
		if err := os.MkdirAll(filepath.Join(ctDir, p), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (overlayfsDriver) RootfsSpec(ctDir, gen string) string {
	return "overlay:" + gen + ":" + filepath.Join(ctDir, "delta")
}

func (overlayfsDriver) SharesGeneration() bool { return true }

func (overlayfsDriver) Remove(ctx context.Context, path string) error { return clone.Remove(ctx, path) }

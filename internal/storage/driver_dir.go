package storage

import (
	"context"
	"os"

	"berth/internal/clone"
)

// dirDriver keeps generations as plain directories and resets a container with a fresh plain copy of one.
type dirDriver struct{}

func (dirDriver) Name() string { return "dir" }

func (dirDriver) Publish(ctx context.Context, staging, gen string) error {
	return os.Rename(staging, gen)
}

func (dirDriver) Reset(ctx context.Context, ctDir, gen string) error {
	return cloneRootfs(ctx, ctDir, gen, clone.Copy)
}

func (dirDriver) RootfsSpec(ctDir, gen string) string { return "dir:" + rootfs(ctDir) }

func (dirDriver) SharesGeneration() bool { return false }

func (dirDriver) Remove(ctx context.Context, path string) error { return clone.Remove(ctx, path) }

// Fork copies the generation (a reflink copy where the file system can).
func (dirDriver) Fork(ctx context.Context, gen, path string) error {
	_, err := clone.Tree(ctx, gen, path)
	return err
}

func (dirDriver) Settle(ctx context.Context, gen, path string) error { return nil }

func (dirDriver) Discard(ctx context.Context, path string) error { return clone.Remove(ctx, path) }

// cloneRootfs replaces the container's rootfs with a clone of gen made with m.
func cloneRootfs(ctx context.Context, ctDir, gen string, m clone.Method) error {
	err := clone.Remove(ctx, rootfs(ctDir))
	if err == nil {
		err = clone.TreeWith(ctx, gen, rootfs(ctDir), m)
	}
	return err
}

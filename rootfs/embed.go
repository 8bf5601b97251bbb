// Package rootfs holds the recipe of berth's base rootfs: the files below are compiled into berth, and every
// byte of them is part of the base's cache key.
package rootfs

import "embed"

// Files are the recipe files: provision.sh runs inside the fresh debootstrap (strict bash, any failing
// command fails the build); go.sh puts the Go toolchain on the PATH of every interactive and login shell.
//
//go:embed provision.sh go.sh
var Files embed.FS

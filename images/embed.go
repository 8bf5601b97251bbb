// Package images holds one folder per image: image.conf (the manifest, in systemd's INI syntax) and the files
// the image installs. They are compiled into berth, so the installed binary builds images without a checkout.
// Adding an image is adding a folder: every folder here is embedded without being named (embed.go itself comes
// along, harmlessly: only folders holding an image.conf are images). A new machine folder also gets its Mage
// namespace from `go generate ./...` (magefiles/images_gen.go).
package images

import (
	"embed"
	"io/fs"
	"os"
)

// FS holds every image folder, hidden files included.
//
//go:embed all:*
var FS embed.FS

// Active returns the image folders berth uses: those in dir when it is not empty (BERTH_IMAGES, read by the
// magefiles: an operator's own or changed images, without rebuilding berth), else the compiled-in ones.
func Active(dir string) fs.FS {
	if dir != "" {
		return os.DirFS(dir)
	}
	return FS
}

// Package images holds one folder per image: image.conf (the manifest, in systemd's INI syntax) and the files
// the image installs. They are compiled into berth, so the installed binary builds images without a checkout.
// Adding an image is adding a folder.
package images

import "embed"

// FS holds every image folder.
//
//go:embed all:mysql all:haproxy all:strfry all:relaycreator
var FS embed.FS

// Package upgraded holds the upgrade.d hooks berth ships; demo:build installs the missing ones into
// [Demo] Hooks and never overwrites an operator's file.
package upgraded

import "embed"

// FS holds the shipped hooks, each under always/ or as a pending one-shot.
//
//go:embed always
var FS embed.FS

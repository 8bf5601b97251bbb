//go:build ignore

// gen_images writes images_gen.go, one Mage namespace per machine image folder. `go generate ./...` runs it
// (the directive is in images.go); it is build-ignored, so Mage never compiles it into berth.
package main

import (
	"fmt"
	"os"

	"berth/internal/magegen"
)

func main() {
	changed, err := magegen.Write(".", "../images")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen_images:", err)
		os.Exit(1)
	}
	if changed {
		fmt.Println("gen_images: wrote magefiles/" + magegen.File)
	}
}

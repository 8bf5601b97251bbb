package main

import (
	"os"

	"github.com/magefile/mage/mg"

	"berth/internal/config"
)

// Config shows berth's effective configuration.
type Config mg.Namespace

// Show prints every configuration key with its effective value and where it came from (default, the file
// with its line, or the environment variable). BERTH_CONFIG names another file.
func (Config) Show() error {
	c, err := config.Load()
	if err != nil {
		return err
	}
	c.Summary(os.Stdout)
	return nil
}

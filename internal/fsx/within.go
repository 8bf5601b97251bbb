package fsx

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A machine's data directory ([Paths] Srv/<machine>) is bound into the machine, so root in the guest decides
// what every path below it is. The host reads and writes there only through os.Root: a symbolic link (or a
// "..") that leads out of the directory fails the call instead of reading or replacing a host file.

// ReadIn reads rel inside dir through os.Root.
func ReadIn(dir, rel string) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	b, err := root.ReadFile(rel)
	return b, within(dir, rel, err)
}

// WriteIn writes data to rel inside dir the way WriteFile does (atomically, created with perm), through
// os.Root, making rel's directory with dirPerm when it is missing.
func WriteIn(dir, rel string, data []byte, perm, dirPerm os.FileMode) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if d := filepath.Dir(rel); d != "." {
		if err := root.MkdirAll(d, dirPerm); err != nil {
			return within(dir, rel, err)
		}
	}
	if err := ReplaceIn(root, rel, bytes.NewReader(data), perm); err != nil {
		return within(dir, rel, err)
	}
	return nil
}

// StatIn stats rel inside dir through os.Root (following links that stay inside).
func StatIn(dir, rel string) (fs.FileInfo, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	st, err := root.Stat(rel)
	return st, within(dir, rel, err)
}

// CheckIn fails, in one line, when rel inside dir leads out of dir; a missing file is fine.
func CheckIn(dir, rel string) error {
	if _, err := StatIn(dir, rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ErrEscapes is wrapped by the errors of the *In functions when a path leads out of its directory.
var ErrEscapes = errors.New("a symbolic link in it leads out of the directory")

func within(dir, rel string, err error) error {
	// os.Root's own error for this is unexported ("path escapes from parent").
	if err != nil && strings.Contains(err.Error(), "escapes from parent") {
		return fmt.Errorf("refusing %s: %w %s (made from inside the machine?)", filepath.Join(dir, rel), ErrEscapes, dir)
	}
	return err
}

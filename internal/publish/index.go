// Package publish ships machine images from the host that built them to any number of relay hosts through
// existing engines: S3-compatible object storage for distribution (minio-go) and systemd-importd for the
// verified download and unpacking (PullTar over D-Bus).
//
// Layout under [Publish] Prefix in the bucket (or under [Publish] Pull):
//
//	<image>/<build>/<image>.tar.gz    the machine's tree, reproducible, this host's secrets stripped
//	<image>/<build>/SHA256SUMS        "<sha256>  <image>.tar.gz", what systemd-importd checks
//	<image>/<build>/SHA256SUMS.gpg    the detached signature of SHA256SUMS by the publisher's key
//	index.json                        the current build of each image, written once all its objects are there
//
// <build> is the image's build key: a hash of its stamp (base key, image folder, settings), so that the same
// build is published once and pulled once.
package publish

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"berth/internal/image"
)

func logger() *slog.Logger { return slog.Default().With("component", "publish") }

// IndexName is the object naming the current build of each image.
const IndexName = "index.json"

// Index is index.json.
type Index struct {
	Images map[string]Entry `json:"images"`
}

// Entry is one image's current build.
type Entry struct {
	Build     string    `json:"build"`
	Tarball   string    `json:"tarball"` // relative to the index
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	Signer    string    `json:"signer"` // the signing key's fingerprint
	Published time.Time `json:"published"`
}

// BuildKey identifies what a machine was built from (its stamp), independent of when and where.
func BuildKey(s image.Stamp) string {
	h := sha256.Sum256([]byte(strings.Join([]string{s.Image, s.BaseKey, s.Manifest, s.Settings}, "\n")))
	return hex.EncodeToString(h[:])[:16]
}

// TarballName is the published tarball's file name.
func TarballName(name string) string { return name + ".tar.gz" }

// Dir is the objects' directory of one build, relative to the prefix.
func Dir(name, build string) string { return name + "/" + build }

// Sums is the SHA256SUMS content for one file, in the format sha256sum writes and systemd-importd reads.
func Sums(sum, file string) []byte { return []byte(sum + "  " + file + "\n") }

// ParseSums finds file's checksum in a SHA256SUMS content ("<hex>  name" or "<hex> *name").
func ParseSums(b []byte, file string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), " ")
		if !ok || len(sum) != 64 {
			continue
		}
		if strings.TrimPrefix(strings.TrimPrefix(name, " "), "*") == file {
			return sum, true
		}
	}
	return "", false
}

// Join joins a base URL or prefix and a relative object name with exactly one slash.
func Join(base, rel string) string {
	if base == "" {
		return rel
	}
	return strings.TrimSuffix(base, "/") + "/" + strings.TrimPrefix(rel, "/")
}

// ParseIndex reads index.json.
func ParseIndex(b []byte) (Index, error) {
	var idx Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return idx, fmt.Errorf("%s: %w", IndexName, err)
	}
	if idx.Images == nil {
		idx.Images = map[string]Entry{}
	}
	return idx, nil
}

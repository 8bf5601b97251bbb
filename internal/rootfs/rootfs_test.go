package rootfs

import (
	"context"
	"strings"
	"testing"
)

func TestKey(t *testing.T) {
	a := Spec{Suite: "bookworm", Mirror: "http://deb.debian.org/debian", Arch: "amd64", Packages: []string{"systemd", "dbus"}}
	b := a
	b.Packages = []string{"dbus", "systemd", "dbus"}
	if a.Key() != b.Key() {
		t.Error("package order or duplicates change the key")
	}
	for _, c := range []Spec{
		{Suite: "trixie", Mirror: a.Mirror, Arch: a.Arch, Packages: a.Packages},
		{Suite: a.Suite, Mirror: "http://other/debian", Arch: a.Arch, Packages: a.Packages},
		{Suite: a.Suite, Mirror: a.Mirror, Arch: "arm64", Packages: a.Packages},
		{Suite: a.Suite, Mirror: a.Mirror, Arch: a.Arch, Packages: []string{"systemd"}},
		{Suite: a.Suite, Mirror: a.Mirror, Arch: a.Arch, Packages: a.Packages, Variant: "buildd"},
	} {
		if c.Key() == a.Key() {
			t.Errorf("%+v has the same key as %+v", c, a)
		}
	}
}

func TestHostArch(t *testing.T) {
	arch, err := HostArch()
	if err != nil || (arch != "amd64" && arch != "arm64") {
		t.Fatalf("%q %v", arch, err)
	}
}

// TestBootstrapTools: a tarball per tool (the two never read each other's), the key covering mmdebstrap's
// extra sources; an unknown tool and debootstrap with extra sources are refused before anything runs.
func TestBootstrapTools(t *testing.T) {
	a := Spec{Suite: "bookworm", Mirror: "http://deb.debian.org/debian", Arch: "amd64"}
	mm := a
	mm.Tool = Mmdebstrap
	if a.Key() == mm.Key() {
		t.Error("debootstrap's and mmdebstrap's specs share a key")
	}
	more := mm
	more.Sources = []string{"deb http://deb.debian.org/debian bookworm-updates main"}
	if more.Key() == mm.Key() {
		t.Error("mmdebstrap's extra sources are not in the key")
	}
	bad := a
	bad.Sources = more.Sources
	if _, _, err := Bootstrap(context.Background(), bad, t.TempDir(), false, nil); err == nil || !strings.Contains(err.Error(), "need mmdebstrap") {
		t.Errorf("debootstrap with extra sources: %v", err)
	}
	bad = a
	bad.Tool = "cdebootstrap"
	if _, _, err := Bootstrap(context.Background(), bad, t.TempDir(), false, nil); err == nil || !strings.Contains(err.Error(), "unknown bootstrapper") {
		t.Errorf("unknown tool: %v", err)
	}
	if got := ResolveTool("debootstrap"); got != Debootstrap {
		t.Errorf("ResolveTool(debootstrap) = %s", got)
	}
}

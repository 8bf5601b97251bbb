package rootfs

import "testing"

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

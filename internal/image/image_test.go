package image_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"berth/images"
	"berth/internal/fsx"
	"berth/internal/image"
	"berth/internal/testutil/testbase"
)

func TestShippedManifests(t *testing.T) {
	names, err := image.Names(images.FS)
	if err != nil || len(names) < 2 {
		t.Fatalf("images: %v %v", names, err)
	}
	for _, n := range names {
		m, err := image.Load(images.FS, n)
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind == "container" { // an LXC demo container: no .nspawn file, no data bind
			continue
		}
		nspawn := m.NSpawnFile("/srv")
		if !strings.Contains(nspawn, "PrivateUsers=") || !strings.Contains(nspawn, "Bind=/srv/") {
			t.Errorf("%s.nspawn lacks an explicit PrivateUsers= or its data bind:\n%s", n, nspawn)
		}
	}
	if m, _ := image.Load(images.FS, "demo-web"); m.Serve.LoginPath != "/login" || m.Serve.HealthPath != "/health" {
		t.Errorf("demo-web serves %+v: want its demo login checked", m.Serve)
	}
	if _, err := image.Load(images.FS, "no-such-image"); err == nil {
		t.Fatal("an unknown image loaded")
	}
	machines, err := image.NamesOfKind(images.FS, "machine")
	if err != nil || !slices.Equal(machines, []string{"haproxy", "mysql", "relaycreator", "strfry"}) {
		t.Errorf("machine images: %v %v", machines, err)
	}
}

func TestManifestErrors(t *testing.T) {
	for conf, want := range map[string]string{
		"[Files]\nCopy=a\n":                 "expected <file in the image folder>",
		"[Data]\nBind=../etc:/x\n":          "expected <name under [Paths] Srv>",
		"[Image]\nColour=blue\n":            "unknown key",
		"[Source]\nName=x\nURL=http://h\n":  "pinned Ref",
		"[Serve]\nLoginPath=login\n":        "expected a URL path",
		"[Serve]\nLoginForm=user={user}\n":  "with {password}",
		"[Serve]\nVolatile=/var/lib/../x\n": "clean absolute paths",
	} {
		_, err := image.Load(fstest.MapFS{"bad/image.conf": {Data: []byte(conf)}}, "bad")
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: want a one-line error with %q, got %v", conf, want, err)
		}
	}
}

func tiny(script string) fstest.MapFS {
	return fstest.MapFS{
		"tiny/image.conf":   {Data: []byte("[Image]\nProvision=provision.sh\n[Files]\nCopy=motd:/etc/motd\n[Data]\nBind=tiny:/srv/tiny\nSkeleton=skel:tiny\n[Exec]\nBoot=yes\nPrivateUsers=no\n")},
		"tiny/provision.sh": {Data: []byte(script)},
		"tiny/motd":         {Data: []byte("tiny machine\n")},
		"tiny/skel/a.conf":  {Data: []byte("default\n")},
		"tiny/skel/b.conf":  {Data: []byte("default\n")},
	}
}

// TestInstall builds a small image twice from a real base (the trees must be identical and the operator's
// data untouched), then a broken one: the install fails naming the script's line, the machine stays.
func TestInstall(t *testing.T) {
	c := testbase.Config(t, nil)
	testbase.Build(t, c)
	ctx := context.Background()
	fsys := tiny("echo built > /etc/tiny-built\nmkdir -p /opt/tiny\n")
	if err := image.Install(ctx, c, fsys, "tiny", image.Options{}); err != nil {
		t.Fatal(err)
	}
	dir := image.MachineDir(c, "tiny")
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/tiny-built")); string(b) != "built\n" {
		t.Fatalf("provision did not run: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/hostname")); string(b) != "tiny\n" {
		t.Fatalf("hostname %q", b)
	}
	nspawn, _ := os.ReadFile(image.NSpawnFile(c, "tiny"))
	if !bytes.Contains(nspawn, []byte("Bind="+filepath.Join(c.Paths.Srv, "tiny")+":/srv/tiny")) {
		t.Fatalf(".nspawn: %s", nspawn)
	}
	if st, err := os.Stat(image.PasswordFile(c, "tiny")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", st, err)
	}
	// The operator edits a skeleton file; a reinstall must keep the edit.
	data := filepath.Join(c.Paths.Srv, "tiny")
	os.WriteFile(filepath.Join(data, "a.conf"), []byte("operator's\n"), 0o644)
	dataBefore, _ := fsx.TreeSum(data)
	first, err := fsx.TreeSum(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := image.Install(ctx, c, fsys, "tiny", image.Options{}); err != nil {
		t.Fatal(err)
	}
	second, _ := fsx.TreeSum(dir)
	if first != second {
		t.Fatalf("the same image installed twice differs: %s vs %s", first, second)
	}
	if dataAfter, _ := fsx.TreeSum(data); dataAfter != dataBefore {
		t.Fatal("a reinstall changed the data directory")
	}
	t.Logf("installed twice, identical trees: %s", first)

	var plan bytes.Buffer
	if err := image.Install(ctx, c, fsys, "tiny", image.Options{DryRun: true, Out: &plan}); err != nil || !strings.Contains(plan.String(), "step 3/7: provision inside") {
		t.Fatalf("plan: %v\n%s", err, plan.String())
	}

	err = image.Install(ctx, c, tiny("echo starting\nfalse\necho never\n"), "tiny", image.Options{})
	if err == nil || !strings.Contains(err.Error(), "provision.sh:2: 'false' failed with exit status 1") ||
		!strings.Contains(err.Error(), "starting") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("broken provision: want a one-line error naming provision.sh:2 with its output, got %v", err)
	}
	t.Logf("broken provision failed with: %v", err)
	if after, _ := fsx.TreeSum(dir); after != first {
		t.Fatal("a failed install changed the previous machine")
	}
	if _, err := os.Stat(filepath.Join(c.Paths.Machines, ".tiny.staging")); !os.IsNotExist(err) {
		t.Fatalf("staging left behind: %v", err)
	}
}

// TestNSpawnUserNamespace: a manifest that does not choose PrivateUsers= gets a user namespace with its data
// binds idmapped (the guest owns its data); one that chooses keeps its choice and plain binds.
func TestNSpawnUserNamespace(t *testing.T) {
	load := func(conf string) *image.Manifest {
		t.Helper()
		m, err := image.Load(fstest.MapFS{"redis/image.conf": {Data: []byte(conf)}}, "redis")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	got := load("[Image]\nPackages=redis-server\n[Data]\nBind=redis:/var/lib/redis\n[Exec]\nBoot=yes\n").NSpawnFile("/srv")
	for _, want := range []string{"[Exec]\nBoot=yes\nPrivateUsers=pick\nPrivateUsersOwnership=auto\n", "Bind=/srv/redis:/var/lib/redis:idmap\n"} {
		if !strings.Contains(got, want) {
			t.Fatalf("no choice: want %q in\n%s", want, got)
		}
	}
	if got := load("[Image]\n[Data]\nBind=redis:/var/lib/redis\n").NSpawnFile("/srv"); !strings.Contains(got, "[Exec]\nPrivateUsers=pick\n") {
		t.Fatalf("no [Exec] at all:\n%s", got)
	}
	got = load("[Data]\nBind=redis:/var/lib/redis\n[Exec]\nPrivateUsers=no\n").NSpawnFile("/srv")
	if strings.Contains(got, "pick") || strings.Contains(got, "idmap") || !strings.Contains(got, "Bind=/srv/redis:/var/lib/redis\n") {
		t.Fatalf("a manifest's own choice:\n%s", got)
	}
	// A range of its own (clear of the demo containers' ids): kept, with the rootfs mapped and the binds idmapped.
	got = load("[Data]\nBind=redis:/var/lib/redis\n[Exec]\nPrivateUsers=2097152:65536\n").NSpawnFile("/srv")
	for _, want := range []string{"[Exec]\nPrivateUsers=2097152:65536\nPrivateUsersOwnership=auto\n", "Bind=/srv/redis:/var/lib/redis:idmap\n"} {
		if !strings.Contains(got, want) || strings.Contains(got, "pick") {
			t.Fatalf("a range of its own: want %q (and no pick) in\n%s", want, got)
		}
	}
}

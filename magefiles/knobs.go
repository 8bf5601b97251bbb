package main

import (
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"berth/images"
	"berth/internal/fleet"
)

// settings are the operator's per-run switches, read from the environment here and nowhere else (the engine in
// internal/ gets them as typed options). They are not configuration: $BERTH_CONFIG and BERTH_<SECTION>_<KEY>
// are internal/config's contract; BERTH_<IMAGE>_<NAME> is an image's [Settings] Host input; CI and
// BERTH_TEST_* belong to the tests; INVOCATION_ID, JOURNAL_STREAM, SSL_CERT_FILE and GOPROXY are facts of
// the process, read where they matter.
type settings struct {
	Plan          bool              // PLAN
	Confirm       string            // CONFIRM
	Force         bool              // FORCE
	Images        string            // BERTH_IMAGES
	Sources       map[string]string // BERTH_SOURCE_<NAME>, keyed by NAME
	Debug         bool              // BERTH_DEBUG
	TestFlags     []string          // TESTFLAGS
	Dir           string            // DIR
	BenchRounds   int               // BENCH_ROUNDS
	BenchSwitches int               // BENCH_SWITCHES
}

// knobDocs is every knob, its name and what it does (the README's table lists the same).
var knobDocs = []struct{ Name, Doc string }{
	{"PLAN", "PLAN=1: <image>:install and machine:install print every step instead of running it"},
	{"CONFIRM", "CONFIRM=<image>: machine:purge deletes that image's data under [Paths] Srv"},
	{"FORCE", "FORCE=1 (true, yes): base:build, demo:build, relay:renew and demo:renew ignore caches and rebuild or renew now; pull pulls the installed build again"},
	{"BERTH_IMAGES", "BERTH_IMAGES=<dir>: image folders from dir instead of the ones compiled into berth"},
	{"BERTH_SOURCE_<NAME>", "BERTH_SOURCE_<NAME>=<path>: a local checkout or tarball replaces the git source NAME (upper case, dashes as underscores)"},
	{"BERTH_DEBUG", "BERTH_DEBUG=1: debug-level logs"},
	{"TESTFLAGS", "TESTFLAGS=<flags>: more flags for go test in test:all and test:unit"},
	{"DIR", "DIR=<dir>: units:generate writes the units of the effective configuration into dir"},
	{"BENCH_ROUNDS", "BENCH_ROUNDS=<n>: rounds of each pair in bench (default 3)"},
	{"BENCH_SWITCHES", "BENCH_SWITCHES=<n>: switches per algorithm in bench's availability run (default 20)"},
}

// knobs is read once, when the magefile starts.
var knobs = mustKnobs(readKnobs(os.LookupEnv, os.Environ()))

func mustKnobs(k settings, err error) settings {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return k
}

// readKnobs reads every knob through lookup, and BERTH_SOURCE_<NAME> from environ. A value that is set but
// makes no sense is an error naming the knob, before anything runs.
func readKnobs(lookup func(string) (string, bool), environ []string) (settings, error) {
	get := func(n string) string { v, _ := lookup(n); return v }
	k := settings{
		Confirm:   get("CONFIRM"),
		Images:    get("BERTH_IMAGES"),
		Debug:     get("BERTH_DEBUG") != "",
		TestFlags: strings.Fields(get("TESTFLAGS")),
		Dir:       get("DIR"),
		Sources:   map[string]string{},
	}
	var err error
	if k.Plan, err = flag("PLAN", get("PLAN")); err != nil {
		return k, err
	}
	if k.Force, err = flag("FORCE", get("FORCE")); err != nil {
		return k, err
	}
	if k.BenchRounds, err = count("BENCH_ROUNDS", get("BENCH_ROUNDS"), 3); err != nil {
		return k, err
	}
	if k.BenchSwitches, err = count("BENCH_SWITCHES", get("BENCH_SWITCHES"), 20); err != nil {
		return k, err
	}
	for _, kv := range environ {
		name, v, _ := strings.Cut(kv, "=")
		if s, ok := strings.CutPrefix(name, "BERTH_SOURCE_"); ok && s != "" && v != "" {
			k.Sources[s] = v
		}
	}
	return k, nil
}

func flag(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "0", "false", "no":
		return false, nil
	case "1", "true", "yes":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q: expected 1, true or yes (or 0, false, no)", name, v)
}

func count(name, v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: expected a positive whole number", name, v)
	}
	return n, nil
}

// imageFS is the image folders berth uses: BERTH_IMAGES, else the compiled-in ones.
func (k settings) imageFS() fs.FS { return images.Active(k.Images) }

// fleet is what the machine targets pass to the engine.
func (k settings) fleet() fleet.Options {
	return fleet.Options{Images: k.imageFS(), Sources: k.Sources, Plan: k.Plan, Confirm: k.Confirm, Force: k.Force}
}

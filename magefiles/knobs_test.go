package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestReadKnobs(t *testing.T) {
	env := map[string]string{"PLAN": "1", "FORCE": "yes", "CONFIRM": "mysql", "TESTFLAGS": "-run X -v", "BENCH_ROUNDS": "5"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	k, err := readKnobs(lookup, []string{"BERTH_SOURCE_STRFRY=/src/strfry", "BERTH_SOURCE_=x", "BERTH_SOURCE_EMPTY=", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	want := settings{Plan: true, Force: true, Confirm: "mysql", TestFlags: []string{"-run", "X", "-v"}, BenchRounds: 5, BenchSwitches: 20,
		Sources: map[string]string{"STRFRY": "/src/strfry"}}
	if !reflect.DeepEqual(k, want) {
		t.Errorf("got %+v, want %+v", k, want)
	}
	for n, v := range map[string]string{"PLAN": "maybe", "FORCE": "2", "BENCH_ROUNDS": "0", "BENCH_SWITCHES": "many"} {
		bad := func(k string) (string, bool) {
			if k == n {
				return v, true
			}
			return "", false
		}
		if _, err := readKnobs(bad, nil); err == nil || !strings.Contains(err.Error(), n+"=") {
			t.Errorf("%s=%s: want an error naming it, got %v", n, v, err)
		}
	}
}

// TestKnobsDocumented: every knob is in the README's table.
func TestKnobsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range knobDocs {
		if !strings.Contains(string(readme), "`"+k.Name) {
			t.Errorf("README's knob table lacks %s", k.Name)
		}
	}
}

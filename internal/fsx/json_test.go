package fsx

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJSONRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	type state struct {
		Active string          `json:"active"`
		Dirty  map[string]bool `json:"dirty"`
	}
	var got state
	if err := ReadJSON(p, &got); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := WriteJSON(p, state{Active: "demo1", Dirty: map[string]bool{"demo2": true}}, 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := ReadJSON(p, &got); err != nil || got.Active != "demo1" || !got.Dirty["demo2"] {
		t.Fatalf("read back %+v, %v", got, err)
	}
	os.WriteFile(p, []byte("{"), 0o600)
	if err := ReadJSON(p, &got); err == nil || !strings.HasPrefix(err.Error(), p+": ") {
		t.Fatalf("bad JSON: %v", err)
	}
}

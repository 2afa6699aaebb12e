package pibridge

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSecretFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // created on the way
	v := RandomText()
	if len(v) != 43 || v == RandomText() {
		t.Fatalf("RandomText %q: want 43 characters (256 bits), different each time", v)
	}
	if err := WriteSecretFile(dir, "token", v); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil || string(b) != v+"\n" {
		t.Fatalf("file holds %q (%v), want %q", b, err, v+"\n")
	}
	for name, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "token"): 0o600} {
		if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, want)
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Errorf("%d files in %s, want the secret alone (no temporary left)", len(es), dir)
	}
}

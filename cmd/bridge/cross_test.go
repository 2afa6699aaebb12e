package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestARMBinariesUnderQEMU runs the Pi builds under qemu-user: the binary
// that ships is the one tested. `make test` passes the binaries that `make
// cross` built; run alone, the test builds them itself.
func TestARMBinariesUnderQEMU(t *testing.T) {
	targets := []struct {
		file, qemu, goarch, goarm, wantArch string
	}{
		{"bridge-armv6", "qemu-arm-static", "arm", "6", "linux/arm"},
		{"bridge-arm64", "qemu-aarch64-static", "arm64", "", "linux/arm64"},
	}
	dir := os.Getenv("PIBRIDGE_CROSS_DIR")
	for _, tt := range targets {
		t.Run(tt.file, func(t *testing.T) {
			qemu, err := exec.LookPath(tt.qemu)
			if err != nil {
				t.Fatalf("%s not found: install it with `apt-get install qemu-user-static` (make test does)", tt.qemu)
			}
			bin := filepath.Join(dir, tt.file)
			if _, err := os.Stat(bin); dir == "" || err != nil {
				bin = filepath.Join(t.TempDir(), tt.file)
				build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
				build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+tt.goarch, "GOARM="+tt.goarm)
				if out, err := build.CombinedOutput(); err != nil {
					t.Fatalf("go build for %s: %v\n%s", tt.goarch, err, out)
				}
			}
			state := t.TempDir()
			runQEMU := func(args ...string) (string, int) {
				cmd := exec.Command(qemu, append([]string{bin}, args...)...)
				cmd.Env = append(os.Environ(), "PIBRIDGE_STATE_DIR="+state)
				out, err := cmd.CombinedOutput()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatalf("running %s under %s: %v", tt.file, tt.qemu, err)
				}
				return string(out), code
			}
			out, code := runQEMU("-version")
			if code != 0 || !strings.Contains(out, tt.wantArch) {
				t.Fatalf("-version: exit %d, output %q, want %s", code, out, tt.wantArch)
			}
			out, code = runQEMU("-check")
			if code != 0 || !strings.Contains(out, "air.temperature") || !strings.Contains(out, "configuration is valid") {
				t.Fatalf("-check (demo): exit %d\n%s", code, out)
			}
			example := filepath.Join("..", "..", "deploy", "raspi", "config.example.yaml")
			out, code = runQEMU("-check", "-config", example)
			if code != 0 {
				t.Fatalf("-check %s: exit %d\n%s", example, code, out)
			}
			bad := filepath.Join(t.TempDir(), "bad.yaml")
			os.WriteFile(bad, []byte("device: {id: x}\nbogus: 1\n"), 0o600)
			out, code = runQEMU("-check", "-config", bad)
			if code != 2 || !strings.Contains(out, "config: bogus: unknown key") {
				t.Fatalf("-check on a bad config: exit %d, want 2\n%s", code, out)
			}
		})
	}
}

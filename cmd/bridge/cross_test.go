package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/promtest"
)

// TestARMBinariesUnderQEMU runs the Pi builds under qemu-user: the binary
// that ships is the one tested. `make test` passes the binaries that `make
// cross` built; run alone, the test builds them itself. Each one prints its
// version, checks configs, drives the demo's outputs safe, and runs the
// demo: /healthz answers, a WebSocket client gets the hello, /metrics
// names the architecture, and SIGTERM ends it with exit 0.
func TestARMBinariesUnderQEMU(t *testing.T) {
	targets := []struct {
		file, qemu, goarch, goarm, wantArch string
	}{
		{"bridge-armv6", "qemu-arm-static", "arm", "6", "linux/arm"},
		{"bridge-armv7", "qemu-arm-static", "arm", "7", "linux/arm"},
		{"bridge-arm64", "qemu-aarch64-static", "arm64", "", "linux/arm64"},
	}
	dir := os.Getenv("PIBRIDGE_CROSS_DIR")
	for _, tt := range targets {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
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
			out, code = runQEMU("-safe-state")
			if code != 0 || !strings.Contains(out, "relay") {
				t.Fatalf("-safe-state (demo): exit %d\n%s", code, out)
			}
			demoUnderQEMU(t, qemu, bin, tt.goarch)
		})
	}
}

// demoUnderQEMU runs the demo on free loopback ports until SIGTERM.
func demoUnderQEMU(t *testing.T, qemu, bin, goarch string) {
	t.Helper()
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	logs := &syncBuffer{}
	cmd := exec.Command(qemu, bin)
	cmd.Env = append(os.Environ(),
		"PIBRIDGE_HTTP_LISTEN="+httpAddr,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN="+mqttAddr,
		"PIBRIDGE_STATE_DIR="+t.TempDir(),
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), logs)
		}
	})

	client := &http.Client{Timeout: 5 * time.Second}
	var health healthReport
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			health = healthReport{}
			json.NewDecoder(resp.Body).Decode(&health)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && health.Status == "ok" && health.MQTT == "connected" {
				break
			}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the demo exited before /healthz answered: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz not ok with MQTT connected within 60 s: last %+v, %v", health, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+httpAddr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hello struct {
		Type    string `json:"type"`
		Device  struct{ ID, Version string }
		Signals []struct{ Name string }
	}
	if err := conn.ReadJSON(&hello); err != nil {
		t.Fatalf("reading the hello: %v", err)
	}
	conn.Close()
	if hello.Type != "hello" || hello.Device.ID != "demo" || len(hello.Signals) != len(demoSignals) {
		t.Fatalf("hello = %+v", hello)
	}

	fams := scrapeMetrics(t, httpAddr)
	if v := promtest.Value(t, fams, "pibridge_build_info", map[string]string{"goarch": goarch}); v != 1 {
		t.Errorf("pibridge_build_info{goarch=%q} = %v", goarch, v)
	}
	if !strings.Contains(logs.String(), "panel: http://"+httpAddr) {
		t.Errorf("no panel URL on stderr")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15 s after SIGTERM")
	}
}

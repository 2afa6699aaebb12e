package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBrokenConfigs(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every line, in order
	}{
		{
			name: "unknown keys",
			yaml: "board: sim\noutputs:\n  - {name: led, pin: GPIO22, colour: red}\nmqtt:\n  brokr: tcp://x:1883\n",
			want: []string{"outputs[0].colour: unknown key (line 3)", "mqtt.brokr: unknown key (line 5)"},
		},
		{
			name: "duplicate pin by another name",
			yaml: "board: sim\ninputs:\n  - {name: door, pin: GPIO17}\noutputs:\n  - {name: led, pin: P1_11}\n",
			want: []string{`outputs[0].pin: "P1_11" is GPIO17, already used by inputs[0]`},
		},
		{
			name: "duplicate name",
			yaml: "board: sim\ninputs:\n  - {name: led, pin: GPIO17}\noutputs:\n  - {name: led, pin: GPIO22}\n",
			want: []string{`outputs[0].name: "led" is already used by inputs[0]`},
		},
		{
			name: "bad names",
			yaml: "board: sim\noutputs:\n  - {name: a/b, pin: GPIO22}\n  - {name: \"x#\", pin: GPIO23}\n  - {name: status, pin: GPIO24}\n",
			want: []string{
				`outputs[0].name: "a/b": only a-z, 0-9, _ and - are allowed (found '/')`,
				`outputs[1].name: "x#": only a-z, 0-9, _ and - are allowed (found '#')`,
				`outputs[2].name: "status" is reserved`,
			},
		},
		{
			name: "bad durations",
			yaml: "board: sim\ninputs:\n  - {name: door, pin: GPIO17, debounce: 20}\noutputs:\n  - name: pump\n    pin: GPIO22\n    max_on: 10 minutes\n",
			want: []string{
				`inputs[0].debounce: "20": not a duration (want e.g. "500ms", "10s", "5m")`,
				`outputs[0].max_on: "10 minutes": not a duration (want e.g. "500ms", "10s", "5m")`,
			},
		},
		{
			name: "unknown sensor type beside a decoding error",
			yaml: "board: sim\nsensors:\n  - {name: air, type: bme281}\n  - {name: cpu, type: cpu_temp, interval: fast}\n",
			want: []string{
				`sensors[1].interval: "fast": not a duration (want e.g. "500ms", "10s", "5m")`,
				`sensors[0].type: "bme281": unknown sensor type (want bme280, bmp280, ds18b20, ads1115, cpu_temp or sim)`,
			},
		},
		{
			name: "every section at once",
			yaml: "device: {id: \"Bad Id\"}\nboard: sim\nhttp: {listen: nope}\nmqtt: {qos: 3, topic_prefix: \"a/+\"}\noutputs:\n  - {name: pump, pin: GPIO99}\n  - {name: pump2, pin: P1_2}\n",
			want: []string{
				`device.id: "Bad Id": only a-z, 0-9, _ and - are allowed (found 'B')`,
				`http.listen: "nope": must be host:port, such as "0.0.0.0:8080"`,
				`mqtt.topic_prefix: "a/+": must not contain + or #`,
				`mqtt.qos: 3: must be 0, 1 or 2`,
				`outputs[0].pin: "GPIO99": no such pin`,
				`outputs[1].pin: "P1_2" is 5V power, not a GPIO`,
			},
		},
		{
			name: "two signals on one Homie property",
			yaml: "board: sim\nmqtt: {homie: {enabled: true}}\noutputs:\n  - {name: a_b, pin: GPIO22}\n  - {name: a-b, pin: GPIO23}\n",
			want: []string{`mqtt.homie: signals a_b and a-b both map to Homie node "outputs" property "a-b"; rename one`},
		},
		{
			name: "wrong type",
			yaml: "board: sim\noutputs: {name: led}\nmqtt: {queue_max: lots}\n",
			want: []string{`outputs: want a list, not a mapping`, `mqtt.queue_max: "lots": want a whole number`},
		},
		{
			name: "an explicit zero is a value, not the default",
			yaml: "device: {id: \"\"}\nboard: sim\nhttp: {max_clients: 0}\nmqtt: {queue_max: 0, qos: 1.5}\n",
			want: []string{
				`mqtt.qos: "1.5": want a whole number`,
				`device.id: must not be empty`,
				`http.max_clients: 0: must be at least 1`,
				`mqtt.queue_max: 0: must be at least 1`,
			},
		},
		{
			name: "syntax error",
			yaml: "board: sim\noutputs:\n  - {name: pump, pin: GPIO22\n",
			want: []string{`line 2: did not find expected ',' or '}'`},
		},
		{
			name: "empty file",
			yaml: "",
			want: []string{"the file is empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"-check", "-config", path}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr)
			if code := exitStatus(err, &stderr); code != 2 {
				t.Fatalf("exit status %d, want 2 (err %v)", code, err)
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, "config: "+w)
			}
			if got := strings.TrimSpace(stderr.String()); got != strings.Join(want, "\n") {
				t.Fatalf("stderr:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
			}
		})
	}
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestCheckPrintsTheTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-check"}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr)
	if err != nil {
		t.Fatalf("demo -check: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{
		"button                 input   no              GPIO17",
		"led                    output  yes             GPIO22",
		"fan                    pwm     yes             GPIO18",
		"air.temperature        sensor  no       °C     bme280",
		"configuration is valid",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("-check output lacks %q:\n%s", want, stdout.String())
		}
	}
	example := filepath.Join("..", "..", "deploy", "raspi", "config.example.yaml")
	stdout.Reset()
	if err := run(t.Context(), []string{"-check", "-config", example}, envOf(nil), &stdout, &stderr); err != nil {
		t.Fatalf("%s: %v\n%s", example, err, stderr.String())
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{args: []string{"-version"}, code: 0, inStdout: "bridge dev ("},
		{args: []string{"-log-level", "loud", "-check"}, code: 2, inStderr: `-log-level "loud": want debug, info, warn or error`},
		{args: []string{"-log-format", "xml", "-check"}, code: 2, inStderr: `-log-format "xml": want text or json`},
		{args: []string{"-nope"}, code: 2, inStderr: "flag provided but not defined: -nope"},
		{args: []string{"extra"}, code: 2, inStderr: `unexpected argument "extra"`},
		{args: []string{"-config", "/does/not/exist.yaml", "-check"}, code: 2, inStderr: "config: open /does/not/exist.yaml: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr)
			code := exitStatus(err, &stderr)
			if code != tt.code || !strings.Contains(stdout.String(), tt.inStdout) || !strings.Contains(stderr.String(), tt.inStderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
		})
	}
}

// Hostile files cost little: a size cap, one problem per repeated key,
// a bound on the keys of a mapping and on the problems listed.
func TestHostileConfigs(t *testing.T) {
	keys := func(n int, key func(i int) string) string {
		var b strings.Builder
		b.WriteString("board: sim\n")
		for i := range n {
			b.WriteString(key(i) + ": 1\n")
		}
		return b.String()
	}
	tests := []struct {
		name  string
		yaml  string
		first []string // the first lines of stderr
		last  string   // the last line, "" for none in particular
		lines int      // the number of lines, 0 for any up to maxProblems+1
	}{
		{
			name:  "3,000 copies of one key",
			yaml:  keys(3000, func(int) string { return "a" }),
			first: []string{"config: a: defined 3000 times (lines 2, 3, 4, 5, 6, …); a key may appear once", "config: a: unknown key (line 2)"},
			lines: 2,
		},
		{
			name: "keys repeated in a section, once each",
			yaml: "board: sim\nmqtt:\n  qos: 1\n  qos: 2\n  topic_prefix: a\n  qos: 0\n  topic_prefix: b\n",
			first: []string{
				"config: mqtt.qos: defined 3 times (lines 3, 4, 6); a key may appear once",
				"config: mqtt.topic_prefix: defined 2 times (lines 5, 7); a key may appear once",
			},
			lines: 2,
		},
		{
			name:  "100,000 distinct unknown keys",
			yaml:  keys(100000, func(i int) string { return fmt.Sprintf("k%d", i) }),
			first: []string{"config: the top level: 100001 keys; at most 256 are read (the rest from line 257 on are ignored)", "config: k0: unknown key (line 2)"},
			last:  "config: … and 206 more",
			lines: maxProblems + 1,
		},
		{
			name:  "a problem for each of 500 outputs",
			yaml:  "board: sim\noutputs:\n" + strings.Repeat("  - {name: o, pin: GPIO99}\n", 500),
			first: []string{`config: outputs[0].pin: "GPIO99": no such pin`},
			last:  fmt.Sprintf("config: … and %d more", 500*2-1-maxProblems),
			lines: maxProblems + 1,
		},
		{
			name:  "over 1 MiB",
			yaml:  "board: sim\n#" + strings.Repeat("x", 2<<20) + "\n",
			first: []string{"config: CONFIG: the file is 2097165 bytes; a config file may be at most 1048576 bytes (1 MiB)"},
			lines: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			// What bounds the work is asserted below (keys read, problems
			// listed), not a time: a loaded CI machine is not a slow parser.
			err := run(ctx, []string{"-check", "-config", path}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr)
			if code := exitStatus(err, &stderr); code != 2 {
				t.Fatalf("exit status %d, want 2 (err %v)", code, err)
			}
			got := strings.Split(strings.TrimSpace(strings.ReplaceAll(stderr.String(), path, "CONFIG")), "\n")
			if tt.lines != 0 && len(got) != tt.lines {
				t.Errorf("%d lines, want %d; the first: %q", len(got), tt.lines, got[:min(len(got), 5)])
			}
			for i, w := range tt.first {
				if i >= len(got) || got[i] != w {
					t.Errorf("line %d = %q, want %q", i, got[min(i, len(got)-1)], w)
				}
			}
			if tt.last != "" && got[len(got)-1] != tt.last {
				t.Errorf("last line %q, want %q", got[len(got)-1], tt.last)
			}
		})
	}
}

// A signal ends -check even while the file cannot be read: here a FIFO
// that nobody writes, so the read would wait forever.
func TestCheckHonoursSignals(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "config.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	t.Cleanup(func() { // lets the abandoned reader go
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		done <- run(ctx, []string{"-check", "-config", fifo}, envOf(map[string]string{"PIBRIDGE_STATE_DIR": t.TempDir()}), &stdout, &stderr)
	}()
	select {
	case err := <-done:
		t.Fatalf("run returned before the signal: %v", err)
	case <-time.After(200 * time.Millisecond): // the read is under way: nothing to poll for
	}
	cancel()
	select {
	case err := <-done:
		var ce *configError
		if err == nil || errors.As(err, &ce) {
			t.Errorf("run = %v, want the signal's error, not a config problem", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("-check did not end within 5 s of the signal")
	}
}

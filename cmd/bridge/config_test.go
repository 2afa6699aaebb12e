package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

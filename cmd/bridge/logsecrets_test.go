package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/logring"
	"pibridge/mqtt"
)

// A demo run with both tokens configured, where each token also travels
// where a log record may pick it up (a command naming it, logins, bearer
// headers): neither the panel's log records nor the log on stderr may
// show it.
func TestLogsKeepNoSecrets(t *testing.T) {
	cfg := panelConfig(t, panelToken, panelReadToken)
	b := panelBridge(t, t, freeAddr(t), freeAddr(t), t.TempDir(), "-config", cfg)
	base := "http://" + b.http

	do := func(method, path, token, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	do(http.MethodPost, "/api/login", "", `{"token":"`+panelToken+`x"}`)
	do(http.MethodPost, "/api/login", "", `{"token":"`+panelReadToken+`"}`)
	do(http.MethodGet, "/api/state", panelToken+"x", "")
	do(http.MethodGet, "/api/state?token="+panelToken, "", "")

	// Commands naming the tokens are refused and logged (ws, debug) with
	// the name they gave.
	h := http.Header{"Authorization": {"Bearer " + panelToken}, "Origin": {base}}
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+b.http+"/ws", h)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, name := range []string{panelToken, panelReadToken} {
		if err := conn.WriteJSON(map[string]any{"type": "set", "id": "s", "name": name, "value": true}); err != nil {
			t.Fatal(err)
		}
	}
	for acks := 0; acks < 2; {
		var m map[string]any
		if err := conn.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m["type"] == "ack" || m["type"] == "error" {
			acks++
		}
	}

	var snap struct{ Records []logring.Record }
	eventually(t, 5*time.Second, "the refused commands were not logged", func() bool {
		code, body := do(http.MethodGet, "/api/logs", panelToken, "")
		if code != http.StatusOK || json.Unmarshal(body, &snap) != nil {
			return false
		}
		n := 0
		for _, r := range snap.Records {
			if r.Part == "ws" && strings.Contains(r.Msg, "command failed") {
				n++
			}
		}
		return n >= 2
	})
	_, text := do(http.MethodGet, "/api/logs?format=text", panelReadToken, "")
	if len(snap.Records) < 10 || !strings.Contains(string(text), "panel listening") {
		t.Fatalf("%d records; text download:\n%s", len(snap.Records), text)
	}
	for _, secret := range []string{panelToken, panelReadToken} {
		for _, r := range snap.Records {
			if strings.Contains(r.Text(), secret) {
				t.Errorf("record %d shows a token: %s", r.Seq, r.Text())
			}
		}
		if strings.Contains(string(text), secret) {
			t.Errorf("the log download shows a token")
		}
		for _, line := range strings.Split(b.logs.String(), "\n") {
			if strings.Contains(line, "level=") && strings.Contains(line, secret) {
				t.Errorf("stderr log line shows a token: %s", line)
			}
		}
	}
	if !strings.Contains(string(text), "signal=[redacted]") {
		t.Errorf("the refused commands' names were not redacted:\n%s", text)
	}
}

// secrets reads the tokens and passwords the bridge may hold in files:
// http.token_file, mqtt.password_file, the generated token and embedded
// broker password in state_dir, the users of embedded_users_file.
func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := &Config{StateDir: dir}
	cfg.HTTP.Token = "inline-token-0123456789"
	cfg.HTTP.ReadToken = "none"
	cfg.HTTP.TokenFile = write("tokfile", "file-token-0123456789\n")
	cfg.MQTT.PasswordFile = write("mqttpw", "mqtt-password-xyz\n")
	write("token", "generated-token-0123456789\n")
	write(mqtt.EmbeddedPasswordFile, "embedded-password-abc\n")
	got := strings.Join(secrets(cfg), " ")
	for _, want := range []string{"inline-token-0123456789", "file-token-0123456789", "mqtt-password-xyz", "generated-token-0123456789", "embedded-password-abc"} {
		if !strings.Contains(got, want) {
			t.Errorf("secrets %q lack %q", got, want)
		}
	}
	if strings.Contains(" "+got+" ", " none ") {
		t.Errorf("secrets %q hold the word none", got)
	}
}

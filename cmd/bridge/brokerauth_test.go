package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"pibridge/mqtt"

	"pibridge/internal/testkit"
)

// The embedded broker with embedded_users_file: the bridge's own client
// still connects (credentials of its own), an anonymous client is
// refused, a listed user commands an output and gets its ack.
func TestEmbeddedBrokerUsersEndToEnd(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "mqtt-users")
	if err := os.WriteFile(users, []byte("# who may use the broker\nha:s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf("device: {id: demo}\nboard: sim\nmqtt: {broker: embedded, embedded_users_file: %q, homeassistant: {discovery: false}}\noutputs:\n  - {name: led, pin: GPIO22}\n", users)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	env := map[string]string{"PIBRIDGE_HTTP_LISTEN": httpAddr, "PIBRIDGE_MQTT_EMBEDDED_LISTEN": mqttAddr, "PIBRIDGE_STATE_DIR": filepath.Join(dir, "state")}
	logs := &syncBuffer{}
	t.Cleanup(func() { // runs after the bridge has stopped
		if t.Failed() {
			t.Logf("bridge log:\n%s", logs)
		}
	})
	testkit.Start(t, 10*time.Second, func(ctx context.Context) error {
		return run(ctx, []string{"-config", cfgPath}, func(k string) string { return env[k] }, io.Discard, logs)
	})
	eventually(t, 10*time.Second, "/healthz to report MQTT connected", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h healthReport
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.MQTT == "connected"
	})

	connect := func(user, pw string) (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID(fmt.Sprintf("t-%d", time.Now().UnixNano())).
			SetConnectTimeout(5 * time.Second).SetUsername(user).SetPassword(pw)
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			return nil, fmt.Errorf("no answer")
		}
		return c, tok.Error()
	}
	if c, err := connect("", ""); err == nil {
		c.Disconnect(50)
		t.Fatal("an anonymous client connected to the embedded broker with users")
	}
	c, err := connect("ha", "s3cret")
	if err != nil {
		t.Fatalf("user ha: %v", err)
	}
	defer c.Disconnect(100)
	acks := make(chan string, 4)
	if tok := c.Subscribe("pibridge/demo/ack", 1, func(_ paho.Client, m paho.Message) { acks <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish("pibridge/demo/led/set", 1, false, `{"value":"on","id":"e1"}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case a := <-acks:
		if a != `{"id":"e1","name":"led","ok":true}` {
			t.Errorf("ack %s", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ack to the user's command")
	}
}

// Beyond loopback without embedded_users_file, a password is generated in
// state_dir (0600), printed once, and the same one is used next time.
func TestEmbeddedAuthGeneratesPassword(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte("board: sim\nmqtt: {broker: embedded, embedded_listen: \"0.0.0.0:1883\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	var pws []string
	for start := range 2 {
		cfg, err := loadConfig(cfgPath, envOf(map[string]string{"PIBRIDGE_STATE_DIR": state}))
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.MQTT.EmbeddedNeedsAuth() {
			t.Fatal("embedded_listen 0.0.0.0 does not ask for credentials")
		}
		var stderr bytes.Buffer
		a, _, err := embeddedAuth(cfg, slog.New(slog.DiscardHandler), &stderr)
		if err != nil {
			t.Fatal(err)
		}
		pw := a.Users[mqtt.EmbeddedUser]
		pws = append(pws, pw)
		printed := strings.Contains(stderr.String(), pw)
		if want := start == 0; printed != want || pw == "" {
			t.Errorf("start %d: password printed %v, want %v (stderr %q)", start, printed, want, stderr.String())
		}
		if a.BridgeUser != mqtt.EmbeddedBridgeUser || a.BridgePassword == "" || a.BridgePassword == pw {
			t.Errorf("start %d: the bridge's own credentials %q / %q", start, a.BridgeUser, a.BridgePassword)
		}
	}
	if pws[0] != pws[1] {
		t.Error("the password changed between starts")
	}
	fi, err := os.Stat(filepath.Join(state, mqtt.EmbeddedPasswordFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v, want mode 0600", err, fi)
	}
}

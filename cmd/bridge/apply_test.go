package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pibridge"
	"pibridge/gpio"
	"pibridge/internal/testkit"
	"pibridge/web/paneltest"
)

// applyConfig is the file the apply tests start from; valve and cpu's
// interval are what the edits change.
const applyConfig = `device: {id: applytest, name: "apply test"}
board: sim
http:
  token: ` + panelToken + `
  read_token: ` + panelReadToken + `
mqtt:
  broker: embedded
outputs:
  - {name: led,   pin: GPIO22}
  - {name: relay, pin: GPIO23, initial: on}
  - {name: valve, pin: GPIO24}
sensors:
  - {name: cpu, type: cpu_temp, interval: 5s}
`

// applyEdit renames valve to tap and reads cpu every 2 s.
var applyEdit = strings.NewReplacer("name: valve", "name: tap", "interval: 5s", "interval: 2s").Replace(applyConfig)

// applyBusy adds an output on GPIO5, which validates but fails to open
// (PIBRIDGE_SIM_BUSY).
var applyBusy = strings.Replace(applyEdit, "sensors:", "  - {name: heater, pin: GPIO5}\nsensors:", 1)

// epochs records each start of the bridge's parts, the first and every
// apply and rollback after it.
type epochs struct {
	mqtt   string // the embedded broker's address
	mu     sync.Mutex
	boards []*gpio.Board
	cores  []*pibridge.Core
}

func (e *epochs) n() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.boards)
}

func (e *epochs) last() (*gpio.Board, *pibridge.Core) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.boards[len(e.boards)-1], e.cores[len(e.cores)-1]
}

// applyBridge runs the bridge on applyConfig in a file of its own.
func applyBridge(t *testing.T) (path, base string, ep *epochs, logs *syncBuffer) {
	dir := t.TempDir()
	path = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(applyConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	env := map[string]string{
		"PIBRIDGE_HTTP_LISTEN":          httpAddr,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN": mqttAddr,
		"PIBRIDGE_STATE_DIR":            t.TempDir(),
		"PIBRIDGE_SIM_BUSY":             "GPIO5",
	}
	ep = &epochs{mqtt: mqttAddr}
	started = func(b *gpio.Board, c *pibridge.Core) {
		ep.mu.Lock()
		ep.boards, ep.cores = append(ep.boards, b), append(ep.cores, c)
		ep.mu.Unlock()
	}
	logs = &syncBuffer{}
	// Registered first, so it runs after the bridge has stopped.
	t.Cleanup(func() {
		started = nil
		if t.Failed() {
			t.Logf("bridge log:\n%s", logs)
		}
	})
	testkit.Start(t, 10*time.Second, func(ctx context.Context) error {
		return run(ctx, []string{"-config", path}, func(k string) string { return env[k] }, io.Discard, logs)
	})
	base = "http://" + httpAddr
	waitHealthy(t, base)
	return path, base, ep, logs
}

func waitHealthy(t *testing.T, base string) {
	t.Helper()
	eventually(t, 15*time.Second, "/healthz never reported MQTT connected", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h healthReport
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.MQTT == "connected"
	})
}

func apiCall(t *testing.T, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	code, b, err := tryAPI(method, url, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, b
}

// tryAPI is one request with a token; an error while the parts restart is
// expected, not a failure.
func tryAPI(method, url, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func applyStatusOf(t *testing.T, base string) applyStatus {
	t.Helper()
	var st applyStatus
	code, b, err := tryAPI("GET", base+"/api/config/status", panelToken, nil)
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &st) != nil {
		return applyStatus{State: "unreachable"}
	}
	return st
}

// pinWrites counts the writes to the pins of these outputs.
func pinWrites(t *testing.T, b *gpio.Board, names ...string) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, n := range names {
		w, ok := b.PinWrites(n)
		if !ok {
			t.Fatalf("%s: no such output on the board", n)
		}
		m[n] = w
	}
	return m
}

func TestSIGHUPAndApply(t *testing.T) {
	path, base, ep, logs := applyBridge(t)
	board, _ := ep.last()
	if err := board.Set(context.Background(), "led", pibridge.Bool(true)); err != nil {
		t.Fatal(err)
	}
	kept := pinWrites(t, board, "led", "relay")

	t.Run("SIGHUP with a broken file changes nothing and logs why", func(t *testing.T) {
		broken := strings.Replace(applyConfig, "pin: GPIO24", "pin: GPIO99", 1)
		if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "no log of the refused SIGHUP", func() bool {
			return strings.Contains(logs.String(), "SIGHUP: the configuration file was not applied; nothing changed") &&
				strings.Contains(logs.String(), "GPIO99")
		})
		if ep.n() != 1 {
			t.Errorf("the parts restarted (%d epochs) on a broken file", ep.n())
		}
		if st := applyStatusOf(t, base); st.State != "idle" {
			t.Errorf("status %q after a refused SIGHUP, want idle", st.State)
		}
	})

	t.Run("SIGHUP with a good file applies; untouched outputs never written", func(t *testing.T) {
		if err := os.WriteFile(path, []byte(applyEdit), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the SIGHUP apply never became applied", func() bool {
			return applyStatusOf(t, base).State == "applied"
		})
		b, core := ep.last()
		if got := pinWrites(t, b, "led", "relay"); got["led"] != kept["led"] || got["relay"] != kept["relay"] {
			t.Errorf("untouched outputs written: before %v, after %v", kept, got)
		}
		for _, n := range []string{"led", "relay"} {
			if v, _ := b.Level(n); !v.Bool() {
				t.Errorf("%s went off across the apply", n)
			}
		}
		if _, ok := b.Level("tap"); !ok {
			t.Error("the renamed output tap is not on the board")
		}
		if _, ok := b.Level("valve"); ok {
			t.Error("the old name valve is still on the board")
		}
		if ri := core.RunInfo(); !ri.Clean || ri.FirstSeq != ri.PreviousLastSeq+1 {
			t.Errorf("seq has a hole across the apply: %+v", ri)
		}
		if !strings.Contains(logs.String(), `who=SIGHUP`) || !strings.Contains(logs.String(), "changes.added=[tap]") {
			t.Error("the apply log does not say who and what")
		}
		// The new table on MQTT: tap's retained state, and valve's gone
		// with the embedded broker that restarted.
		w := watchMQTT(t, ep.mqtt, "pibridge/applytest/#")
		eventually(t, 5*time.Second, "no retained state of tap", func() bool {
			return w.find(func(topic string, _ []byte, retained bool) bool { return topic == "pibridge/applytest/tap" && retained })
		})
		if w.find(func(topic string, _ []byte, _ bool) bool { return topic == "pibridge/applytest/valve" }) {
			t.Error("valve's retained state is still on the embedded broker")
		}
	})

	t.Run("the read token may not apply", func(t *testing.T) {
		if code, _ := apiCall(t, "POST", base+"/api/config/apply", panelReadToken, []byte(applyEdit)); code != http.StatusForbidden {
			t.Errorf("read token: %d, want 403", code)
		}
	})

	t.Run("an invalid text is refused, nothing written", func(t *testing.T) {
		code, body := apiCall(t, "POST", base+"/api/config/apply", panelToken, []byte(strings.Replace(applyEdit, "GPIO24", "GPIO99", 1)))
		if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "GPIO99") {
			t.Errorf("invalid: %d %s", code, body)
		}
		if b, _ := os.ReadFile(path); string(b) != applyEdit {
			t.Error("the file changed on a refused apply")
		}
	})

	t.Run("a pin that cannot open rolls back within 15 s", func(t *testing.T) {
		b, _ := ep.last()
		before := pinWrites(t, b, "led", "relay")
		n := ep.n()
		start := time.Now()
		code, body := apiCall(t, "POST", base+"/api/config/apply", panelToken, []byte(applyBusy))
		if code != http.StatusAccepted {
			t.Fatalf("apply: %d %s", code, body)
		}
		var st applyStatus
		eventually(t, 20*time.Second, "no rollback", func() bool {
			st = applyStatusOf(t, base)
			return st.State == "rolled_back"
		})
		if d := time.Since(start); d > applyHealthyWithin {
			t.Errorf("rolled back after %s", d)
		}
		if !strings.Contains(st.Reason, "GPIO5") || !strings.Contains(st.Reason, "heater") {
			t.Errorf("reason %q does not name the pin", st.Reason)
		}
		if got, _ := os.ReadFile(path); string(got) != applyEdit {
			t.Errorf("the file was not restored:\n%s", got)
		}
		if got, _ := os.ReadFile(path + ".prev"); string(got) != applyEdit {
			t.Errorf("config.yaml.prev is not the previous file:\n%s", got)
		}
		eventually(t, 10*time.Second, "the previous configuration did not start again", func() bool { return ep.n() > n })
		waitHealthy(t, base)
		b, _ = ep.last()
		if got := pinWrites(t, b, "led", "relay"); got["led"] != before["led"] || got["relay"] != before["relay"] {
			t.Errorf("untouched outputs written across the rollback: before %v, after %v", before, got)
		}
		if _, ok := b.Level("heater"); ok {
			t.Error("heater is on the board after the rollback")
		}
	})
}

// A broker that does not answer, where the running one did, rolls back
// after applyHealthyWithin with the reason.
func TestApplyUnreachableBrokerRollsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 15 s health gate")
	}
	path, base, ep, _ := applyBridge(t)
	dead := freeAddr(t) // nothing listens there
	text := strings.Replace(applyConfig, "broker: embedded", "broker: tcp://"+dead, 1)
	code, body := apiCall(t, "POST", base+"/api/config/apply", panelToken, []byte(text))
	if code != http.StatusAccepted {
		t.Fatalf("apply: %d %s", code, body)
	}
	start := time.Now()
	var st applyStatus
	eventually(t, applyHealthyWithin+10*time.Second, "no rollback", func() bool {
		st = applyStatusOf(t, base)
		return st.State == "rolled_back"
	})
	if d := time.Since(start); d < applyHealthyWithin-time.Second || d > applyHealthyWithin+5*time.Second {
		t.Errorf("rolled back after %s, want about %s", d, applyHealthyWithin)
	}
	if !strings.Contains(st.Reason, "MQTT did not connect") || !strings.Contains(st.Reason, dead) {
		t.Errorf("reason %q", st.Reason)
	}
	if got, _ := os.ReadFile(path); string(got) != applyConfig {
		t.Errorf("the file was not restored:\n%s", got)
	}
	waitHealthy(t, base)
	if ep.n() != 3 {
		t.Errorf("%d epochs, want 3 (start, apply, rollback)", ep.n())
	}
}

// setConfigText replaces the settings page's text as typing would.
func setConfigText(t *testing.T, br *paneltest.Browser, text string) {
	t.Helper()
	js, _ := json.Marshal(text)
	paneltest.Eval[bool](t, br, `(() => { const ta = document.querySelector('#config-text'); ta.value = `+string(js)+`; ta.dispatchEvent(new Event('input')); return true; })()`)
}

// applyFromPanel clicks Apply, confirms, and waits for the outcome.
func applyFromPanel(t *testing.T, br *paneltest.Browser) (state, note string) {
	t.Helper()
	br.WaitFor(t, `pibridge.state.pages.pages.settings.report && pibridge.state.pages.pages.settings.report.valid && !document.querySelector('#config-apply').disabled`)
	br.Click(t, `#config-apply`)
	br.WaitFor(t, `!document.querySelector('#config-apply-cancel').hidden`)
	br.Click(t, `#config-apply`)
	br.WaitFor(t, `['applied', 'rolled_back', 'refused', 'error'].includes(document.querySelector('#config-apply-note').dataset.state)`)
	return paneltest.Eval[string](t, br, `document.querySelector('#config-apply-note').dataset.state`), br.Text(t, "#config-apply-note")
}

// The settings page applies an edit, and rolls back one whose pin cannot
// open, saying why; the outputs the edits leave alone are never written.
func TestPanelApply(t *testing.T) {
	path, base, ep, _ := applyBridge(t)
	board, _ := ep.last()
	if err := board.Set(context.Background(), "led", pibridge.Bool(true)); err != nil {
		t.Fatal(err)
	}
	kept := pinWrites(t, board, "led", "relay")
	br := paneltest.Start(t, 2*time.Minute)
	br.SetViewport(t, paneltest.Desktop)
	br.AllowNetworkErrors(true) // the login's 401s, and the restart drops the WebSocket
	br.Navigate(t, base+"/")
	br.WaitFor(t, `!document.querySelector('#login-panel').hidden`)
	if msg := signIn(t, br, panelToken); msg != "" {
		t.Fatalf("login: %q", msg)
	}
	br.Click(t, `#pages a[data-page="settings"]`)
	br.WaitFor(t, `pibridge.state.pages.pages.settings.validations >= 1`)
	if !paneltest.Eval[bool](t, br, `document.querySelector('#config-apply').disabled`) {
		t.Error("Apply is enabled for the running text")
	}

	t.Run("a rename and a new interval apply; untouched pins never written", func(t *testing.T) {
		setConfigText(t, br, applyEdit)
		state, note := applyFromPanel(t, br)
		if state != "applied" || !strings.Contains(note, "added tap") {
			t.Fatalf("outcome %s: %q", state, note)
		}
		b, _ := ep.last()
		if got := pinWrites(t, b, "led", "relay"); got["led"] != kept["led"] || got["relay"] != kept["relay"] {
			t.Errorf("untouched outputs written: before %v, after %v", kept, got)
		}
		br.WaitFor(t, `!!document.querySelector('#config-signals tbody tr[data-signal="tap"]') && !document.querySelector('#config-signals tbody tr[data-signal="valve"]')`)
		if got, _ := os.ReadFile(path); string(got) != applyEdit {
			t.Errorf("the file is not the applied text:\n%s", got)
		}
		br.Click(t, `#pages a[data-page="signals"]`)
		br.WaitFor(t, `pibridge.state.status === 'live' && !!`+tileJS("tap")+` && !`+tileJS("valve"))
		br.Click(t, `#pages a[data-page="settings"]`)
	})

	t.Run("a pin that cannot open rolls back with the reason shown", func(t *testing.T) {
		b, _ := ep.last()
		before := pinWrites(t, b, "led", "relay")
		br.WaitFor(t, `pibridge.state.pages.pages.settings.loaded`)
		setConfigText(t, br, applyBusy)
		start := time.Now()
		state, note := applyFromPanel(t, br)
		if state != "rolled_back" || !strings.Contains(note, "GPIO5") {
			t.Fatalf("outcome %s: %q", state, note)
		}
		if d := time.Since(start); d > applyHealthyWithin {
			t.Errorf("rolled back after %s", d)
		}
		br.WaitFor(t, `!document.querySelector('#config-signals tbody tr[data-signal="heater"]') && !!document.querySelector('#config-signals tbody tr[data-signal="tap"]')`)
		b, _ = ep.last()
		if got := pinWrites(t, b, "led", "relay"); got["led"] != before["led"] || got["relay"] != before["relay"] {
			t.Errorf("untouched outputs written across the rollback: before %v, after %v", before, got)
		}
	})
}

// writeAtomic replaces the file whole, keeps its mode and leaves no
// temporary file behind.
func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("content %q", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files in the directory, want 1", len(ents))
	}
	if err := writeAtomic(filepath.Join(dir, "missing", "config.yaml"), []byte("x")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing directory: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	_ "image/png"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"gopkg.in/yaml.v3"

	"pibridge"
	"pibridge/gpio"
	"pibridge/web/paneltest"
)

// The panel tests run the real bridge through run, as TestDemoEndToEnd does,
// and drive its panel in headless Chromium with real mouse and keyboard input.
// They need /usr/bin/chromium (make test installs it).
//
// PIBRIDGE_SCREENSHOTS=1 writes the screenshots for the README into docs/;
// otherwise they go to a temporary directory, so that the capture is tested
// on every run.

// panelBridge starts the bridge on the given addresses and state directory,
// so that a test can stop it and start another one in its place. args are
// extra flags (-config). It is stopped when owner ends: t itself, or the
// parent test when a subtest starts it.
func panelBridge(t, owner *testing.T, httpAddr, mqttAddr, stateDir string, args ...string) *bridgeUnderTest {
	t.Helper()
	return panelBridgeVia(t, owner, http.DefaultClient, "http://"+httpAddr, httpAddr, mqttAddr, stateDir, args...)
}

// panelBridgeVia is panelBridge for a bridge that client reaches at base
// (https://… with http.tls set).
func panelBridgeVia(t, owner *testing.T, client *http.Client, base, httpAddr, mqttAddr, stateDir string, args ...string) *bridgeUnderTest {
	t.Helper()
	b := &bridgeUnderTest{http: httpAddr, mqtt: mqttAddr, done: make(chan error, 1), logs: &syncBuffer{}}
	env := map[string]string{
		"PIBRIDGE_HTTP_LISTEN":          httpAddr,
		"PIBRIDGE_MQTT_EMBEDDED_LISTEN": mqttAddr,
		"PIBRIDGE_STATE_DIR":            stateDir,
	}
	ready := make(chan struct{})
	started = func(board *gpio.Board, core *pibridge.Core) {
		b.board, b.core = board, core
		close(ready)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	go func() {
		args := append([]string{"-log-level", "debug"}, args...)
		b.done <- run(ctx, args, func(k string) string { return env[k] }, io.Discard, b.logs)
	}()
	select {
	case <-ready:
		started = nil
	case err := <-b.done:
		started = nil
		cancel()
		t.Fatalf("run ended before starting: %v\n%s", err, b.logs)
	case <-time.After(10 * time.Second):
		started = nil
		cancel()
		t.Fatalf("bridge did not start\n%s", b.logs)
	}
	owner.Cleanup(func() {
		panelHalt(owner, b)
		if owner.Failed() {
			owner.Logf("bridge %s log:\n%s", httpAddr, b.logs)
		}
	})
	eventually(t, 10*time.Second, "/healthz never reported MQTT connected", func() bool {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h healthReport
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.MQTT == "connected"
	})
	return b
}

// panelHalt stops the bridge like SIGTERM does and waits for run to return.
// It may be called again.
func panelHalt(t *testing.T, b *bridgeUnderTest) {
	t.Helper()
	b.stop()
	select {
	case err := <-b.done:
		b.done <- err // for the next call
		if err != nil {
			t.Errorf("run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("bridge %s did not stop", b.http)
	}
}

// panelConfig writes the demo configuration with http tokens set, for -config.
func panelConfig(t *testing.T, token, readToken string) string {
	t.Helper()
	return panelConfigWith(t, map[string]any{"token": token, "read_token": readToken})
}

// panelConfigWith writes the demo configuration with these http keys set.
func panelConfigWith(t *testing.T, httpKeys map[string]any) string {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal(demoYAML, &cfg); err != nil {
		t.Fatal(err)
	}
	httpSection, _ := cfg["http"].(map[string]any)
	if httpSection == nil {
		httpSection = map[string]any{}
		cfg["http"] = httpSection
	}
	maps.Copy(httpSection, httpKeys)
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "panel.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func tileSel(name, rest string) string {
	return fmt.Sprintf(`[data-signal=%q] %s`, name, rest)
}

// tileJS is a JavaScript expression for the panel's tile object of a signal.
func tileJS(name string) string {
	return fmt.Sprintf(`pibridge.state.tiles.get(%q)`, name)
}

func TestPanelDemo(t *testing.T) {
	top := t
	httpAddr, mqttAddr, stateDir := freeAddr(t), freeAddr(t), t.TempDir()
	b := panelBridge(t, t, httpAddr, mqttAddr, stateDir)
	watcher := watchMQTT(t, mqttAddr, "pibridge/demo/#")
	// The air sensor reads every second: give the bridge's history ring a few
	// points, so that "filled from history" is visible on load.
	eventually(t, 10*time.Second, "air.temperature has no history", func() bool {
		p, err := b.core.History("air.temperature", 10*time.Minute)
		return err == nil && len(p) >= 3
	})

	br := paneltest.Start(t, 2*time.Minute)
	br.SetViewport(t, paneltest.Desktop)
	br.Navigate(t, "http://"+httpAddr+"/")
	br.WaitFor(t, `pibridge.state.status === 'live'`)

	t.Run("every demo signal is shown with a value", func(t *testing.T) {
		if got := br.Text(t, "#device-name"); got != "pibridge demo" {
			t.Errorf("device name = %q", got)
		}
		br.WaitFor(t, fmt.Sprintf(`Object.keys(pibridge.state.values).length === %d`, len(demoSignals)))
		for name, kind := range demoSignals {
			sel := fmt.Sprintf(`[data-signal=%q]`, name)
			if got := paneltest.Eval[string](t, br, fmt.Sprintf(`document.querySelector('%s')?.dataset.kind ?? 'missing'`, sel)); got != kind {
				t.Errorf("%s: tile kind %q, want %q", name, got, kind)
				continue
			}
			value := br.Text(t, tileSel(name, ".value"))
			switch kind {
			case "input", "output":
				if value != "ON" && value != "OFF" {
					t.Errorf("%s shows %q, want ON or OFF", name, value)
				}
			case "pwm":
				if !strings.HasSuffix(value, "%") {
					t.Errorf("%s shows %q, want a percentage", name, value)
				}
			case "sensor":
				unit := paneltest.Eval[string](t, br, fmt.Sprintf(`pibridge.state.values[%q].unit`, name))
				var num float64
				if _, err := fmt.Sscanf(value, "%g", &num); err != nil || unit == "" || !strings.HasSuffix(value, " "+unit) {
					t.Errorf("%s shows %q, want a number and %q", name, value, unit)
				}
				if age := br.Text(t, tileSel(name, ".age")); !strings.HasSuffix(age, " ago") {
					t.Errorf("%s age %q", name, age)
				}
			}
		}
	})

	t.Run("the MQTT view shows topics inside the demo's bridge_allow", func(t *testing.T) {
		br.WaitFor(t, `document.querySelector('#mqtt').hidden === false`)
		lab := watchMQTT(t, mqttAddr, "lab/#")
		// The panel subscribes after its hello; publish until the message shows.
		deadline := time.Now().Add(10 * time.Second)
		for !paneltest.Eval[bool](t, br, `document.querySelector('#mqtt-topics').textContent.includes('lab/panel/hello')`) {
			if time.Now().After(deadline) {
				t.Fatal("a message on lab/panel/hello never showed in the MQTT view")
			}
			lab.publish(t, "lab/panel/hello", "hi", false)
			time.Sleep(100 * time.Millisecond) // pacing the re-publish, not synchronising
		}
	})

	t.Run("air.temperature chart is filled from history, then grows live", func(t *testing.T) {
		tile := tileJS("air.temperature")
		br.WaitFor(t, tile+`.historyReplies >= 1`)
		fromHistory := paneltest.Eval[int](t, br, tile+`.historyPoints`)
		if fromHistory < 3 {
			t.Fatalf("history brought %d points, want at least 3", fromHistory)
		}
		// uPlot drew them: its canvas has a size and its data is the chart's.
		br.WaitFor(t, tile+`.chart.plot && `+tile+`.chart.plot.data[0].length >= `+fmt.Sprint(fromHistory))
		if !paneltest.Eval[bool](t, br, `(() => {
			const c = document.querySelector('[data-signal="air.temperature"] .chart canvas');
			return !!c && c.width > 100 && c.height > 50;
		})()`) {
			t.Error("no uPlot canvas drawn in the air.temperature tile")
		}
		label := paneltest.Eval[string](t, br, `document.querySelector('[data-signal="air.temperature"] .chart').getAttribute('aria-label')`)
		if !strings.Contains(label, "air.temperature") || !strings.Contains(label, "from ") {
			t.Errorf("chart aria-label = %q, want a summary", label)
		}
		n := paneltest.Eval[int](t, br, tile+`.chart.plot.data[0].length`)
		br.WaitWithin(t, 8*time.Second, fmt.Sprintf(`%s.chart.plot.data[0].length >= %d`, tile, n+2))
	})

	t.Run("led switch drives the pin, is published on MQTT and confirmed", func(t *testing.T) {
		if pinLevel(t, b, "led") {
			t.Fatal("led starts on")
		}
		paneltest.Eval[bool](t, br, `(() => {
			const tile = document.querySelector('[data-signal="led"]');
			window.ledStates = [];
			new MutationObserver((records) => {
				for (const r of records) window.ledStates.push(r.oldValue);
			}).observe(tile, {attributes: true, attributeFilter: ['data-state'], attributeOldValue: true});
			return true;
		})()`)
		br.Click(t, tileSel("led", ".switch"))
		br.WaitFor(t, `document.querySelector('[data-signal="led"]').dataset.state === 'confirmed' &&
			document.querySelector('[data-signal="led"] .switch').getAttribute('aria-checked') === 'true'`)
		if states := paneltest.Eval[[]string](t, br, `window.ledStates`); !slices.Contains(states, "pending") {
			t.Errorf("data-state went through %v, want pending before confirmed", states)
		}
		eventually(t, 5*time.Second, "led pin not driven high", func() bool { return pinLevel(t, b, "led") })
		eventually(t, 5*time.Second, "no led reading with value true on MQTT", func() bool {
			return watcher.find(func(topic string, p []byte, _ bool) bool {
				return topic == "pibridge/demo/led" && bytes.Contains(p, []byte(`"value":true`))
			})
		})
		if got := br.Text(t, tileSel("led", ".value")); got != "ON" {
			t.Errorf("led shows %q", got)
		}
	})

	t.Run("fan slider sets the PWM duty, by mouse and by keyboard", func(t *testing.T) {
		rangeSel := tileSel("fan", `input[type=range]`)
		br.Drag(t, rangeSel, 0.05, 0.6, 15, 15*time.Millisecond)
		want := paneltest.Eval[float64](t, br, fmt.Sprintf(`Number(document.querySelector(%q).value)`, rangeSel))
		if want < 0.4 || want > 0.8 {
			t.Fatalf("slider at %v after dragging to 60%%", want)
		}
		duty := func() float64 { v, _ := b.board.Level("fan"); return v.Float() }
		eventually(t, 5*time.Second, fmt.Sprintf("fan duty %v never became %v", duty(), want), func() bool {
			return math.Abs(duty()-want) < 1e-4
		})
		br.WaitFor(t, `document.querySelector('[data-signal="fan"]').dataset.state === 'confirmed'`)
		if got, wantText := br.Text(t, tileSel("fan", ".value")), fmt.Sprintf("%d%%", int(math.Round(want*100))); got != wantText {
			t.Errorf("fan shows %q, want %q", got, wantText)
		}
		br.Keys(t, rangeSel, kb.ArrowLeft)
		eventually(t, 5*time.Second, fmt.Sprintf("ArrowLeft: duty %v, want %v", duty(), want-0.01), func() bool {
			return math.Abs(duty()-(want-0.01)) < 1e-4
		})
	})

	t.Run("range buttons ask for the longer history", func(t *testing.T) {
		br.Click(t, `#range-select button[data-range="1h"]`)
		br.WaitFor(t, `document.querySelector('#range-select button[data-range="1h"]').getAttribute('aria-pressed') === 'true'`)
		br.WaitFor(t, `[...pibridge.state.tiles.values()].filter(t => t.chart).every(t => t.loadedMs === 3600000 && t.historyReplies >= 2)`)
		if n := paneltest.Eval[int](t, br, `document.querySelectorAll('#range-select button[aria-pressed="true"]').length`); n != 1 {
			t.Errorf("%d range buttons pressed", n)
		}
		br.Click(t, `#range-select button[data-range="1m"]`)
		br.WaitFor(t, tileJS("air.temperature")+`.chart.rangeMs === 60000`)
	})

	t.Run("screenshots", func(t *testing.T) {
		dir, points := t.TempDir(), 8
		if os.Getenv("PIBRIDGE_SCREENSHOTS") == "1" {
			// For the README: half a minute of live data, so that the
			// charts look like those of a running bridge.
			dir, points = filepath.Join("..", "..", "docs"), 30
		}
		br.WaitWithin(t, 40*time.Second, fmt.Sprintf(`%s.chart.length >= %d`, tileJS("air.temperature"), points))
		shots := []struct {
			file string
			vp   paneltest.Viewport
		}{
			{"panel-desktop.png", paneltest.Desktop},
			{"panel-phone.png", paneltest.Viewport{Width: 390, Height: 844, Mobile: true, Dark: true}},
		}
		for _, s := range shots {
			br.SetViewport(t, s.vp)
			paneltest.Eval[bool](t, br, `(window.scrollTo(0, 0), true)`)
			// Charts follow their tiles' new size before the capture.
			br.WaitFor(t, `[...pibridge.state.tiles.values()].filter(t => t.chart).every(t =>
				t.chart.plot && t.chart.plot.width === Math.floor(t.chart.host.clientWidth))`)
			paneltest.Eval[bool](t, br, `new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`)
			path := filepath.Join(dir, s.file)
			br.Screenshot(t, path)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _, err := image.DecodeConfig(f)
			f.Close()
			if err != nil || int64(cfg.Width) != s.vp.Width || int64(cfg.Height) != s.vp.Height {
				t.Errorf("%s: %dx%d (%v), want %dx%d", path, cfg.Width, cfg.Height, err, s.vp.Width, s.vp.Height)
			}
			t.Logf("wrote %s", path)
		}
		br.SetViewport(t, paneltest.Desktop)
	})

	t.Run("reconnects by itself after the bridge restarts", func(t *testing.T) {
		paneltest.Eval[bool](t, br, `window.sameDocument = true`)
		seq := paneltest.Eval[float64](t, br, `pibridge.state.values['air.temperature'].seq`)
		points := paneltest.Eval[int](t, br, tileJS("air.temperature")+`.chart.length`)

		br.AllowNetworkErrors(true) // refused handshakes while it is away
		panelHalt(t, b)
		br.WaitFor(t, `pibridge.state.status === 'reconnecting' && document.querySelector('[data-signal="led"] .switch').disabled`)
		if got := br.Text(t, "#conn"); got != "reconnecting…" {
			t.Errorf("badge while away = %q", got)
		}
		b = panelBridge(t, top, httpAddr, mqttAddr, stateDir)
		br.WaitWithin(t, 15*time.Second, `pibridge.state.status === 'live'`)
		br.AllowNetworkErrors(false)

		if !paneltest.Eval[bool](t, br, `window.sameDocument === true`) {
			t.Fatal("the page was reloaded; it should reconnect by itself")
		}
		// Live again: newer readings, the chart keeps its past and grows.
		br.WaitFor(t, fmt.Sprintf(`pibridge.state.values['air.temperature'].seq > %v`, seq))
		br.WaitWithin(t, 8*time.Second, fmt.Sprintf(`%s.chart.length >= %d`, tileJS("air.temperature"), points+2))
		// The new bridge starts with led off (initial: off); hello says so.
		br.WaitFor(t, `document.querySelector('[data-signal="led"] .value').textContent === 'OFF'`)
		br.Click(t, tileSel("led", ".switch"))
		eventually(t, 5*time.Second, "led pin of the new bridge not driven", func() bool { return pinLevel(t, b, "led") })
		br.WaitFor(t, `document.querySelector('[data-signal="led"]').dataset.state === 'confirmed'`)
	})

	t.Run("no console errors and no CSP violations", func(t *testing.T) {
		br.ProbeCSP(t) // a violation would have been seen
		for _, p := range br.Problems() {
			t.Error(p)
		}
	})
}

// loginPage opens the panel of a bridge that needs a token and waits for
// the login form.
func loginPage(t *testing.T, token, readToken string) (*bridgeUnderTest, *paneltest.Browser) {
	t.Helper()
	cfg := panelConfig(t, token, readToken)
	b := panelBridge(t, t, freeAddr(t), freeAddr(t), t.TempDir(), "-config", cfg)
	br := paneltest.Start(t, 90*time.Second)
	br.SetViewport(t, paneltest.Desktop)
	// Before the login, the refused handshake and the 401s are logged.
	br.AllowNetworkErrors(true)
	br.Navigate(t, "http://"+b.http+"/")
	br.WaitFor(t, `!document.querySelector('#login-panel').hidden`)
	if got := br.Text(t, "#conn"); got != "offline" {
		t.Errorf("badge before login = %q", got)
	}
	return b, br
}

// signIn types the token into the form and submits it with Enter; it
// returns the error the form shows, or "" once the panel is live.
func signIn(t *testing.T, br *paneltest.Browser, token string) string {
	t.Helper()
	paneltest.Eval[bool](t, br, `(document.querySelector('#token').value = '', true)`)
	br.Do(t, chromedp.SendKeys(chromedp.CSS("#token"), token+kb.Enter))
	br.WaitFor(t, `pibridge.state.status === 'live' || document.querySelector('#login-error').textContent !== ''`)
	return paneltest.Eval[string](t, br, `pibridge.state.status === 'live' ? '' : document.querySelector('#login-error').textContent`)
}

const (
	panelToken     = "panel-control-token-0123456789"
	panelReadToken = "panel-read-token-9876543210"
)

func TestPanelLogin(t *testing.T) {
	b, br := loginPage(t, panelToken, panelReadToken)

	if msg := signIn(t, br, "wrong-token-wrong-token"); msg == "" {
		t.Fatal("a wrong token was accepted")
	} else {
		t.Logf("wrong token: %q", msg)
	}
	if msg := signIn(t, br, panelToken); msg != "" {
		t.Fatalf("login with the control token failed: %q (the server needs POST /api/login setting the session cookie, which /ws accepts)", msg)
	}
	br.AllowNetworkErrors(false)
	if !paneltest.Eval[bool](t, br, `document.querySelector('#login-panel').hidden && document.querySelector('#token').value === ''`) {
		t.Error("login form still shown, or the token left in the field")
	}
	if paneltest.Eval[bool](t, br, `document.cookie !== ''`) {
		t.Error("the session cookie is readable from JavaScript; it must be HttpOnly")
	}
	if paneltest.Eval[bool](t, br, `pibridge.state.readonly`) {
		t.Fatal("the control token gave a read-only session")
	}
	br.WaitFor(t, tileJS("air.temperature")+`.historyReplies >= 1`)
	br.Click(t, tileSel("led", ".switch"))
	eventually(t, 5*time.Second, "led pin not driven after login", func() bool { return pinLevel(t, b, "led") })
	br.WaitFor(t, `document.querySelector('[data-signal="led"]').dataset.state === 'confirmed'`)
}

func TestPanelReadToken(t *testing.T) {
	b, br := loginPage(t, panelToken, panelReadToken)
	if msg := signIn(t, br, panelReadToken); msg != "" {
		t.Fatalf("login with the read token failed: %q (the server needs POST /api/login accepting read_token)", msg)
	}
	br.AllowNetworkErrors(false)
	br.WaitFor(t, `pibridge.state.readonly`)
	if got := br.Text(t, "#readonly"); got != "view only" || paneltest.Eval[bool](t, br, `document.querySelector('#readonly').hidden`) {
		t.Errorf("view-only badge %q not shown", got)
	}
	if !paneltest.Eval[bool](t, br, `[...document.querySelectorAll('.tile button, .tile input')].every(e => e.disabled)`) {
		t.Error("a control is enabled in view-only mode")
	}
	if n := paneltest.Eval[int](t, br, `document.querySelectorAll('[data-kind="output"] .switch:disabled').length`); n != 2 {
		t.Errorf("%d disabled switches, want led and relay", n)
	}
	// Values and charts still work.
	br.WaitFor(t, tileJS("air.temperature")+`.historyReplies >= 1`)
	// A click on a disabled switch does nothing: its handlers have run when
	// Click returns, and no command was even numbered.
	before := paneltest.Eval[int](t, br, `pibridge.state.nextId`)
	br.Click(t, tileSel("led", ".switch"))
	if after := paneltest.Eval[int](t, br, `pibridge.state.nextId`); after != before {
		t.Errorf("the view-only panel tried %d command(s)", after-before)
	}
	if pinLevel(t, b, "led") {
		t.Error("led switched by a view-only session")
	}
}

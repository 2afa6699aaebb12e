package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"pibridge/web/paneltest"
)

// The browser tests run the real panel in headless Chromium against a fake
// bridge that speaks README's WebSocket protocol and its HTTP login.
// They need Debian's /usr/bin/chromium, which `make test` installs. The
// tests against the real bridge are in cmd/bridge/panel_test.go.

const sessionCookie = "pibridge_session"

// fakeBridge serves the panel, /ws, /api/state and /api/login.
type fakeBridge struct {
	hello map[string]any
	token string // "" = no auth
	// rejectHandshake: without the cookie, refuse the upgrade with 401 (the
	// browser only sees a failed handshake); else accept it and close 4401.
	rejectHandshake bool

	// bridgeOff answers subscribe as today's server does without
	// mqtt.bridge_allow: an error naming the id, "not enabled: …".
	bridgeOff atomic.Bool
	// clock is what /healthz says of the bridge's clock.
	clock atomic.Value // string

	mu    sync.Mutex
	conn  *websocket.Conn
	conns int
	recv  chan map[string]any // what the panel sent, but history and subscribe
	// history and subs get the requests the fake answers by itself.
	history chan map[string]any
	subs    chan map[string]any
	// points, when set, answers history requests instead of the 30 made-up
	// points: a bridge that has just started.
	points func(name string) [][2]float64
}

// historyPoints is what the fake has for every sensor: 30 points a second
// apart, up to a few seconds ago.
const historyPoints = 30

func newFakeBridge() *fakeBridge {
	ts := time.Now().Add(-3 * time.Second).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	reading := func(v any, unit string, seq int) map[string]any {
		return map[string]any{"value": v, "unit": unit, "ts": ts, "seq": seq}
	}
	return &fakeBridge{
		recv:    make(chan map[string]any, 100),
		history: make(chan map[string]any, 100),
		subs:    make(chan map[string]any, 100),
		hello: map[string]any{
			"type":     "hello",
			"protocol": 1,
			"device":   map[string]any{"id": "greenhouse", "name": "Greenhouse Pi", "version": "1.2.3"},
			"signals": []map[string]any{
				{"name": "led", "kind": "output", "writable": true},
				{"name": "relay", "kind": "output", "writable": true, "pulse": "2s"},
				{"name": "fan", "kind": "pwm", "writable": true, "min": 0, "max": 1},
				{"name": "door", "kind": "input", "writable": false},
				{"name": "air.temperature", "kind": "sensor", "unit": "°C", "writable": false},
				{"name": "air.pressure", "kind": "sensor", "unit": "hPa", "writable": false},
			},
			"state": map[string]any{
				"led":             reading(false, "", 1),
				"relay":           reading(false, "", 2),
				"fan":             reading(0.4, "", 3),
				"door":            reading(false, "", 4),
				"air.temperature": reading(21.4321, "°C", 5),
				"air.pressure":    reading(1013.256, "hPa", 6),
			},
		},
	}
}

func (b *fakeBridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ws":
		b.serveWS(w, r)
	case "/api/state":
		if !b.authorized(r) {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{}`)
	case "/healthz":
		clock, _ := b.clock.Load().(string)
		if clock == "" {
			clock = "synced"
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"ok","clock":%q}`, clock)
	case "/api/login":
		var body struct{ Token string }
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if body.Token != b.token {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"wrong token"}`)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: b.token, Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode})
		fmt.Fprint(w, `{}`)
	default:
		Handler().ServeHTTP(w, r)
	}
}

func (b *fakeBridge) authorized(r *http.Request) bool {
	if b.token == "" {
		return true
	}
	c, err := r.Cookie(sessionCookie)
	return err == nil && c.Value == b.token
}

func (b *fakeBridge) serveWS(w http.ResponseWriter, r *http.Request) {
	if !b.authorized(r) && b.rejectHandshake {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	up := websocket.Upgrader{CheckOrigin: func(r *http.Request) bool {
		return r.Header.Get("Origin") == "http://"+r.Host
	}}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	if !b.authorized(r) {
		msg := websocket.FormatCloseMessage(4401, "unauthorized")
		conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		conn.Close()
		return
	}
	b.mu.Lock()
	b.conn = conn
	b.conns++
	err = conn.WriteJSON(b.hello)
	b.mu.Unlock()
	if err != nil {
		return
	}
	for {
		var msg map[string]any
		if err := conn.ReadJSON(&msg); err != nil {
			return
		}
		switch msg["type"] {
		case "history":
			b.history <- msg
			b.write(conn, b.historyReply(msg))
		case "subscribe", "unsubscribe":
			b.subs <- msg
			if b.bridgeOff.Load() {
				b.write(conn, map[string]any{"type": "error", "id": msg["id"], "error": "not enabled: mqtt.bridge_allow is empty"})
			} else {
				b.write(conn, map[string]any{"type": "ack", "id": msg["id"], "ok": true})
			}
		default:
			b.recv <- msg
		}
	}
}

func (b *fakeBridge) write(conn *websocket.Conn, frame any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	conn.WriteJSON(frame) // a failure ends the reader too
}

func (b *fakeBridge) historyReply(req map[string]any) map[string]any {
	name, _ := req["name"].(string)
	b.mu.Lock()
	r, _ := b.hello["state"].(map[string]any)[name].(map[string]any)
	b.mu.Unlock()
	points := [][2]float64{}
	if b.points != nil {
		points = b.points(name)
	} else if v, ok := r["value"].(float64); ok {
		end := time.Now().Add(-3 * time.Second)
		for i := historyPoints - 1; i >= 0; i-- {
			at := end.Add(-time.Duration(i) * time.Second).UnixMilli()
			points = append(points, [2]float64{float64(at), v + float64(i%5)/10})
		}
	}
	return map[string]any{"type": "history", "id": req["id"], "name": name, "points": points}
}

// nextOf returns the next request on ch.
func nextOf(t *testing.T, ch chan map[string]any, what string) map[string]any {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("the panel sent no %s", what)
		return nil
	}
}

func (b *fakeBridge) send(t *testing.T, frame any) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		t.Fatal("send: no connection")
	}
	if err := b.conn.WriteJSON(frame); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// drop closes the current connection like a bridge that goes away.
func (b *fakeBridge) drop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conn.Close()
	b.conn = nil
}

// update changes the hello of the next connection.
func (b *fakeBridge) update(f func(hello map[string]any)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b.hello)
}

func (b *fakeBridge) connections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns
}

// next returns the next message the panel sent.
func (b *fakeBridge) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m := <-b.recv:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("the panel sent nothing")
		return nil
	}
}

// browser is the panel in headless Chromium (see paneltest): uncaught
// exceptions, console errors and CSP violations fail the test. Its helpers
// fail the test they are given.
type browser struct{ *paneltest.Browser }

func newBrowser(t *testing.T) *browser {
	t.Helper()
	return &browser{paneltest.Start(t, 60*time.Second)}
}

func startBrowser(t *testing.T, url string) *browser {
	t.Helper()
	b := newBrowser(t)
	b.Navigate(t, url)
	return b
}

// eval runs a JavaScript expression, awaits it if it is a promise, and
// decodes its result into T.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	return paneltest.Eval[T](t, b.Browser, expr)
}

// waitFor polls a JavaScript condition until it holds.
func (b *browser) waitFor(t *testing.T, cond string) {
	t.Helper()
	b.WaitFor(t, cond)
}

func (b *browser) text(t *testing.T, selector string) string {
	t.Helper()
	return b.Text(t, selector)
}

// click clicks from JavaScript; the tests against the real bridge use
// real mouse events.
func (b *browser) click(t *testing.T, selector string) {
	t.Helper()
	eval[bool](t, b, fmt.Sprintf(`(document.querySelector(%q).click(), true)`, selector))
}

func TestPanelInBrowser(t *testing.T) {
	bridge := newFakeBridge()
	srv := httptest.NewServer(bridge)
	t.Cleanup(srv.Close)
	b := startBrowser(t, srv.URL)

	b.waitFor(t, `document.querySelector('#conn').dataset.state === 'live'`)

	t.Run("hello", func(t *testing.T) {
		if got := b.text(t, "#device-name"); got != "Greenhouse Pi" {
			t.Errorf("device name = %q", got)
		}
		if got := b.text(t, "#conn"); got != "live" {
			t.Errorf("badge = %q", got)
		}
		tiles := eval[[]string](t, b, `[...document.querySelectorAll('.tile')].map(e => e.dataset.kind + ':' + e.dataset.signal)`)
		want := "output:led output:relay pwm:fan input:door sensor:air.temperature sensor:air.pressure"
		if strings.Join(tiles, " ") != want {
			t.Errorf("tiles = %v, want %s", tiles, want)
		}
		if got := b.text(t, `[data-signal="air.temperature"] .value`); got != "21.43 °C" {
			t.Errorf("temperature = %q", got)
		}
		if got := b.text(t, `[data-signal="air.pressure"] .value`); got != "1013.26 hPa" {
			t.Errorf("pressure = %q", got)
		}
		if got := b.text(t, `[data-signal="air.temperature"] .age`); !strings.HasSuffix(got, " s ago") {
			t.Errorf("age = %q", got)
		}
		if got := b.text(t, `[data-signal="fan"] .value`); got != "40%" {
			t.Errorf("fan = %q", got)
		}
		if got := b.text(t, `[data-signal="door"] .value`); got != "OFF" {
			t.Errorf("door = %q", got)
		}
		if got := eval[int](t, b, `pibridge.state.signals.length`); got != 6 {
			t.Errorf("state.signals has %d entries", got)
		}
		if !eval[bool](t, b, `pibridge.state.connected && pibridge.state.values.fan.value === 0.4`) {
			t.Error("window.pibridge.state does not reflect the hello")
		}
		if eval[bool](t, b, `document.querySelector('#readonly').hidden === false`) {
			t.Error("view-only badge shown")
		}
		if !eval[bool](t, b, `document.querySelector('#mqtt').hidden`) {
			t.Error("MQTT view shown without bridge_allow in the hello")
		}
	})

	t.Run("charts start from history and grow with readings", func(t *testing.T) {
		asked := map[string]string{}
		for range 2 {
			m := nextOf(t, bridge.history, "history request")
			asked[m["name"].(string)] = m["since"].(string)
		}
		if fmt.Sprint(asked) != "map[air.pressure:10m air.temperature:10m]" {
			t.Errorf("history asked for %v, want both sensors for 10m", asked)
		}
		const tile = `pibridge.state.tiles.get('air.temperature')`
		b.waitFor(t, tile+`.historyReplies === 1 && `+tile+`.chart.plot?.data[0].length >= `+fmt.Sprint(historyPoints))
		if !eval[bool](t, b, `(() => {
			const c = document.querySelector('[data-signal="air.temperature"] .chart canvas');
			return !!c && c.width > 100 && c.height > 50;
		})()`) {
			t.Error("no uPlot canvas in the temperature tile")
		}
		// Inputs, outputs and pwm have no chart.
		if n := eval[int](t, b, `document.querySelectorAll('.chart').length`); n != 2 {
			t.Errorf("%d charts, want one per sensor (2)", n)
		}
		n := eval[int](t, b, tile+`.chart.length`)
		now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
		bridge.send(t, map[string]any{"type": "reading", "name": "air.temperature", "value": 22.5, "unit": "°C", "ts": now, "seq": 7})
		b.waitFor(t, fmt.Sprintf(`%s.chart.plot.data[0].length === %d && %s.chart.plot.data[1].at(-1) === 22.5`, tile, n+1, tile))
		if got := b.text(t, `[data-signal="air.temperature"] .value`); got != "22.5 °C" {
			t.Errorf("temperature = %q", got)
		}
		// The mouse over the plot names the value under it.
		r := eval[[]float64](t, b, `(() => {
			const over = document.querySelector('[data-signal="air.temperature"] .u-over');
			over.scrollIntoView({block: 'center'});
			const r = over.getBoundingClientRect();
			return [r.left + r.width / 2, r.top + r.height / 2];
		})()`)
		b.Do(t, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, r[0], r[1]))
		b.waitFor(t, `/^21\.\d+ · \d/.test(document.querySelector('[data-signal="air.temperature"] .chart-readout').textContent)`)
		b.Do(t, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 1, 1))
		b.waitFor(t, `document.querySelector('[data-signal="air.temperature"] .chart-readout').hidden`)
		label := eval[string](t, b, `document.querySelector('[data-signal="air.temperature"] .chart').getAttribute('aria-label')`)
		if !strings.HasPrefix(label, "air.temperature in °C, last 10 min: from ") {
			t.Errorf("chart label %q", label)
		}
	})

	t.Run("range buttons", func(t *testing.T) {
		pressed := func() []string {
			return eval[[]string](t, b, `[...document.querySelectorAll('#range-select button')].map(e => e.textContent + '=' + e.getAttribute('aria-pressed'))`)
		}
		if got := strings.Join(pressed(), " "); got != "1 min=false 10 min=true 1 h=false" {
			t.Errorf("range buttons %s", got)
		}
		b.click(t, `#range-select button[data-range="1h"]`)
		for range 2 {
			if m := nextOf(t, bridge.history, "history request for 1h"); m["since"] != "1h" {
				t.Errorf("after 1 h: %v", m)
			}
		}
		b.waitFor(t, `pibridge.state.tiles.get('air.pressure').chart.rangeMs === 3600000`)
		// A shorter range needs nothing new from the bridge.
		b.click(t, `#range-select button[data-range="1m"]`)
		if got := strings.Join(pressed(), " "); got != "1 min=true 10 min=false 1 h=false" {
			t.Errorf("range buttons %s", got)
		}
		select {
		case m := <-bridge.history:
			t.Errorf("asked for history again: %v", m)
		case <-time.After(200 * time.Millisecond):
		}
		if got := eval[string](t, b, `localStorage.getItem('pibridge.range')`); got != "1m" {
			t.Errorf("stored range %q", got)
		}
		b.click(t, `#range-select button[data-range="10m"]`)
	})

	t.Run("set output, ack then echo", func(t *testing.T) {
		b.click(t, `[data-signal="led"] .switch`)
		msg := bridge.next(t)
		if msg["type"] != "set" || msg["name"] != "led" || msg["value"] != true || msg["id"] == "" {
			t.Fatalf("sent %v", msg)
		}
		b.waitFor(t, `document.querySelector('[data-signal="led"]').dataset.state === 'pending'`)
		if got := eval[string](t, b, `document.querySelector('[data-signal="led"] .switch').getAttribute('aria-checked')`); got != "true" {
			t.Errorf("aria-checked while pending = %s", got)
		}
		bridge.send(t, map[string]any{"type": "ack", "id": msg["id"], "ok": true})
		bridge.send(t, map[string]any{"type": "reading", "name": "led", "value": true, "ts": "2026-01-01T00:00:00.000Z", "seq": 10})
		b.waitFor(t, `document.querySelector('[data-signal="led"]').dataset.state === 'confirmed'`)
		if got := b.text(t, `[data-signal="led"] .value`); got != "ON" {
			t.Errorf("led = %q", got)
		}
	})

	t.Run("refused set reverts and shows the error", func(t *testing.T) {
		b.click(t, `[data-signal="relay"] .switch`)
		msg := bridge.next(t)
		bridge.send(t, map[string]any{"type": "ack", "id": msg["id"], "ok": false, "error": "relay: interlocked"})
		b.waitFor(t, `document.querySelector('[data-signal="relay"] .error').textContent === 'relay: interlocked'`)
		if got := eval[string](t, b, `document.querySelector('[data-signal="relay"] .switch').getAttribute('aria-checked')`); got != "false" {
			t.Errorf("aria-checked after refusal = %s", got)
		}
		if got := eval[string](t, b, `document.querySelector('[data-signal="relay"]').dataset.state`); got != "error" {
			t.Errorf("data-state = %s", got)
		}
	})

	t.Run("pulse", func(t *testing.T) {
		b.click(t, `[data-signal="led"] .pulse`)
		msg := bridge.next(t)
		if msg["type"] != "pulse" || msg["name"] != "led" || msg["for"] != "500ms" {
			t.Fatalf("sent %v", msg)
		}
		bridge.send(t, map[string]any{"type": "ack", "id": msg["id"], "ok": true})
	})

	t.Run("pulse of an output's own length", func(t *testing.T) {
		if got := b.text(t, `[data-signal="relay"] .pulse`); got != "Pulse 2s" {
			t.Errorf("relay's pulse button reads %q", got)
		}
		b.click(t, `[data-signal="relay"] .pulse`)
		msg := bridge.next(t)
		if msg["type"] != "pulse" || msg["name"] != "relay" || msg["for"] != "2s" {
			t.Fatalf("sent %v", msg)
		}
		bridge.send(t, map[string]any{"type": "ack", "id": msg["id"], "ok": true})
	})

	t.Run("pwm is rate limited, with a final value", func(t *testing.T) {
		// 20 input events 10 ms apart, then change; the script returns how
		// long the drag took, which bounds the number of messages.
		elapsed := eval[float64](t, b, `new Promise(done => {
			const r = document.querySelector('[data-signal="fan"] input[type=range]');
			const start = performance.now();
			let i = 0;
			const step = () => {
				i++;
				r.value = String(i / 100);
				r.dispatchEvent(new Event('input', {bubbles: true}));
				if (i < 20) { setTimeout(step, 10); return; }
				r.value = '0.77';
				r.dispatchEvent(new Event('change', {bubbles: true}));
				done(performance.now() - start);
			};
			step();
		})`)
		var got []map[string]any
		deadline := time.After(time.Second)
	collect:
		for {
			select {
			case m := <-bridge.recv:
				got = append(got, m)
			case <-deadline:
				break collect
			}
		}
		// One at the start, at most one per further 100 ms, one on change.
		if max := int(elapsed/100) + 2; len(got) < 2 || len(got) > max {
			t.Errorf("%d messages for 20 input events in %.0f ms, want 2..%d: %v", len(got), elapsed, max, got)
		}
		last := got[len(got)-1]
		if last["type"] != "set" || last["name"] != "fan" || last["value"] != 0.77 {
			t.Errorf("last message %v, want set fan 0.77", last)
		}
		if text := b.text(t, `[data-signal="fan"] .value`); text != "77%" {
			t.Errorf("fan shows %q", text)
		}
		for _, m := range got {
			bridge.send(t, map[string]any{"type": "ack", "id": m["id"], "ok": true})
		}
		bridge.send(t, map[string]any{"type": "reading", "name": "fan", "value": 0.77, "ts": "2026-01-01T00:00:00.000Z", "seq": 11})
		b.waitFor(t, `document.querySelector('[data-signal="fan"]').dataset.state === 'confirmed'`)
	})

	t.Run("input flashes on change", func(t *testing.T) {
		bridge.send(t, map[string]any{"type": "reading", "name": "door", "value": true, "ts": "2026-01-01T00:00:00.000Z", "seq": 12})
		b.waitFor(t, `document.querySelector('[data-signal="door"]').classList.contains('flash')`)
		if got := b.text(t, `[data-signal="door"] .value`); got != "ON" {
			t.Errorf("door = %q", got)
		}
		// A reading older than the one shown is ignored.
		bridge.send(t, map[string]any{"type": "reading", "name": "door", "value": false, "ts": "2026-01-01T00:00:00.000Z", "seq": 9})
		// A marker after it on the same socket: once the panel has it, it
		// has handled the stale reading too.
		bridge.send(t, map[string]any{"type": "reading", "name": "relay", "value": false, "ts": "2026-01-01T00:00:00.000Z", "seq": 13})
		b.waitFor(t, `pibridge.state.values.relay.seq === 13`)
		if got := b.text(t, `[data-signal="door"] .value`); got != "ON" {
			t.Errorf("door after a stale reading = %q", got)
		}
	})

	t.Run("error frame becomes a toast", func(t *testing.T) {
		bridge.send(t, map[string]any{"type": "error", "error": "unknown type \"x\""})
		b.waitFor(t, `[...document.querySelectorAll('#toasts .toast')].some(e => e.textContent === 'unknown type "x"')`)
	})

	t.Run("reconnects and restores state", func(t *testing.T) {
		before := bridge.connections()
		bridge.update(func(h map[string]any) {
			h["state"].(map[string]any)["led"] = map[string]any{"value": false, "ts": "2026-01-01T00:00:01.000Z", "seq": 20}
		})
		bridge.drop()
		b.waitFor(t, `document.querySelector('#conn').dataset.state === 'reconnecting'`)
		if got := b.text(t, "#conn"); got != "reconnecting…" {
			t.Errorf("badge = %q", got)
		}
		if !eval[bool](t, b, `document.querySelector('[data-signal="led"] .switch').disabled`) {
			t.Error("switch enabled while disconnected")
		}
		b.waitFor(t, `document.querySelector('#conn').dataset.state === 'live'`)
		// A new connection asks for history again; the chart keeps what it had.
		nextOf(t, bridge.history, "history request after reconnecting")
		if got := bridge.connections(); got != before+1 {
			t.Errorf("%d connections, want %d", got, before+1)
		}
		if got := b.text(t, `[data-signal="led"] .value`); got != "OFF" {
			t.Errorf("led after reconnect = %q, want the hello's OFF", got)
		}
	})

	t.Run("readonly", func(t *testing.T) {
		bridge.update(func(h map[string]any) { h["readonly"] = true })
		bridge.drop()
		b.waitFor(t, `document.querySelector('#conn').dataset.state === 'live' && pibridge.state.readonly`)
		if !eval[bool](t, b, `[...document.querySelectorAll('.tile button, .tile input')].every(e => e.disabled)`) {
			t.Error("a control is enabled in view-only mode")
		}
		if got := b.text(t, "#readonly"); got != "view only" || eval[bool](t, b, `document.querySelector('#readonly').hidden`) {
			t.Errorf("view-only badge %q hidden=%v", got, eval[bool](t, b, `document.querySelector('#readonly').hidden`))
		}
		bridge.update(func(h map[string]any) { delete(h, "readonly") })
	})
}

func TestPanelLogin(t *testing.T) {
	for _, reject := range []bool{false, true} {
		name := "close 4401"
		if reject {
			name = "handshake refused, /api/state 401"
		}
		t.Run(name, func(t *testing.T) {
			bridge := newFakeBridge()
			bridge.token = "s3cret"
			bridge.rejectHandshake = reject
			srv := httptest.NewServer(bridge)
			t.Cleanup(srv.Close)
			b := newBrowser(t)
			b.AllowNetworkErrors(true) // the refused handshake and the 401s
			b.Navigate(t, srv.URL)

			b.waitFor(t, `!document.querySelector('#login-panel').hidden`)
			if got := b.text(t, "#conn"); got != "offline" {
				t.Errorf("badge = %q", got)
			}
			if got := eval[string](t, b, `document.querySelector('label[for=token]').textContent`); got != "Token" {
				t.Errorf("label = %q", got)
			}
			eval[bool](t, b, `(document.querySelector('#token').value = 'wrong', document.querySelector('#login button').click(), true)`)
			b.waitFor(t, `document.querySelector('#login-error').textContent === 'wrong token'`)

			eval[bool](t, b, `(document.querySelector('#token').value = 's3cret', document.querySelector('#login button').click(), true)`)
			b.waitFor(t, `document.querySelector('#conn').dataset.state === 'live'`)
			b.AllowNetworkErrors(false)
			if !eval[bool](t, b, `document.querySelector('#login-panel').hidden && document.querySelector('#token').value === ''`) {
				t.Error("login form still shown, or the token left in the field")
			}
			if eval[bool](t, b, `document.cookie.includes('s3cret')`) {
				t.Error("the session cookie is readable from JavaScript")
			}
		})
	}
}

func TestPanelTokenInFragment(t *testing.T) {
	bridge := newFakeBridge()
	bridge.token = "s3cret"
	srv := httptest.NewServer(bridge)
	t.Cleanup(srv.Close)
	b := newBrowser(t)
	b.AllowNetworkErrors(true) // the first /api/state may race the login
	b.Navigate(t, srv.URL+"/#token=s3cret")
	b.waitFor(t, `document.querySelector('#conn').dataset.state === 'live'`)
	if got := eval[string](t, b, `location.href`); strings.Contains(got, "s3cret") {
		t.Errorf("the token stays in the address bar: %s", got)
	}
}

func TestPanelMQTT(t *testing.T) {
	bridge := newFakeBridge()
	bridge.hello["bridge_allow"] = []string{"home/#", "garden/+/temp"}
	srv := httptest.NewServer(bridge)
	t.Cleanup(srv.Close)
	b := startBrowser(t, srv.URL)
	b.waitFor(t, `pibridge.state.status === 'live'`)

	sub := nextOf(t, bridge.subs, "subscribe")
	if sub["type"] != "subscribe" || fmt.Sprint(sub["topics"]) != "[home/# garden/+/temp]" || sub["id"] == "" {
		t.Fatalf("sent %v", sub)
	}
	b.waitFor(t, `!document.querySelector('#mqtt').hidden && document.querySelector('#mqtt-status').textContent === 'No messages yet.'`)
	if got := b.text(t, "#mqtt-filters"); got != "home/#  garden/+/temp" {
		t.Errorf("filters shown: %q", got)
	}

	t.Run("latest message per topic, sorted", func(t *testing.T) {
		for _, m := range []map[string]any{
			{"topic": "home/b", "payload": "1", "retained": false},
			{"topic": "home/a", "payload": "on", "retained": true},
			{"topic": "garden/x/temp", "payload": `{"t":20.5}`, "retained": false},
			{"topic": "home/b", "payload": "2", "retained": false},
		} {
			m["type"] = "mqtt"
			bridge.send(t, m)
		}
		b.waitFor(t, `document.querySelector('[data-topic="home/b"] .payload')?.textContent === '2'`)
		rows := eval[[]string](t, b, `[...document.querySelectorAll('#mqtt-topics li')].map(li =>
			li.dataset.topic + ' ' + li.querySelector('.payload').textContent + (li.querySelector('.retained').hidden ? '' : ' (retained)'))`)
		want := []string{`garden/x/temp {"t":20.5}`, "home/a on (retained)", "home/b 2"}
		if !slices.Equal(rows, want) {
			t.Errorf("rows %q, want %q", rows, want)
		}
		if !eval[bool](t, b, `document.querySelector('#mqtt-status').hidden`) {
			t.Error("'No messages yet.' still shown")
		}
	})

	t.Run("publish", func(t *testing.T) {
		eval[bool](t, b, `(() => {
			document.querySelector('#mqtt-topic').value = 'home/lamp/set';
			document.querySelector('#mqtt-payload').value = 'on';
			document.querySelector('#mqtt-retain').checked = true;
			document.querySelector('#mqtt-publish button').click();
			return true;
		})()`)
		m := bridge.next(t)
		if m["type"] != "publish" || m["topic"] != "home/lamp/set" || m["payload"] != "on" || m["retain"] != true {
			t.Fatalf("sent %v", m)
		}
		bridge.send(t, map[string]any{"type": "ack", "id": m["id"], "ok": true})
		b.waitFor(t, `document.querySelector('#mqtt-payload').value === ''`)

		b.click(t, `#mqtt-publish button`)
		m = bridge.next(t)
		bridge.send(t, map[string]any{"type": "ack", "id": m["id"], "ok": false, "error": "home/lamp/set: not in mqtt.bridge_allow"})
		b.waitFor(t, `document.querySelector('#mqtt-error').textContent === 'home/lamp/set: not in mqtt.bridge_allow'`)
	})

	t.Run("hidden when the bridge says not enabled", func(t *testing.T) {
		bridge.bridgeOff.Store(true)
		bridge.drop()
		b.waitFor(t, `pibridge.state.status === 'reconnecting'`)
		b.waitFor(t, `pibridge.state.status === 'live'`)
		nextOf(t, bridge.subs, "subscribe after reconnecting")
		b.waitFor(t, `document.querySelector('#mqtt').hidden`)
	})

	t.Run("read-only: no publish form", func(t *testing.T) {
		bridge.bridgeOff.Store(false)
		bridge.update(func(h map[string]any) { h["readonly"] = true })
		bridge.drop()
		b.waitFor(t, `pibridge.state.status === 'live' && pibridge.state.readonly`)
		b.waitFor(t, `!document.querySelector('#mqtt').hidden`)
		if !eval[bool](t, b, `document.querySelector('#mqtt-publish').hidden && document.querySelector('#mqtt-publish button').disabled`) {
			t.Error("publish form usable in view-only mode")
		}
	})
}

// TestPanelClock: a bridge whose clock is not synchronised (a Pi without
// RTC before NTP) shows a badge; when its clock is set, the readings' ts
// jump, and the panel reloads the charts' history (which the bridge has
// re-dated) and drops the badge once /healthz says synced.
func TestPanelClock(t *testing.T) {
	bridge := newFakeBridge()
	bridge.hello["clock"] = map[string]any{"synced": false}
	bridge.clock.Store("unsynced")
	srv := httptest.NewServer(bridge)
	t.Cleanup(srv.Close)
	b := startBrowser(t, srv.URL)
	b.waitFor(t, `document.querySelector('#conn').dataset.state === 'live'`)
	for range 2 {
		nextOf(t, bridge.history, "history request")
	}
	if !eval[bool](t, b, `document.querySelector('#clock').hidden === false`) {
		t.Fatal("no clock badge for a bridge whose clock is not synchronised")
	}
	reading := func(ts time.Time, seq int) map[string]any {
		return map[string]any{"type": "reading", "name": "air.temperature", "value": 21.5, "unit": "°C",
			"ts": ts.UTC().Format("2006-01-02T15:04:05.000Z07:00"), "seq": seq}
	}
	bridge.send(t, reading(time.Now(), 10))
	b.waitFor(t, `pibridge.state.values['air.temperature'].seq === 10`)
	if eval[int](t, b, `pibridge.state.clockSteps`) != 0 {
		t.Fatal("a reading on time counted as a clock step")
	}

	// NTP sets the bridge's clock a day forward.
	bridge.clock.Store("synced")
	bridge.send(t, reading(time.Now().Add(24*time.Hour), 11))
	b.waitFor(t, `pibridge.state.clockSteps === 1`)
	asked := map[string]bool{}
	for range 2 {
		asked[nextOf(t, bridge.history, "history request after the clock step")["name"].(string)] = true
	}
	if !asked["air.temperature"] || !asked["air.pressure"] {
		t.Errorf("history asked again for %v, want both charts", asked)
	}
	b.waitFor(t, `document.querySelector('#clock').hidden === true`)
}

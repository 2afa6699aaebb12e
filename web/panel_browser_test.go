package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
)

// The browser tests run the real panel in headless Chromium against a fake
// bridge that speaks the WebSocket protocol of SPEC.md §5 and the login of §6.
// They need Debian's /usr/bin/chromium, which `make test` installs.

const sessionCookie = "pibridge_session"

// fakeBridge serves the panel, /ws, /api/state and /api/login.
type fakeBridge struct {
	hello map[string]any
	token string // "" = no auth
	// rejectHandshake: without the cookie, refuse the upgrade with 401 (the
	// browser only sees a failed handshake); else accept it and close 4401.
	rejectHandshake bool

	mu    sync.Mutex
	conn  *websocket.Conn
	conns int
	recv  chan map[string]any
}

func newFakeBridge() *fakeBridge {
	ts := time.Now().Add(-3 * time.Second).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	reading := func(v any, unit string, seq int) map[string]any {
		return map[string]any{"value": v, "unit": unit, "ts": ts, "seq": seq}
	}
	return &fakeBridge{
		recv: make(chan map[string]any, 100),
		hello: map[string]any{
			"type":     "hello",
			"protocol": 1,
			"device":   map[string]any{"id": "greenhouse", "name": "Greenhouse Pi", "version": "1.2.3"},
			"signals": []map[string]any{
				{"name": "led", "kind": "output", "writable": true},
				{"name": "relay", "kind": "output", "writable": true},
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
		b.recv <- msg
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

// browser is one headless tab; its helpers fail the test they are given.
type browser struct {
	ctx context.Context
}

func startBrowser(t *testing.T, url string) *browser {
	t.Helper()
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s not found: install it with `apt-get install chromium` (make test does)", chromium)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	b := &browser{ctx: ctx}

	// Uncaught exceptions and CSP violations fail the test. Other console
	// errors are expected: a refused handshake and a 401 are logged too.
	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			problems = append(problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, desc))
		case *cdplog.EventEntryAdded:
			if strings.Contains(ev.Entry.Text, "Content Security Policy") {
				problems = append(problems, "CSP: "+ev.Entry.Text)
			}
		}
	})
	if err != nil {
		t.Fatalf("start the browser: %v", err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Error(p)
		}
	})
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	return b
}

// eval runs a JavaScript expression, awaits it if it is a promise, and
// decodes its result into T.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it holds.
func (b *browser) waitFor(t *testing.T, cond string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if eval[bool](t, b, "!!("+cond+")") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", cond)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *browser) text(t *testing.T, selector string) string {
	t.Helper()
	return eval[string](t, b, fmt.Sprintf(`document.querySelector(%q).textContent.trim()`, selector))
}

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
		time.Sleep(100 * time.Millisecond)
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
			b := startBrowser(t, srv.URL)

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
	b := startBrowser(t, srv.URL+"/#token=s3cret")
	b.waitFor(t, `document.querySelector('#conn').dataset.state === 'live'`)
	if got := eval[string](t, b, `location.href`); strings.Contains(got, "s3cret") {
		t.Errorf("the token stays in the address bar: %s", got)
	}
}

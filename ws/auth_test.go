package ws

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
	"pibridge/httpx"
	"pibridge/internal/testkit"
)

const (
	controlToken = "control-token-0123456789"
	readToken    = "read-token-0123456789"
)

// withTokens configures both tokens; no failure slows anybody down unless
// a test asks for it.
func withTokens(c *Config) { c.Token = controlToken; c.ReadToken = readToken }

func noLimit(t *tuning) { t.freeFailures = 1 << 30 }

func tokenHarness(t *testing.T, tune func(*tuning)) *harness {
	return newHarness(t, setup{config: withTokens, tune: func(tt *tuning) {
		noLimit(tt)
		if tune != nil {
			tune(tt)
		}
	}})
}

// login posts a token to /api/login and returns the response and cookie.
func (h *harness) login(t *testing.T, token string, hdr http.Header) (response, *http.Cookie) {
	t.Helper()
	req, _ := http.NewRequest("POST", h.ts.URL+"/api/login", strings.NewReader(`{"token":`+jsonString(token)+`}`))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp := do(t, req)
	for _, ck := range (&http.Response{Header: resp.header}).Cookies() {
		if ck.Name == sessionCookie {
			return resp, ck
		}
	}
	return resp, nil
}

func cookieHeader(ck *http.Cookie) http.Header {
	return http.Header{"Cookie": {ck.Name + "=" + ck.Value}}
}

func (h *harness) post(t *testing.T, path, body string, hdr http.Header) response {
	t.Helper()
	req, _ := http.NewRequest("POST", h.ts.URL+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	return do(t, req)
}

func TestTokenRequired(t *testing.T) {
	h := tokenHarness(t, nil)
	for _, tc := range []struct {
		hdr  http.Header
		want int
	}{
		{bearer("wrong"), http.StatusUnauthorized},
		{http.Header{"Authorization": {"Basic " + controlToken}}, http.StatusUnauthorized},
		{bearer(controlToken), http.StatusSwitchingProtocols},
		{bearer(readToken), http.StatusSwitchingProtocols},
		// Without credentials the handshake succeeds: the first frame
		// must authenticate (TestFirstFrameAuth).
		{nil, http.StatusSwitchingProtocols},
	} {
		if got := h.dialStatus(tc.hdr); got != tc.want {
			t.Errorf("/ws with %v: %d, want %d", tc.hdr, got, tc.want)
		}
	}
	viewer := h.dial(dialOpt{header: bearer(readToken)})
	if viewer.hello.Readonly == nil || !*viewer.hello.Readonly {
		t.Errorf("hello for the read token: %s, want readonly:true", viewer.hello)
	}
	got := viewer.exchange(`{"type":"set","id":"r1","name":"led","value":true}`)
	if len(got) != 1 || got[0].Type != "ack" || !strings.Contains(got[0].Error, "read-only") {
		t.Errorf("set with the read token: %v", got)
	}
	controller := h.dial(dialOpt{header: bearer(controlToken)})
	if controller.hello.Readonly != nil {
		t.Errorf("hello for the control token: %s, want no readonly", controller.hello)
	}
	if got := controller.exchange(`{"type":"set","id":"r2","name":"led","value":true}`); len(got) != 1 || !*got[0].OK {
		t.Errorf("set with the control token: %v", got)
	}

	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/state", "", http.StatusUnauthorized},
		{"GET", "/api/state", "wrong", http.StatusUnauthorized},
		{"GET", "/api/state", readToken, http.StatusOK},
		{"GET", "/api/history?name=led", readToken, http.StatusOK},
		{"POST", "/api/signals/led", readToken, http.StatusForbidden},
		{"POST", "/api/signals/led", "", http.StatusUnauthorized},
		{"POST", "/api/signals/led", controlToken, http.StatusOK},
	} {
		req, _ := http.NewRequest(tc.method, h.ts.URL+tc.path, strings.NewReader("on"))
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		got := do(t, req)
		if got.status != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, got.status, got.body, tc.want)
		}
		if got.status == http.StatusUnauthorized && got.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", tc.method, tc.path)
		}
	}
}

func TestFirstFrameAuth(t *testing.T) {
	h := tokenHarness(t, func(t *tuning) { t.authWait = 300 * time.Millisecond })
	h.emitSync("led", pibridge.Bool(true))

	// The right token: hello, then readings, as with a bearer token.
	c := h.dial(dialOpt{auth: controlToken})
	if len(c.hello.State) != 1 || c.hello.Readonly != nil {
		t.Errorf("hello after auth: %s", c.hello)
	}
	if got := c.exchange(`{"type":"set","id":"a1","name":"relay","value":true}`); len(got) != 1 || !*got[0].OK {
		t.Errorf("set after auth: %v", got)
	}
	if got := c.exchange(`{"type":"auth","id":"a2","token":"whatever"}`); len(got) != 1 || got[0].Type != "error" || got[0].Error != "already authenticated" {
		t.Errorf("a second auth: %v", got)
	}

	// The read token: a read-only hello.
	v := h.dial(dialOpt{auth: readToken})
	if v.hello.Readonly == nil || !*v.hello.Readonly {
		t.Errorf("hello after read-token auth: %s", v.hello)
	}

	// An auth message with an id gets its ack right after the hello.
	conn, _, err := h.dialRaw(dialOpt{})
	if err != nil {
		t.Fatal(err)
	}
	ca := &wsClient{t: t, conn: conn}
	ca.send(`{"type":"auth","id":"login-1","token":"` + controlToken + `"}`)
	if f := ca.next(); f.Type != "hello" {
		t.Fatalf("first frame %s, want the hello", f)
	}
	if f := ca.nextReply(); f.Type != "ack" || f.id() != "login-1" || !*f.OK {
		t.Fatalf("after the hello: %s, want the auth's ack", f)
	}
	conn.Close()

	// Everything else closes with 4401 and sends nothing before.
	for _, tc := range []struct {
		name  string
		first string // "" sends nothing
		code  int
	}{
		{"wrong token", `{"type":"auth","token":"wrong"}`, closeUnauthorized},
		{"token of the wrong type", `{"type":"auth","token":12}`, closeUnauthorized},
		{"a command first", `{"type":"set","id":"x","name":"led","value":false}`, closeUnauthorized},
		{"garbage first", `not json`, closeUnauthorized},
		{"nothing within authWait", "", closeUnauthorized},
		{"an oversize first frame", `{"type":"auth","token":"` + strings.Repeat("a", maxAuthFrame) + `"}`, websocket.CloseMessageTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, _, err := h.dialRaw(dialOpt{})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := &wsClient{t: t, conn: conn}
			if tc.first != "" {
				c.send(tc.first)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, data, err := conn.ReadMessage()
			if err == nil {
				t.Fatalf("got a frame before authentication: %s", data)
			}
			ce, ok := err.(*websocket.CloseError)
			if !ok || ce.Code != tc.code {
				t.Fatalf("ended with %v, want close %d", err, tc.code)
			}
		})
	}
	if moves := h.act.Calls(); len(moves) != 1 || moves[0] != "set relay true" {
		t.Errorf("actuator calls %v, want only the authenticated set", moves)
	}
	waitFor(t, "the refused connections to go", func() bool { return h.srv.Clients() == 2 && h.srv.gate.npending.Load() == 0 })
}

func TestLoginCookie(t *testing.T) {
	h := tokenHarness(t, nil)
	resp, ck := h.login(t, controlToken, nil)
	if resp.status != http.StatusOK || resp.body != `{"ok":true,"readonly":false}` || ck == nil {
		t.Fatalf("login: %d %s, cookie %v", resp.status, resp.body, ck)
	}
	raw := resp.header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="} {
		if !strings.Contains(raw, attr) {
			t.Errorf("Set-Cookie %q lacks %s", raw, attr)
		}
	}
	if strings.Contains(raw, "Secure") {
		t.Errorf("Set-Cookie %q is Secure over plain HTTP", raw)
	}
	if strings.Contains(ck.Value, controlToken) || len(ck.Value) < 40 {
		t.Errorf("cookie value %q is not an opaque session value", ck.Value)
	}

	// The cookie opens /ws (no auth frame needed) and /api/*.
	c := h.dial(dialOpt{header: cookieHeader(ck)})
	if c.hello.Readonly != nil {
		t.Errorf("hello %s", c.hello)
	}
	if r := h.post(t, "/api/signals/led", "on", cookieHeader(ck)); r.status != http.StatusOK {
		t.Errorf("POST with the cookie: %d %s", r.status, r.body)
	}

	// A read-token login is read-only on every door.
	resp, rck := h.login(t, readToken, nil)
	if resp.status != http.StatusOK || resp.body != `{"ok":true,"readonly":true}` {
		t.Fatalf("read login: %d %s", resp.status, resp.body)
	}
	v := h.dial(dialOpt{header: cookieHeader(rck)})
	if v.hello.Readonly == nil || !*v.hello.Readonly {
		t.Errorf("hello for the read session: %s", v.hello)
	}
	if r := h.post(t, "/api/signals/led", "off", cookieHeader(rck)); r.status != http.StatusForbidden {
		t.Errorf("POST with the read session: %d %s", r.status, r.body)
	}

	// Logout ends the session: its WebSocket is closed with 4401, the
	// cookie is cleared and no longer works.
	r := h.post(t, "/api/logout", "", cookieHeader(ck))
	if r.status != http.StatusNoContent || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d %q", r.status, r.header.Get("Set-Cookie"))
	}
	if code := c.closeCode(5 * time.Second); code != closeUnauthorized {
		t.Errorf("the session's WebSocket closed with %d, want 4401", code)
	}
	if r := h.post(t, "/api/signals/led", "on", cookieHeader(ck)); r.status != http.StatusUnauthorized {
		t.Errorf("POST after logout: %d %s", r.status, r.body)
	}
	// A stale cookie on /ws is closed with 4401 at once, without waiting
	// for an auth frame, so the panel shows its login form.
	conn, _, err := h.dialRaw(dialOpt{header: cookieHeader(ck)})
	if err != nil {
		t.Fatal(err)
	}
	stale := &wsClient{t: t, conn: conn}
	if code := stale.closeCode(2 * time.Second); code != closeUnauthorized {
		t.Errorf("stale cookie on /ws: %d, want 4401", code)
	}

	// Login's own refusals.
	for _, tc := range []struct {
		name, body, ctype string
		want              int
	}{
		{"wrong token", `{"token":"nope"}`, "application/json", http.StatusUnauthorized},
		{"no token", `{}`, "application/json", http.StatusBadRequest},
		{"unknown field", `{"token":"` + controlToken + `","x":1}`, "application/json", http.StatusBadRequest},
		{"not JSON", `token=` + controlToken, "application/json", http.StatusBadRequest},
		{"form post", `{"token":"` + controlToken + `"}`, "text/plain", http.StatusUnsupportedMediaType},
		{"huge", `{"token":"` + strings.Repeat("a", maxLoginBody) + `"}`, "application/json", http.StatusBadRequest},
	} {
		r := h.post(t, "/api/login", tc.body, http.Header{"Content-Type": {tc.ctype}})
		if r.status != tc.want || strings.Contains(r.header.Get("Set-Cookie"), sessionCookie+"=") {
			t.Errorf("login %s: %d %s %q, want %d and no cookie", tc.name, r.status, r.body, r.header.Get("Set-Cookie"), tc.want)
		}
	}
	if moves := h.act.Calls(); len(moves) != 1 {
		t.Errorf("actuator calls %v, want the one set with the control session", moves)
	}
}

func TestLoginWithoutAuth(t *testing.T) {
	h := newHarness(t, setup{})
	resp, ck := h.login(t, "anything", nil)
	if resp.status != http.StatusOK || ck != nil {
		t.Errorf("login with auth off: %d %s, cookie %v", resp.status, resp.body, ck)
	}
	// The panel may send an auth frame anyway.
	c := h.dial(dialOpt{})
	if got := c.exchange(`{"type":"auth","id":"x","token":"t"}`); len(got) != 1 || got[0].Type != "error" {
		t.Errorf("auth with auth off: %v", got)
	}
}

func TestSessionsAreBoundedAndExpire(t *testing.T) {
	clock := testkit.NewClock()
	tune := defaultTuning()
	tune.maxSessions = 3
	tune.sessionTTL = time.Hour
	st := newSessionStore(&tune)
	var values []string
	for range 5 {
		values = append(values, st.create(roleControl, clock.Now()))
		clock.Advance(time.Minute)
	}
	if n := st.len(); n != 3 {
		t.Fatalf("%d sessions, want the bound 3", n)
	}
	for i, v := range values {
		_, ok := st.lookup(v, clock.Now())
		if want := i >= 2; ok != want {
			t.Errorf("session %d valid = %v, want %v (the oldest go first)", i, ok, want)
		}
	}
	clock.Advance(time.Hour)
	if _, ok := st.lookup(values[4], clock.Now()); ok {
		t.Error("a session outlived its TTL")
	}
	if _, ok := st.lookup("", clock.Now()); ok {
		t.Error("the empty value is a session")
	}
}

func TestLimiterDelaysGrowAndAreBounded(t *testing.T) {
	clock := testkit.NewClock()
	tune := defaultTuning()
	tune.freeFailures, tune.failDelay, tune.maxFailDelay, tune.limiterSize = 2, time.Second, 10*time.Second, 4
	l := newLimiter(&tune)
	a := netip.MustParseAddr("192.0.2.1")
	var got []time.Duration
	for range 7 {
		if w := l.wait(a, clock.Now()); w > 0 {
			clock.Advance(w) // a patient attacker
		}
		got = append(got, l.fail(a, clock.Now()))
	}
	want := []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("waits %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	if w := l.wait(a, clock.Now()); w != 10*time.Second {
		t.Errorf("wait right after the last failure %v", w)
	}
	if w := l.wait(netip.MustParseAddr("192.0.2.2"), clock.Now()); w != 0 {
		t.Errorf("another address waits %v", w)
	}
	// Success clears the count; so does a long quiet spell.
	l.forgive(a)
	if d := l.fail(a, clock.Now()); d != 0 {
		t.Errorf("first failure after a success waits %v", d)
	}
	for range 3 {
		l.fail(a, clock.Now())
	}
	clock.Advance(tune.forgetFailures + tune.maxFailDelay + time.Second)
	if d := l.fail(a, clock.Now()); d != 0 {
		t.Errorf("first failure after a quiet spell waits %v", d)
	}
	// The map is bounded: a flood of addresses evicts, never grows.
	for i := range 100 {
		l.fail(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), clock.Now())
	}
	if n := l.len(); n > tune.limiterSize {
		t.Errorf("%d addresses remembered, bound %d", n, tune.limiterSize)
	}
	// One IPv6 /64 is one address.
	if httpx.ClientAddr("[2001:db8::1]:5000") != httpx.ClientAddr("[2001:db8::2:3]:6000") || httpx.ClientAddr("[::ffff:192.0.2.7]:1") != netip.MustParseAddr("192.0.2.7") {
		t.Error("clientAddr keys")
	}
}

func TestRepeatedFailuresAreSlowedDown(t *testing.T) {
	clock := testkit.NewClock()
	h := newHarness(t, setup{config: withTokens, tune: func(t *tuning) {
		t.now = clock.Now
		t.freeFailures, t.failDelay, t.maxFailDelay = 2, time.Second, time.Minute
	}})
	state := func(tok string) response {
		req, _ := http.NewRequest("GET", h.ts.URL+"/api/state", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		return do(t, req)
	}
	for i := range 2 {
		if r := state("wrong"); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, r.status)
		}
	}
	// The third failure starts the wait; during it even the right token
	// is refused unchecked, on every door.
	if r := state("wrong"); r.status != http.StatusUnauthorized {
		t.Fatalf("third failure: %d", r.status)
	}
	r := state(controlToken)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Fatalf("during the wait: %d %q %s, want 429 with Retry-After 1", r.status, r.header.Get("Retry-After"), r.body)
	}
	if lr, _ := h.login(t, controlToken, nil); lr.status != http.StatusTooManyRequests {
		t.Errorf("login during the wait: %d", lr.status)
	}
	if got := h.dialStatus(nil); got != http.StatusTooManyRequests {
		t.Errorf("/ws without credentials during the wait: %d", got)
	}
	if got := h.dialStatus(bearer(controlToken)); got != http.StatusTooManyRequests {
		t.Errorf("/ws with a token during the wait: %d", got)
	}
	clock.Advance(time.Second)
	if r := state("wrong"); r.status != http.StatusUnauthorized {
		t.Fatalf("fourth failure: %d", r.status)
	}
	clock.Advance(time.Second)
	if r := state(controlToken); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Fatalf("the wait did not double: %d %q", r.status, r.header.Get("Retry-After"))
	}
	clock.Advance(time.Second)
	if r := state(controlToken); r.status != http.StatusOK {
		t.Fatalf("after the wait: %d %s", r.status, r.body)
	}
	// The success forgave the address.
	if r := state("wrong"); r.status != http.StatusUnauthorized {
		t.Fatalf("after a success: %d", r.status)
	}
	if n := h.srv.AuthFailures(); n != 5 {
		t.Errorf("AuthFailures = %d, want 5", n)
	}
}

func TestTokenInQueryIsRefused(t *testing.T) {
	h := tokenHarness(t, nil)
	for _, q := range []string{
		"token=" + controlToken,
		"access_token=" + controlToken,
		"TOKEN=wrong",
		"x=" + controlToken, // a configured token under any name
		"name=led&read_token=" + readToken,
	} {
		conn, resp, err := h.dialRaw(dialOpt{query: q, header: bearer(controlToken)})
		if err == nil {
			conn.Close()
			t.Errorf("/ws?%s accepted", q)
		} else if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/ws?%s: %v, want 400", q, err)
		}
		req, _ := http.NewRequest("GET", h.ts.URL+"/api/history?"+q, nil)
		if r := do(t, req); r.status != http.StatusBadRequest || strings.Contains(r.body, controlToken) {
			t.Errorf("/api/history?%s: %d %s, want 400 without the token", q, r.status, r.body)
		}
	}
	// An ordinary query string is fine.
	req, _ := http.NewRequest("GET", h.ts.URL+"/api/history?name=led&since=1m", nil)
	req.Header.Set("Authorization", "Bearer "+controlToken)
	if r := do(t, req); r.status != http.StatusOK {
		t.Errorf("history: %d %s", r.status, r.body)
	}
}

func TestGeneratedToken(t *testing.T) {
	core, err := pibridge.New(pibridge.Options{Signals: testSignals, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	cfg := Defaults()
	cfg.Listen = "192.0.2.10:8080"
	s, err := New(Options{Core: core, Config: cfg, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 40 || !s.gate.on || s.gate.checkToken(token) != roleControl {
		t.Fatalf("generated token %q, auth %v", token, s.gate.on)
	}
	fi, _ := os.Stat(filepath.Join(dir, "token"))
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("token file mode %v, want 0600", perm)
	}
	if got, want := s.PanelURL(), "http://192.0.2.10:8080/#token="+token; got != want {
		t.Errorf("PanelURL = %q, want %q", got, want)
	}
	// A restart reuses it.
	s2, err := New(Options{Core: core, Config: cfg, StateDir: dir})
	if err != nil || s2.gate.checkToken(token) != roleControl {
		t.Fatalf("second start: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d files, want just the token", len(entries))
	}

	for _, tc := range []struct {
		name     string
		listen   string
		token    string
		stateDir string
		auth     bool
		url      string // "" when only the prefix is checked
		err      string
	}{
		{"loopback", "127.0.0.1:8080", "", "", false, "http://127.0.0.1:8080/", ""},
		{"localhost", "localhost:9000", "", "", false, "http://localhost:9000/", ""},
		{"ipv6 loopback", "[::1]:8080", "", "", false, "http://[::1]:8080/", ""},
		{"token none", "0.0.0.0:8080", "none", "", false, "", ""},
		{"configured token", "192.0.2.10:8080", "user-token-0123456789", "", true, "http://192.0.2.10:8080/", ""},
		{"all interfaces", ":8080", "", t.TempDir(), true, "", ""},
		{"no state dir", "0.0.0.0:8080", "", "", false, "", "no state_dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Listen, cfg.Token = tc.listen, tc.token
			s, err := New(Options{Core: core, Config: cfg, StateDir: tc.stateDir, Hostname: "testpi"})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.gate.on != tc.auth {
				t.Errorf("auth %v, want %v", s.gate.on, tc.auth)
			}
			u := s.PanelURL()
			if tc.url != "" && u != tc.url {
				t.Errorf("PanelURL %q, want %q", u, tc.url)
			}
			if strings.Contains(u, "#token=") != (tc.stateDir != "") {
				t.Errorf("PanelURL %q: the token belongs there only when generated", u)
			}
			if strings.Contains(u, "0.0.0.0") || strings.Contains(u, "//:") {
				t.Errorf("PanelURL %q does not name a reachable host", u)
			}
		})
	}

	// A broken token file is not silently replaced.
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "token"), []byte("two words\n"), 0o600)
	if _, err := New(Options{Core: core, Config: cfg, StateDir: bad}); err == nil || strings.Contains(err.Error(), "two words") {
		t.Errorf("broken token file: %v", err)
	}
	// A state dir that cannot be written is an error at start.
	ro := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(ro, 0o500)
	if os.Geteuid() != 0 { // root writes anywhere
		if _, err := New(Options{Core: core, Config: cfg, StateDir: ro}); err == nil || !strings.Contains(err.Error(), "generated") {
			t.Errorf("unwritable state dir: %v", err)
		}
	}
}

// Connections that have not authenticated get a bounded share of the
// slots: a flood of them cannot keep a client with a token out.
func TestPendingAuthCap(t *testing.T) {
	h := tokenHarness(t, func(t *tuning) { t.maxPending = 2 })
	for range 2 {
		conn, _, err := h.dialRaw(dialOpt{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	waitFor(t, "two waiting connections", func() bool { return h.srv.gate.npending.Load() == 2 })
	if got := h.dialStatus(nil); got != http.StatusServiceUnavailable {
		t.Errorf("a third without credentials: %d, want 503", got)
	}
	if got := h.dialStatus(http.Header{"Cookie": {sessionCookie + "=stale"}}); got != http.StatusServiceUnavailable {
		t.Errorf("a stale cookie: %d, want 503", got)
	}
	h.dial(dialOpt{header: bearer(controlToken)})
}

// TestTokensNeverLogged runs every authentication path with debug logging
// and looks for the tokens in what was logged.
func TestTokensNeverLogged(t *testing.T) {
	var log lockedBuffer
	pass := newFakePass()
	clock := testkit.NewClock()
	h := newHarness(t, setup{config: withTokens,
		options: func(o *Options) {
			o.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
			o.Passthrough = pass
			o.BridgeAllow = []string{"home/#"}
		},
		tune: func(t *tuning) { t.freeFailures = 1; t.authWait = 200 * time.Millisecond; t.now = clock.Now },
	})
	const guess = "guessed-SECRET-value"
	h.login(t, guess, nil)
	h.login(t, controlToken, nil)
	h.dialStatus(bearer(guess))
	wsAttempt(t, h, dialOpt{}, `{"type":"auth","token":"`+guess+`"}`)
	restAttempt(t, h, "GET", "/api/state?token="+controlToken, "", nil)
	clock.Advance(time.Hour)
	c := h.dial(dialOpt{header: bearer(controlToken)})
	c.exchange(`{"type":"publish","id":"p","topic":"home/x","payload":"` + guess + `"}`)
	h.stop()
	out := log.String()
	for _, secret := range []string{controlToken, readToken, guess, "SECRET"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q is in the log:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "slowing this address down") {
		t.Errorf("the log does not show the slow-down; is logging on?\n%s", out)
	}
}

type lockedBuffer = testkit.LockedBuffer

// fromAddr dials from another loopback address, as another machine would.
func fromAddr(ip string) *websocket.Dialer {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: d.DialContext}
}

// TestPendingAuthPerAddress: one address that opens connections and never
// authenticates gets its share of the waiting slots, not all of them; a
// panel on another address still connects with its auth frame.
func TestPendingAuthPerAddress(t *testing.T) {
	h := tokenHarness(t, nil)
	held, refused := 0, 0
	for range 40 {
		conn, resp, err := h.dialRaw(dialOpt{})
		if err != nil {
			if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("dial: %v %v", err, resp)
			}
			refused++
			continue
		}
		defer conn.Close()
		held++
	}
	if held == 0 || held >= h.srv.tune.maxPending {
		t.Errorf("one address holds %d waiting connections (%d refused), want some but fewer than the %d slots", held, refused, h.srv.tune.maxPending)
	}
	h.dial(dialOpt{dialer: fromAddr("127.0.0.2"), auth: controlToken})
	// The flooding address may still authenticate (its share is full, so
	// with a credential on the request).
	h.dial(dialOpt{header: bearer(controlToken)})
}

// TestUnauthenticatedHoldIsAFailure: a connection that holds a waiting
// slot until the deadline counts toward the address's slow-down, like a
// wrong token does; other addresses are not slowed down.
func TestUnauthenticatedHoldIsAFailure(t *testing.T) {
	h := newHarness(t, setup{config: withTokens, tune: func(t *tuning) {
		t.authWait = 100 * time.Millisecond
		t.freeFailures = 2
	}})
	for i := range 3 {
		conn, _, err := h.dialRaw(dialOpt{})
		if err != nil {
			t.Fatalf("hold %d: %v", i, err)
		}
		c := &wsClient{t: t, conn: conn}
		if code := c.closeCode(5 * time.Second); code != closeUnauthorized {
			t.Fatalf("hold %d ended with %d, want 4401", i, code)
		}
		conn.Close()
	}
	if n := h.srv.AuthFailures(); n != 3 {
		t.Errorf("AuthFailures = %d after three holds, want 3", n)
	}
	if got := h.dialStatus(nil); got != http.StatusTooManyRequests {
		t.Errorf("after three holds: %d, want 429", got)
	}
	conn, _, err := fromAddr("127.0.0.2").Dial(h.url, bearer(controlToken))
	if err != nil {
		t.Fatalf("another address is slowed down too: %v", err)
	}
	conn.Close()
}

// TestCookieSecureOnlyOverTLS: a login over plain HTTP gets a cookie
// without Secure even when http.tls is configured (it came in through a
// proxy, or the redirect was bypassed): Secure over cleartext is a lie.
func TestCookieSecureOnlyOverTLS(t *testing.T) {
	ca := testkit.NewCA(t)
	certFile, keyFile := ca.WriteServerFiles(t, t.TempDir(), 1, "127.0.0.1")
	h := newHarness(t, setup{config: func(c *Config) {
		withTokens(c)
		c.TLS = pibridge.ServerTLS{CertFile: certFile, KeyFile: keyFile}
	}, tune: noLimit})
	r, ck := h.login(t, controlToken, nil)
	if r.status != http.StatusOK || ck == nil {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	if ck.Secure {
		t.Error("a cookie set over plain HTTP is marked Secure")
	}
	r = h.post(t, "/api/logout", "", cookieHeader(ck))
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Secure {
			t.Error("the logout cookie over plain HTTP is marked Secure")
		}
	}
}

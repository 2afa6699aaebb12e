package ws

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// newTestGatekeeper builds a gatekeeper alone, without a Server or a core,
// on a fake clock.
func newTestGatekeeper(t *testing.T, cfg Config) (*gatekeeper, *time.Time) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	tune := defaultTuning()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tune.now = func() time.Time { return now }
	g, err := newGatekeeper(cfg, "pi", t.TempDir(), nil, &tune)
	if err != nil {
		t.Fatal(err)
	}
	return g, &now
}

func TestGatekeeperGuard(t *testing.T) {
	const control, read = "control-token-0123456789", "read-token-0123456789"
	withTokens := Config{Token: control, ReadToken: read, AllowedOrigins: []string{"https://panel.example"}}
	for _, tc := range []struct {
		name      string
		cfg       Config
		frameAuth bool
		edit      func(r *http.Request)
		status    int // 0: let through
		adm       admission
		role      role
	}{
		{"auth off lets everyone control", Config{}, false, nil, 0, admitted, roleControl},
		{"unknown host", withTokens, false, func(r *http.Request) { r.Host = "attacker.example" }, http.StatusMisdirectedRequest, 0, 0},
		{"hostname.local is this machine", withTokens, false, func(r *http.Request) {
			r.Host = "pi.local:8080"
			r.Header.Set("Authorization", "Bearer "+control)
		}, 0, admitted, roleControl},
		{"cross-site origin", withTokens, false, func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, http.StatusForbidden, 0, 0},
		{"allowed origin", withTokens, false, func(r *http.Request) {
			r.Header.Set("Origin", "https://panel.example")
			r.Header.Set("Authorization", "Bearer "+read)
		}, 0, admitted, roleRead},
		{"token in the URL, even a right one", withTokens, false, func(r *http.Request) { r.URL.RawQuery = "x=" + control }, http.StatusBadRequest, 0, 0},
		{"control token", withTokens, false, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+control) }, 0, admitted, roleControl},
		{"read token", withTokens, false, func(r *http.Request) { r.Header.Set("Authorization", "bearer "+read) }, 0, admitted, roleRead},
		{"wrong token", withTokens, false, func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, http.StatusUnauthorized, 0, 0},
		{"no credentials on /api", withTokens, false, nil, http.StatusUnauthorized, 0, 0},
		{"no credentials on /ws: the first frame must authenticate", withTokens, true, nil, 0, admitFrame, roleNone},
		{"stale session on /ws", withTokens, true, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: "gone"}) }, 0, admitStale, roleNone},
		{"stale session on /api", withTokens, false, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: "gone"}) }, http.StatusUnauthorized, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := newTestGatekeeper(t, tc.cfg)
			r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/api/state", nil)
			if tc.edit != nil {
				tc.edit(r)
			}
			w := httptest.NewRecorder()
			acc, adm, ok := g.guard(w, r, tc.frameAuth)
			if tc.status != 0 {
				if ok || w.Code != tc.status {
					t.Fatalf("ok %v status %d, want refused with %d (%s)", ok, w.Code, tc.status, w.Body)
				}
				return
			}
			if !ok || adm != tc.adm || acc.role != tc.role {
				t.Fatalf("ok %v admission %d role %d, want let through as %d with role %d (%d %s)", ok, adm, acc.role, tc.adm, tc.role, w.Code, w.Body)
			}
		})
	}
}

func TestGatekeeperSlowsDownWrongTokens(t *testing.T) {
	g, now := newTestGatekeeper(t, Config{Token: "control-token-0123456789"})
	try := func(token string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/api/state", nil)
		r.RemoteAddr = "192.0.2.7:5000"
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		g.guard(w, r, false)
		return w
	}
	for i := 0; i < g.tune.freeFailures; i++ {
		if w := try("wrong"); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d, want 401", i+1, w.Code)
		}
	}
	try("wrong") // the first one beyond the free ones imposes a wait
	if w := try("control-token-0123456789"); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("while slowed down: status %d Retry-After %q, want 429 and 1 (even with the right token)", w.Code, w.Header().Get("Retry-After"))
	}
	if got, want := g.failures.Load(), uint64(g.tune.freeFailures+1); got != want {
		t.Errorf("failures %d, want %d (a refused attempt is not checked)", got, want)
	}
	// The same through an auth frame.
	addr := netip.MustParseAddr("192.0.2.7")
	if r, code, _ := g.frameToken(addr, "control-token-0123456789"); r != roleNone || code != closeTooManyAttempts {
		t.Fatalf("auth frame while slowed down: role %d close %d, want none and %d", r, code, closeTooManyAttempts)
	}
	*now = now.Add(time.Second)
	if r, _, _ := g.frameToken(addr, "control-token-0123456789"); r != roleControl {
		t.Fatalf("auth frame after the wait: role %d, want control", r)
	}
	if w := try("control-token-0123456789"); w.Code != http.StatusOK {
		t.Fatalf("after a success: status %d, want let through (forgiven)", w.Code)
	}
}

func TestGatekeeperPendingSlots(t *testing.T) {
	g, _ := newTestGatekeeper(t, Config{Token: "control-token-0123456789"})
	g.tune.maxPending, g.tune.maxPendingAddr = 3, 2
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for _, step := range []struct {
		addr netip.Addr
		ok   bool
	}{{a, true}, {a, true}, {a, false}, {b, true}, {b, false}} {
		if _, ok := g.takePending(step.addr); ok != step.ok {
			t.Fatalf("take for %v: %v, want %v (pending %d)", step.addr, ok, step.ok, g.npending.Load())
		}
	}
	g.releasePending(a)
	if _, ok := g.takePending(b); !ok {
		t.Fatal("a released slot was not given to another address")
	}
	if n := g.npending.Load(); n != 3 {
		t.Errorf("pending %d, want 3", n)
	}
}

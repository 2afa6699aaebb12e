package ws

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"pibridge/httpx"
)

// How a client proves who it is, in the order they are checked:
//
//   - Authorization: Bearer <token>, for scripts and other programs;
//   - the session cookie POST /api/login sets, for the panel: an opaque
//     random value that names a server-side session, never the token;
//   - for /ws only, because browsers cannot set headers on a WebSocket:
//     a first frame {"type":"auth","token":…} within authWait. Until it
//     has come the connection gets nothing, not even the hello.
//
// A token in the query string is refused outright, even a right one:
// URLs end up in logs, history and Referer headers. Tokens are compared as
// SHA-256 sums in constant time. Wrong tokens are counted per address and
// slow that address down (limiter).

const (
	// sessionCookie names the panel's session.
	sessionCookie = httpx.SessionCookie
	// closeUnauthorized closes a WebSocket whose authentication failed;
	// the panel shows its login form on it.
	closeUnauthorized = 4401
	// closeTooManyAttempts closes a WebSocket whose address is slowed down
	// after repeated failures.
	closeTooManyAttempts = 4429
	// maxAuthFrame bounds the first frame of an unauthenticated connection.
	maxAuthFrame = 4 << 10
	// maxLoginBody bounds POST /api/login.
	maxLoginBody = 4 << 10
	// tokenFileName is the generated token's file in the state directory.
	tokenFileName = "token"
)

// gatekeeper decides who may use /ws and /api/*: the Host and Origin
// checks, the tokens, the panel's login sessions, the slow-down after
// wrong tokens, and the slots of connections still waiting for their auth
// frame. The Server composes it; it knows nothing of connections or the
// core.
type gatekeeper struct {
	log  *slog.Logger
	tune *tuning // now, sessionTTL, maxPending and the limiter's bounds

	hosts    map[string]bool // allowed Host names besides IP literals; lower case
	origins  map[string]bool // allowed_origins, normalised
	hostname string          // this machine's, lower case; "" if unknown

	on                bool // a token is set: credentials are required
	tokenSum, readSum [sha256.Size]byte
	hasReadToken      bool
	generated         string // the generated token, for PanelURL only

	sessions *sessionStore
	limiter  *limiter
	pending  *pendingSlots
	npending atomic.Int64 // connections waiting for their auth frame
	failures atomic.Uint64
}

// newGatekeeper reads cfg's hosts, origins and tokens: token_file, and
// stateDir/token when one has to be generated (see Options.StateDir).
func newGatekeeper(cfg Config, hostname, stateDir string, log *slog.Logger, t *tuning) (*gatekeeper, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &gatekeeper{
		log:      log,
		tune:     t,
		hosts:    map[string]bool{"localhost": true},
		origins:  map[string]bool{},
		sessions: newSessionStore(t),
		limiter:  newLimiter(t),
		pending:  newPendingSlots(t),
	}
	if h := strings.TrimSuffix(strings.ToLower(hostname), "."); h != "" {
		g.hostname = h
		g.hosts[h] = true
		g.hosts[h+".local"] = true
	}
	for _, h := range cfg.AllowedHosts {
		g.hosts[strings.TrimSuffix(strings.ToLower(h), ".")] = true
	}
	for _, o := range cfg.AllowedOrigins {
		n, _ := normalOrigin(o) // Validate has accepted it
		g.origins[n] = true
	}
	if err := g.loadTokens(cfg, stateDir); err != nil {
		return nil, err
	}
	return g, nil
}

// access is what a request or connection has proved.
type access struct {
	role    role
	session sessionKey // the session it came with; zero for a token
}

// admission is how guard lets a request through.
type admission uint8

const (
	admitted admission = iota + 1
	// admitFrame: no credentials on a /ws request; the first frame must
	// authenticate.
	admitFrame
	// admitStale: a session cookie the server does not know (expired,
	// logged out, or the bridge restarted). /ws upgrades and closes with
	// 4401 at once, because browsers cannot see a refused handshake's
	// status and the panel should show its login form without delay.
	admitStale
)

// guard runs the checks every /ws and /api/* request passes, in the order
// that leaks least: Host (DNS rebinding), Origin (cross-site requests),
// no token in the URL, then credentials. It replies and returns ok=false
// when one fails. For /ws (frameAuth), a request without credentials, or
// with a stale session, is let through to authenticate after the upgrade.
func (g *gatekeeper) guard(w http.ResponseWriter, r *http.Request, frameAuth bool) (access, admission, bool) {
	if !g.precheck(w, r) {
		return access{}, 0, false
	}
	if !g.on {
		return access{role: roleControl}, admitted, true
	}
	addr := httpx.ClientAddr(r.RemoteAddr)
	if h := r.Header.Get("Authorization"); h != "" {
		if g.slowedDown(w, addr) {
			return access{}, 0, false
		}
		scheme, token, _ := strings.Cut(h, " ")
		role := roleNone
		if strings.EqualFold(scheme, "Bearer") {
			role = g.checkToken(strings.TrimSpace(token))
		}
		if role == roleNone {
			g.failed(addr)
			unauthorized(w, "wrong token")
			return access{}, 0, false
		}
		g.limiter.forgive(addr)
		return access{role: role}, admitted, true
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if acc, ok := g.sessions.lookup(ck.Value, g.tune.now()); ok {
			return acc, admitted, true
		}
		// Not a failure to count: guessing a 256-bit value is hopeless,
		// and every session goes stale when the bridge restarts.
		if frameAuth {
			return access{}, admitStale, true
		}
		unauthorized(w, "session expired or unknown: log in again")
		return access{}, 0, false
	}
	if !frameAuth {
		unauthorized(w, "a token is required: Authorization: Bearer <token>, or log in")
		return access{}, 0, false
	}
	// The auth frame will be a guess like any other.
	if g.slowedDown(w, addr) {
		return access{}, 0, false
	}
	return access{}, admitFrame, true
}

// precheck is the part of guard that needs no credentials: POST
// /api/login and /api/logout pass it too.
func (g *gatekeeper) precheck(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case !g.hostAllowed(r.Host):
		httpx.WriteError(w, http.StatusMisdirectedRequest, "unknown host name: add it to http.allowed_hosts")
	case !g.originAllowed(r):
		httpx.WriteError(w, http.StatusForbidden, "origin not allowed: add it to http.allowed_origins")
	case g.tokenInQuery(r.URL.RawQuery):
		httpx.WriteError(w, http.StatusBadRequest, "tokens are not accepted in URLs: use Authorization: Bearer, POST /api/login or the WebSocket auth message")
	default:
		return true
	}
	return false
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="pibridge"
	"pibridge/httpx"`)
	httpx.WriteError(w, http.StatusUnauthorized, msg)
}

// tokenParams are query parameter names that can only be meant to carry a
// token.
var tokenParams = map[string]bool{
	"token": true, "access_token": true, "read_token": true, "auth": true,
	"auth_token": true, "authorization": true, "bearer": true, "session": true,
}

// tokenInQuery reports whether a query string carries a token: under a
// name meant for one, or a configured token under any name.
func (g *gatekeeper) tokenInQuery(rawQuery string) bool {
	if rawQuery == "" {
		return false
	}
	q, _ := url.ParseQuery(rawQuery) // what parses is enough to decide
	for k, vs := range q {
		if tokenParams[strings.ToLower(k)] {
			return true
		}
		if !g.on {
			continue
		}
		for _, v := range vs {
			if g.checkToken(v) != roleNone {
				return true
			}
		}
	}
	return false
}

// checkToken returns the role a token grants, roleNone when it is wrong.
// Both sums are always compared, in constant time, so neither the token's
// content nor its length nor which token it is leaks through timing.
func (g *gatekeeper) checkToken(token string) role {
	sum := sha256.Sum256([]byte(token))
	control := subtle.ConstantTimeCompare(sum[:], g.tokenSum[:])
	read := subtle.ConstantTimeCompare(sum[:], g.readSum[:])
	switch {
	case control == 1:
		return roleControl
	case read == 1 && g.hasReadToken:
		return roleRead
	}
	return roleNone
}

// slowedDown answers 429 while addr has to wait after repeated failures.
func (g *gatekeeper) slowedDown(w http.ResponseWriter, addr netip.Addr) bool {
	wait := g.limiter.wait(addr, g.tune.now())
	if wait <= 0 {
		return false
	}
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	httpx.WriteError(w, http.StatusTooManyRequests, fmt.Sprintf("too many failed attempts: retry in %ds", secs))
	return true
}

// failed counts a wrong token from addr.
func (g *gatekeeper) failed(addr netip.Addr) {
	g.failures.Add(1)
	if wait := g.limiter.fail(addr, g.tune.now()); wait > 0 {
		// The address, never the token.
		g.log.Warn("repeated wrong tokens: slowing this address down", "addr", addr, "wait", wait)
	}
}

// serveLogin serves POST /api/login: {"token":"…"} in, and on success the
// session cookie (HttpOnly, SameSite=Strict, Path=/, Secure over TLS) and
// {"ok":true,"readonly":…} out. A wrong token is 401, an address slowed
// down 429 with Retry-After. With authentication off it answers ok and
// sets nothing.
func (g *gatekeeper) serveLogin(w http.ResponseWriter, r *http.Request) {
	if !g.precheck(w, r) || !allowMethod(w, r, http.MethodPost) {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		// A cross-site form cannot send this type without a preflight.
		httpx.WriteError(w, http.StatusUnsupportedMediaType, `want Content-Type: application/json and {"token":"…"}`)
		return
	}
	var body struct {
		Token *string `json:"token"`
	}
	if err := decodeBody(w, r, maxLoginBody, &body); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Token == nil || *body.Token == "" {
		httpx.WriteError(w, http.StatusBadRequest, "token is missing")
		return
	}
	if !g.on {
		httpx.WriteJSON(w, http.StatusOK, []byte(`{"ok":true,"readonly":false}`))
		return
	}
	addr := httpx.ClientAddr(r.RemoteAddr)
	if g.slowedDown(w, addr) {
		return
	}
	role := g.checkToken(*body.Token)
	if role == roleNone {
		g.failed(addr)
		httpx.WriteError(w, http.StatusUnauthorized, "wrong token")
		return
	}
	g.limiter.forgive(addr)
	value := g.sessions.create(role, g.tune.now())
	http.SetCookie(w, httpx.NewSessionCookie(r, value, int(g.tune.sessionTTL/time.Second)))
	httpx.WriteJSON(w, http.StatusOK, []byte(`{"ok":true,"readonly":`+strconv.FormatBool(role == roleRead)+`}`))
}

// takePending reserves a slot for a connection from addr that has yet to
// send its auth frame: one address gets a share of the slots, so that it
// cannot keep the others out. It returns why not when there is none.
func (g *gatekeeper) takePending(addr netip.Addr) (string, bool) {
	if !g.pending.take(addr) {
		return "too many connections from this address waiting to authenticate", false
	}
	if n := g.npending.Add(1); n > int64(g.tune.maxPending) {
		g.releasePending(addr)
		return "too many connections waiting to authenticate", false
	}
	return "", true
}

// releasePending gives back the slots an unauthenticated connection took.
func (g *gatekeeper) releasePending(addr netip.Addr) {
	g.npending.Add(-1)
	g.pending.release(addr)
}

// frameToken checks the token of a WebSocket auth frame from addr. On
// failure it returns roleNone and the close code and text to send.
func (g *gatekeeper) frameToken(addr netip.Addr, token string) (r role, closeCode int, why string) {
	if wait := g.limiter.wait(addr, g.tune.now()); wait > 0 {
		return roleNone, closeTooManyAttempts, fmt.Sprintf("too many failed attempts: retry in %ds", int((wait+time.Second-1)/time.Second))
	}
	if r = g.checkToken(token); r == roleNone {
		g.failed(addr)
		return roleNone, closeUnauthorized, "wrong token"
	}
	g.limiter.forgive(addr)
	return r, 0, ""
}

// role is what a request's token allows.
type role uint8

const (
	roleNone role = iota
	roleRead
	roleControl
)

// hostAllowed is the DNS-rebinding defence: a page from attacker.example
// that rebinds its name to our address still sends Host: attacker.example.
func (g *gatekeeper) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), ".")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return g.hosts[strings.ToLower(host)]
}

// originAllowed accepts requests without Origin (non-browser clients), and
// browser requests from the page's own origin — the scheme the request
// came with (https over TLS) and its Host — or from allowed_origins, each
// compared as a whole origin. It is the Upgrader's CheckOrigin too, so it
// never accepts everything.
func (g *gatekeeper) originAllowed(r *http.Request) bool {
	v := r.Header["Origin"]
	if len(v) == 0 {
		return true
	}
	u, err := url.Parse(v[0])
	if err != nil || u.Host == "" { // includes "null" (sandboxed frames, file://)
		return false
	}
	if strings.EqualFold(u.Scheme, requestScheme(r)) && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return g.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
}

// requestScheme is the scheme of the request's own origin.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

package ws

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
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
	sessionCookie = "pibridge_session"
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
func (s *Server) guard(w http.ResponseWriter, r *http.Request, frameAuth bool) (access, admission, bool) {
	if !s.precheck(w, r) {
		return access{}, 0, false
	}
	if !s.auth {
		return access{role: roleControl}, admitted, true
	}
	addr := clientAddr(r.RemoteAddr)
	if h := r.Header.Get("Authorization"); h != "" {
		if s.slowedDown(w, addr) {
			return access{}, 0, false
		}
		scheme, token, _ := strings.Cut(h, " ")
		role := roleNone
		if strings.EqualFold(scheme, "Bearer") {
			role = s.checkToken(strings.TrimSpace(token))
		}
		if role == roleNone {
			s.authFailed(addr)
			unauthorized(w, "wrong token")
			return access{}, 0, false
		}
		s.limiter.forgive(addr)
		return access{role: role}, admitted, true
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if acc, ok := s.sessions.lookup(ck.Value, s.tune.now()); ok {
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
	if s.slowedDown(w, addr) {
		return access{}, 0, false
	}
	return access{}, admitFrame, true
}

// precheck is the part of guard that needs no credentials: POST
// /api/login and /api/logout pass it too.
func (s *Server) precheck(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case !s.hostAllowed(r.Host):
		writeError(w, http.StatusMisdirectedRequest, "unknown host name: add it to http.allowed_hosts")
	case !s.originAllowed(r):
		writeError(w, http.StatusForbidden, "origin not allowed: add it to http.allowed_origins")
	case s.tokenInQuery(r.URL.RawQuery):
		writeError(w, http.StatusBadRequest, "tokens are not accepted in URLs: use Authorization: Bearer, POST /api/login or the WebSocket auth message")
	default:
		return true
	}
	return false
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="pibridge"`)
	writeError(w, http.StatusUnauthorized, msg)
}

// tokenParams are query parameter names that can only be meant to carry a
// token.
var tokenParams = map[string]bool{
	"token": true, "access_token": true, "read_token": true, "auth": true,
	"auth_token": true, "authorization": true, "bearer": true, "session": true,
}

// tokenInQuery reports whether a query string carries a token: under a
// name meant for one, or a configured token under any name.
func (s *Server) tokenInQuery(rawQuery string) bool {
	if rawQuery == "" {
		return false
	}
	q, _ := url.ParseQuery(rawQuery) // what parses is enough to decide
	for k, vs := range q {
		if tokenParams[strings.ToLower(k)] {
			return true
		}
		if !s.auth {
			continue
		}
		for _, v := range vs {
			if s.checkToken(v) != roleNone {
				return true
			}
		}
	}
	return false
}

// checkToken returns the role a token grants, roleNone when it is wrong.
// Both sums are always compared, in constant time, so neither the token's
// content nor its length nor which token it is leaks through timing.
func (s *Server) checkToken(token string) role {
	sum := sha256.Sum256([]byte(token))
	control := subtle.ConstantTimeCompare(sum[:], s.tokenSum[:])
	read := subtle.ConstantTimeCompare(sum[:], s.readSum[:])
	switch {
	case control == 1:
		return roleControl
	case read == 1 && s.hasReadToken:
		return roleRead
	}
	return roleNone
}

// slowedDown answers 429 while addr has to wait after repeated failures.
func (s *Server) slowedDown(w http.ResponseWriter, addr netip.Addr) bool {
	wait := s.limiter.wait(addr, s.tune.now())
	if wait <= 0 {
		return false
	}
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many failed attempts: retry in %ds", secs))
	return true
}

// authFailed counts a wrong token from addr.
func (s *Server) authFailed(addr netip.Addr) {
	s.authFailures.Add(1)
	if wait := s.limiter.fail(addr, s.tune.now()); wait > 0 {
		// The address, never the token.
		s.log.Warn("repeated wrong tokens: slowing this address down", "addr", addr, "wait", wait)
	}
}

// ServeLogin serves POST /api/login: {"token":"…"} in, and on success the
// session cookie (HttpOnly, SameSite=Strict, Path=/, Secure over TLS) and
// {"ok":true,"readonly":…} out. A wrong token is 401, an address slowed
// down 429 with Retry-After. With authentication off it answers ok and
// sets nothing.
func (s *Server) ServeLogin(w http.ResponseWriter, r *http.Request) {
	if !s.precheck(w, r) || !allowMethod(w, r, http.MethodPost) {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		// A cross-site form cannot send this type without a preflight.
		writeError(w, http.StatusUnsupportedMediaType, `want Content-Type: application/json and {"token":"…"}`)
		return
	}
	var body struct {
		Token *string `json:"token"`
	}
	if err := decodeBody(w, r, maxLoginBody, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Token == nil || *body.Token == "" {
		writeError(w, http.StatusBadRequest, "token is missing")
		return
	}
	if !s.auth {
		writeJSON(w, http.StatusOK, []byte(`{"ok":true,"readonly":false}`))
		return
	}
	addr := clientAddr(r.RemoteAddr)
	if s.slowedDown(w, addr) {
		return
	}
	role := s.checkToken(*body.Token)
	if role == roleNone {
		s.authFailed(addr)
		writeError(w, http.StatusUnauthorized, "wrong token")
		return
	}
	s.limiter.forgive(addr)
	value := s.sessions.create(role, s.tune.now())
	http.SetCookie(w, s.cookie(r, value, int(s.tune.sessionTTL/time.Second)))
	writeJSON(w, http.StatusOK, []byte(`{"ok":true,"readonly":`+strconv.FormatBool(role == roleRead)+`}`))
}

// ServeLogout serves POST /api/logout: it ends the session, closes the
// WebSockets opened with it (4401), and clears the cookie.
func (s *Server) ServeLogout(w http.ResponseWriter, r *http.Request) {
	if !s.precheck(w, r) || !allowMethod(w, r, http.MethodPost) {
		return
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if key, ok := s.sessions.remove(ck.Value); ok {
			for _, c := range s.hub.connected() {
				if c.session == key {
					c.mb.close(closeUnauthorized, "logged out")
				}
			}
		}
	}
	http.SetCookie(w, s.cookie(r, "", -1))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// cookie is the session cookie; maxAge -1 deletes it.
func (s *Server) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     sessionCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		// Only a cookie set over TLS is marked Secure: one set over plain
		// HTTP with it would be dropped by the browser, or, worse, sent over
		// cleartext as if it were protected.
		Secure: r.TLS != nil,
	}
}

// ---------------------------------------------------------------- sessions

// sessionKey is the SHA-256 of a session's cookie value: the map is keyed
// by it, so a lookup's timing says nothing about stored values.
type sessionKey [sha256.Size]byte

// sessionStore is the server-side side of the panel's cookie: bounded in
// size, each session valid for ttl from login.
type sessionStore struct {
	t *tuning // maxSessions, sessionTTL

	mu sync.Mutex
	m  map[sessionKey]session
}

type session struct {
	role    role
	expires time.Time
}

func newSessionStore(t *tuning) *sessionStore {
	return &sessionStore{t: t, m: make(map[sessionKey]session)}
}

// create starts a session and returns its cookie value. When the store is
// full, expired sessions go first, then the one closest to expiry.
func (st *sessionStore) create(r role, now time.Time) (value string) {
	value = randomText()
	expires := now.Add(st.t.sessionTTL)
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.m) >= st.t.maxSessions {
		var oldest sessionKey
		var oldestExp time.Time
		for k, s := range st.m {
			if !now.Before(s.expires) {
				delete(st.m, k)
				continue
			}
			if oldestExp.IsZero() || s.expires.Before(oldestExp) {
				oldest, oldestExp = k, s.expires
			}
		}
		if len(st.m) >= st.t.maxSessions {
			delete(st.m, oldest)
		}
	}
	st.m[sha256.Sum256([]byte(value))] = session{role: r, expires: expires}
	return value
}

func (st *sessionStore) lookup(value string, now time.Time) (access, bool) {
	if value == "" {
		return access{}, false
	}
	key := sessionKey(sha256.Sum256([]byte(value)))
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[key]
	if !ok {
		return access{}, false
	}
	if !now.Before(s.expires) {
		delete(st.m, key)
		return access{}, false
	}
	return access{role: s.role, session: key}, true
}

func (st *sessionStore) remove(value string) (sessionKey, bool) {
	key := sessionKey(sha256.Sum256([]byte(value)))
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.m[key]
	delete(st.m, key)
	return key, ok
}

func (st *sessionStore) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}

// randomText returns 256 random bits, URL-safe: session values and
// generated tokens.
func randomText() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ---------------------------------------------------------------- limiter

// limiter slows down addresses that keep sending wrong tokens. After
// freeFailures each further one makes the address wait failDelay, then
// twice as long, up to maxFailDelay; a success, or forgetFailures without
// one, clears it.
// While it waits, its attempts are refused unchecked (429), so waiting is
// the only way forward. State is a bounded map checked on each attempt:
// no timers, no goroutine per address.
type limiter struct {
	t *tuning // limiterSize, freeFailures, failDelay, maxFailDelay, forgetFailures

	mu sync.Mutex
	m  map[netip.Addr]*strikes
}

type strikes struct {
	n     int
	last  time.Time // last failure
	until time.Time // attempts refused before this
}

func newLimiter(t *tuning) *limiter {
	return &limiter{t: t, m: make(map[netip.Addr]*strikes)}
}

// wait returns how long addr must still wait before its next attempt.
func (l *limiter) wait(addr netip.Addr, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.m[addr]
	if st == nil {
		return 0
	}
	return max(0, st.until.Sub(now))
}

// fail records a failure and returns the wait it imposes.
func (l *limiter) fail(addr netip.Addr, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.m[addr]
	if st != nil && l.forgotten(st, now) {
		st.n = 0
	}
	if st == nil {
		if len(l.m) >= l.t.limiterSize {
			l.evict(now)
		}
		st = &strikes{}
		l.m[addr] = st
	}
	st.n++
	st.last = now
	if st.n <= l.t.freeFailures {
		return 0
	}
	d := l.t.maxFailDelay
	if shift := st.n - l.t.freeFailures - 1; shift < 30 {
		d = min(l.t.failDelay<<shift, d)
	}
	st.until = now.Add(d)
	return d
}

// forgive clears addr after a success.
func (l *limiter) forgive(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, addr)
}

// evict makes room: entries that are forgotten go; when none is, the one
// whose last failure is oldest does.
func (l *limiter) evict(now time.Time) {
	var oldest netip.Addr
	var oldestAt time.Time
	for a, st := range l.m {
		if l.forgotten(st, now) {
			delete(l.m, a)
			continue
		}
		if oldestAt.IsZero() || st.last.Before(oldestAt) {
			oldest, oldestAt = a, st.last
		}
	}
	if len(l.m) >= l.t.limiterSize {
		delete(l.m, oldest)
	}
}

// forgotten reports whether a long quiet spell has cleared st.
func (l *limiter) forgotten(st *strikes, now time.Time) bool {
	return now.Sub(st.last) > l.t.forgetFailures && !now.Before(st.until)
}

func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// clientAddr is the key failures are counted under: the IPv4 address, or
// the IPv6 /64, which one host usually owns whole.
func clientAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{} // unparsable addresses share one count
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		if p, err := a.WithZone("").Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// ---------------------------------------------------------------- pending

// pendingSlots counts, per address (clientAddr), the connections waiting
// for their auth frame: one address gets maxPendingAddr of the maxPending
// slots, so that it cannot hold them all.
type pendingSlots struct {
	t *tuning // maxPendingAddr

	mu sync.Mutex
	m  map[netip.Addr]int
}

func newPendingSlots(t *tuning) *pendingSlots {
	return &pendingSlots{t: t, m: make(map[netip.Addr]int)}
}

// take reserves a slot for addr; false when it holds its share.
func (p *pendingSlots) take(addr netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[addr] >= p.t.maxPendingAddr {
		return false
	}
	p.m[addr]++
	return true
}

func (p *pendingSlots) release(addr netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[addr] <= 1 {
		delete(p.m, addr) // the map holds only addresses with a slot
		return
	}
	p.m[addr]--
}

// ---------------------------------------------------------------- tokens

// loadTokens resolves the control token: token, token_file, or — when the
// listen address is beyond loopback and neither is set — the token kept
// in StateDir/token, generated on first start.
func (s *Server) loadTokens(stateDir string) error {
	token := s.cfg.Token
	if s.cfg.TokenFile != "" {
		b, err := os.ReadFile(s.cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("ws: http.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		switch {
		case token == "":
			return fmt.Errorf("ws: http.token_file: %s is empty", s.cfg.TokenFile)
		case validToken(token) != "":
			return fmt.Errorf("ws: http.token_file: %s: %s", s.cfg.TokenFile, validToken(token))
		case token == s.cfg.ReadToken:
			return errors.New("ws: http.read_token must differ from the token in token_file")
		}
	}
	if s.cfg.generatesToken() {
		t, created, err := loadOrCreateToken(stateDir)
		if err != nil {
			return fmt.Errorf("ws: http.listen %s is beyond loopback and no token is set, so one is generated: %w", s.cfg.Listen, err)
		}
		if t == s.cfg.ReadToken {
			return errors.New("ws: http.read_token must differ from the generated token")
		}
		token, s.generated = t, t
		if created {
			s.log.Info("generated an http token: open the panel URL printed at start", "file", filepath.Join(stateDir, tokenFileName))
		}
	}
	if token == "" || token == TokenNone {
		return nil
	}
	s.auth = true
	s.tokenSum = sha256.Sum256([]byte(token))
	if s.cfg.ReadToken != "" {
		s.hasReadToken = true
		s.readSum = sha256.Sum256([]byte(s.cfg.ReadToken))
	}
	if len(token) < 16 {
		s.log.Warn("the http token is short; use at least 16 random characters")
	}
	return nil
}

// loadOrCreateToken returns the token in dir/token, creating it (0600,
// 256 random bits) when the file does not exist.
func loadOrCreateToken(dir string) (token string, created bool, err error) {
	if dir == "" {
		return "", false, errors.New("no state_dir to keep it in: set http.token, http.token_file or token: none")
	}
	path := filepath.Join(dir, tokenFileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		token = strings.TrimSpace(string(b))
		if token == "" || validToken(token) != "" {
			return "", false, fmt.Errorf("%s holds no usable token: delete it to have a new one generated", path)
		}
		return token, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, err
	}
	token = randomText()
	f, err := os.CreateTemp(dir, ".token-*") // 0600
	if err != nil {
		return "", false, err
	}
	defer os.Remove(f.Name()) // once renamed, there is nothing to remove
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return "", false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, err
	}
	if err := f.Close(); err != nil {
		return "", false, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", false, err
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return token, true, nil
}

// PanelURL returns the URL to print at start, such as
// http://192.168.1.20:8080/ — and, when the token was generated (or read
// back from StateDir/token), the token in the fragment:
// http://192.168.1.20:8080/#token=…. Browsers never send a fragment; the
// panel reads it, logs in, and removes it from the address bar. Print it
// for the person at the console; never log it. A listen address of all
// interfaces is shown as this machine's first LAN IPv4 address (or
// hostname.local, or localhost).
func (s *Server) PanelURL() string {
	scheme := "http"
	if s.cfg.TLS.Enabled() {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		host, port = "localhost", "8080"
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = s.lanHost()
	}
	u := scheme + "://" + net.JoinHostPort(host, port) + "/"
	if s.generated != "" {
		u += "#token=" + s.generated
	}
	return u
}

// lanHost names this machine for people on the LAN.
func (s *Server) lanHost() string {
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && ip.IsGlobalUnicast() {
						return ip.Unmap().String()
					}
				}
			}
		}
	}
	if s.hostname != "" {
		return s.hostname + ".local"
	}
	return "localhost"
}

package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pibridge"
	"pibridge/httpx"
)

// role is what a credential grants.
type role uint8

const (
	roleNone    role = iota
	roleRead         // sees everything, commands nothing
	roleControl      // everything
)

const (
	sessionCookie = httpx.SessionCookie
	sessionTTL    = 7 * 24 * time.Hour
	maxSessions   = 1024
	freeFailures  = 3
	failDelay     = time.Second
	maxFailDelay  = 5 * time.Minute
	forgetAfter   = 15 * time.Minute
	maxStrikes    = 4096
	tokenNone     = "none"
)

// auth is the README "HTTP" rules for the gateway's own tokens: a bearer
// header, the session cookie POST /api/login sets, or a WebSocket's first
// frame; constant-time comparison; repeated failures slowed down; the
// Host allow-list and the Origin check.
type auth struct {
	enabled           bool
	tokenSum, readSum [sha256.Size]byte
	hasRead           bool
	generated         string // for PanelURL only
	hosts             map[string]bool
	origins           map[string]bool
	now               func() time.Time

	failures atomic.Uint64 // wrong tokens, for /metrics

	mu       sync.Mutex
	sessions map[[sha256.Size]byte]session
	strikes  map[netip.Addr]*strike
}

type session struct {
	role    role
	expires time.Time
}

type strike struct {
	n     int
	until time.Time
	last  time.Time
}

func newAuth(c HTTPConfig, stateDir, hostname string, now func() time.Time) (*auth, error) {
	a := &auth{hosts: map[string]bool{"localhost": true}, origins: map[string]bool{}, now: now,
		sessions: map[[sha256.Size]byte]session{}, strikes: map[netip.Addr]*strike{}}
	if h := strings.TrimSuffix(strings.ToLower(hostname), "."); h != "" {
		a.hosts[h], a.hosts[h+".local"] = true, true
	}
	for _, h := range c.AllowedHosts {
		a.hosts[strings.TrimSuffix(strings.ToLower(h), ".")] = true
	}
	for _, o := range c.AllowedOrigins {
		a.origins[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	token := c.Token
	switch {
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("http.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("http.token_file: %s is empty", c.TokenFile)
		}
	case token == "" && !loopbackListen(c.Listen):
		if stateDir == "" {
			return nil, errors.New("http: listening beyond loopback without a token needs a state_dir to keep the generated one")
		}
		t, created, err := loadOrCreateToken(stateDir)
		if err != nil {
			return nil, err
		}
		token = t
		if created {
			a.generated = t
		}
	}
	if token != "" && token != tokenNone {
		a.enabled = true
		a.tokenSum = sha256.Sum256([]byte(token))
		if c.ReadToken != "" {
			a.hasRead = true
			a.readSum = sha256.Sum256([]byte(c.ReadToken))
		}
	}
	return a, nil
}

func loadOrCreateToken(dir string) (string, bool, error) {
	path := filepath.Join(dir, "token")
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, false, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("token: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", false, fmt.Errorf("token: %w", err)
	}
	t := randomText()
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("token: %w", err)
	}
	return t, true, nil
}

func randomText() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// check compares a presented token with ours in constant time.
func (a *auth) check(token string) role {
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1 {
		return roleControl
	}
	if a.hasRead && subtle.ConstantTimeCompare(sum[:], a.readSum[:]) == 1 {
		return roleRead
	}
	return roleNone
}

// hostAllowed is the DNS-rebinding defence: IP literals, localhost, this
// machine's name (also .local) and allowed_hosts.
func (a *auth) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(strings.ToLower(host), "[]"), ".")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return a.hosts[host]
}

// originAllowed: no Origin (not a browser), the request's own host, or
// allowed_origins.
func (a *auth) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return a.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
}

// admission says how a request got in.
type admission uint8

const (
	admitted   admission = iota // credentials checked
	admitFrame                  // a WebSocket whose first frame must be auth
)

// guard checks Host and credentials. frameAuth lets a WebSocket without
// credentials in: its first frame must then carry the token. It answers
// the request itself when it refuses it.
func (a *auth) guard(w http.ResponseWriter, r *http.Request, frameAuth bool) (role, admission, bool) {
	if !a.hostAllowed(r.Host) {
		writeError(w, http.StatusMisdirectedRequest, "host "+pibridge.Clip(r.Host)+" is not allowed (http.allowed_hosts)")
		return roleNone, admitted, false
	}
	if !a.enabled {
		return roleControl, admitted, true
	}
	addr := httpx.ClientAddr(r.RemoteAddr)
	if h := r.Header.Get("Authorization"); h != "" {
		if wait := a.wait(addr); wait > 0 {
			w.Header().Set("Retry-After", itoa(int(wait/time.Second)+1))
			writeError(w, http.StatusTooManyRequests, "too many wrong tokens; try again later")
			return roleNone, admitted, false
		}
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if rl := a.check(strings.TrimSpace(tok)); ok && rl != roleNone {
			return rl, admitted, true
		}
		a.fail(addr)
		unauthorized(w, "wrong token")
		return roleNone, admitted, false
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if rl := a.session(c.Value); rl != roleNone {
			return rl, admitted, true
		}
	}
	if frameAuth {
		return roleNone, admitFrame, true
	}
	unauthorized(w, "a token is needed: Authorization: Bearer, or POST /api/login")
	return roleNone, admitted, false
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="pibridge"`)
	writeError(w, http.StatusUnauthorized, msg)
}

// wait is how long addr must wait before its next attempt.
func (a *auth) wait(addr netip.Addr) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.strikes[addr]
	if s == nil {
		return 0
	}
	return max(s.until.Sub(a.now()), 0)
}

// fail records a wrong token: after freeFailures, each one doubles the
// wait, up to maxFailDelay.
func (a *auth) fail(addr netip.Addr) {
	a.failures.Add(1)
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.strikes[addr]
	if s != nil && now.Sub(s.last) > forgetAfter {
		s = nil
	}
	if s == nil {
		if len(a.strikes) >= maxStrikes {
			for k, v := range a.strikes {
				if now.Sub(v.last) > forgetAfter || len(a.strikes) >= maxStrikes {
					delete(a.strikes, k)
				}
			}
		}
		s = &strike{}
		a.strikes[addr] = s
	}
	s.n++
	s.last = now
	if s.n > freeFailures {
		d := failDelay << min(s.n-freeFailures-1, 20)
		s.until = now.Add(min(d, maxFailDelay))
	}
}

func (a *auth) forgive(addr netip.Addr) {
	a.mu.Lock()
	delete(a.strikes, addr)
	a.mu.Unlock()
}

func (a *auth) session(value string) role {
	key := sha256.Sum256([]byte(value))
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[key]
	if !ok || a.now().After(s.expires) {
		delete(a.sessions, key)
		return roleNone
	}
	return s.role
}

func (a *auth) newSession(rl role) string {
	v := randomText()
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sessions) >= maxSessions {
		var oldest [sha256.Size]byte
		var at time.Time
		for k, s := range a.sessions {
			if at.IsZero() || s.expires.Before(at) {
				oldest, at = k, s.expires
			}
		}
		delete(a.sessions, oldest)
	}
	a.sessions[sha256.Sum256([]byte(v))] = session{role: rl, expires: now.Add(sessionTTL)}
	return v
}

// serveLogin: POST /api/login {"token":"…"} sets the HttpOnly,
// SameSite=Strict session cookie for the whole gateway (every device's
// panel and the fleet page).
func (a *auth) serveLogin(w http.ResponseWriter, r *http.Request) {
	if !a.hostAllowed(r.Host) {
		writeError(w, http.StatusMisdirectedRequest, "host is not allowed")
		return
	}
	if !a.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	if !a.enabled {
		httpx.WriteJSON(w, http.StatusOK, []byte(`{"ok":true,"auth":false}`))
		return
	}
	addr := httpx.ClientAddr(r.RemoteAddr)
	if wait := a.wait(addr); wait > 0 {
		w.Header().Set("Retry-After", itoa(int(wait/time.Second)+1))
		writeError(w, http.StatusTooManyRequests, "too many wrong tokens; try again later")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := jsonUnmarshal(readBody(w, r), &body); err != nil || body.Token == "" {
		writeError(w, http.StatusBadRequest, `want {"token":"…"}`)
		return
	}
	rl := a.check(body.Token)
	if rl == roleNone {
		a.fail(addr)
		unauthorized(w, "wrong token")
		return
	}
	a.forgive(addr)
	http.SetCookie(w, httpx.NewSessionCookie(r, a.newSession(rl), int(sessionTTL/time.Second)))
	httpx.WriteJSON(w, http.StatusOK, []byte(`{"ok":true}`))
}

func (a *auth) serveLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		key := sha256.Sum256([]byte(c.Value))
		a.mu.Lock()
		delete(a.sessions, key)
		a.mu.Unlock()
	}
	http.SetCookie(w, httpx.NewSessionCookie(r, "", -1))
	httpx.WriteJSON(w, http.StatusOK, []byte(`{"ok":true}`))
}

// Package httpx holds the HTTP words a bridge and a gateway share: JSON
// bodies, error bodies and the status of the core's errors. It lives apart
// from the root package so that the vocabulary stays free of net/http.
package httpx

import (
	"context"
	"errors"
	"net/http"
	"net/netip"

	"pibridge"
)

// WriteJSON answers with a JSON body that no cache keeps.
func WriteJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}

// WriteError answers with {"error":msg} and a newline.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, append(AppendError(make([]byte, 0, 17+len(msg)), msg), '\n'))
}

// AppendError appends {"error":msg}.
func AppendError(b []byte, msg string) []byte {
	b = append(b, `{"error":`...)
	b = pibridge.AppendJSONString(b, msg)
	return append(b, '}')
}

// Status maps the core's command errors (and a timeout) to HTTP status
// codes; ok is false for an error it does not know.
func Status(err error) (status int, ok bool) {
	switch {
	case errors.Is(err, pibridge.ErrUnknownSignal):
		return http.StatusNotFound, true
	case errors.Is(err, pibridge.ErrNotWritable), errors.Is(err, pibridge.ErrConflict):
		return http.StatusConflict, true
	case errors.Is(err, pibridge.ErrBadValue):
		return http.StatusBadRequest, true
	case errors.Is(err, pibridge.ErrReadOnly):
		return http.StatusForbidden, true
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, true
	case errors.Is(err, pibridge.ErrNotReady), errors.Is(err, pibridge.ErrBusy):
		return http.StatusServiceUnavailable, true
	}
	return 0, false
}

// SessionCookie names the panel's login session, a bridge's and a
// gateway's alike.
const SessionCookie = "pibridge_session"

// NewSessionCookie is the session cookie POST /api/login sets: HttpOnly,
// SameSite=Strict, for the whole site; maxAge -1 deletes it.
func NewSessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     SessionCookie,
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

// ClientAddr is the key wrong tokens are counted under: the IPv4 address,
// or the IPv6 /64, which one host usually owns whole.
func ClientAddr(remote string) netip.Addr {
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

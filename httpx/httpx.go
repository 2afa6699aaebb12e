// Package httpx holds the HTTP words a bridge and a gateway share: JSON
// bodies, error bodies and the status of the core's errors. It lives apart
// from the root package so that the vocabulary stays free of net/http.
package httpx

import (
	"context"
	"errors"
	"net/http"

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

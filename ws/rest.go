package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"pibridge"
	"pibridge/httpx"
)

// ServeState serves GET /api/state: {"device":…,"signals":[…],"clock":{…},"state":{…}},
// the same shapes as the WebSocket hello.
func (s *Server) ServeState(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.restGuard(w, r); !ok || !allowMethod(w, r, http.MethodGet) {
		return
	}
	state := s.core.State()
	b := make([]byte, 0, len(s.metaHead)+64+len(state)*96)
	b = append(b, s.metaHead...)
	b = pibridge.AppendClock(append(b, ','), s.core.ClockState())
	b = append(b, `,"state":`...)
	b = appendState(b, state)
	httpx.WriteJSON(w, http.StatusOK, append(b, '}'))
}

// ServeSignal serves POST /api/signals/<name>. The body is a value as MQTT
// /set takes it (on, off, toggle, a number, or {"value":…}); the answer is
// the reading that confirms the command, or {"error":…} with 400 (bad
// value), 403 (read-only token), 404 (no such signal), 409 (not writable,
// or refused for a reason of state), 503 (busy: too many commands waiting,
// with Retry-After; or outputs not ready), 504 (the actuator took too long).
func (s *Server) ServeSignal(w http.ResponseWriter, r *http.Request) {
	role, ok := s.restGuard(w, r)
	if !ok || !allowMethod(w, r, http.MethodPost) {
		return
	}
	name := r.PathValue("name")
	if name == "" { // mounted without a {name} pattern
		name = strings.TrimPrefix(r.URL.Path, "/api/signals/")
	}
	if role != roleControl {
		httpx.WriteError(w, http.StatusForbidden, pibridge.ErrReadOnly.Error())
		return
	}
	if err := s.refuse(name); err != nil {
		httpx.WriteError(w, statusOf(err), err.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMessageSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.WriteError(w, http.StatusRequestEntityTooLarge, "body is larger than 64 KiB")
			return
		}
		httpx.WriteError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	v, id, err := pibridge.ParseSetPayload(body)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, name+": "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.tune.commandTimeout)
	defer cancel()
	reading, err := s.core.Execute(ctx, pibridge.Command{ID: id, Name: name, Op: pibridge.OpSet, Value: v, Source: "http"})
	if err != nil {
		s.log.Debug("command failed", "source", "http", "remote", r.RemoteAddr, "signal", name, "err", err)
		if errors.Is(err, pibridge.ErrBusy) {
			w.Header().Set("Retry-After", "1")
		}
		httpx.WriteError(w, statusOf(err), err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, reading.AppendJSON(make([]byte, 0, 96)))
}

// ServeHistory serves GET /api/history?name=…&since=10m:
// {"name":…,"points":[[ms,v],…]}.
func (s *Server) ServeHistory(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.restGuard(w, r); !ok || !allowMethod(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	name := q.Get("name")
	if name == "" {
		httpx.WriteError(w, http.StatusBadRequest, "name is missing")
		return
	}
	d, err := pibridge.ParseSince(q.Get("since"))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	points, err := s.core.History(name, d)
	if err != nil {
		httpx.WriteError(w, statusOf(err), err.Error())
		return
	}
	b := make([]byte, 0, 32+len(name)+len(points)*24)
	httpx.WriteJSON(w, http.StatusOK, pibridge.AppendHistoryJSON(b, name, points))
}

// restGuard is guard for /api/*: the same checks as /ws, the same
// credentials but the auth frame.
func (s *Server) restGuard(w http.ResponseWriter, r *http.Request) (role, bool) {
	acc, _, ok := s.gate.guard(w, r, false)
	return acc.role, ok
}

// decodeBody decodes a JSON object of at most limit bytes into v,
// refusing unknown fields and trailing data.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("body is larger than %d bytes", limit)
		}
		return fmt.Errorf("malformed JSON: %s", pibridge.Clip(err.Error()))
	}
	if dec.More() {
		return errors.New("malformed JSON: trailing data after the object")
	}
	return nil
}

// statusOf maps the core's errors to HTTP status codes.
func statusOf(err error) int {
	if status, ok := httpx.Status(err); ok {
		return status
	}
	return http.StatusInternalServerError
}

func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	w.Header().Set("Allow", method)
	httpx.WriteError(w, http.StatusMethodNotAllowed, "method not allowed")
	return false
}

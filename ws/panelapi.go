package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"pibridge/internal/logring"

	"pibridge/httpx"
)

// PanelAPI feeds the panel's logs, device and settings pages. Every field
// is optional: without it, its routes answer 404 and the panel hides the
// page (a gateway's per-device panel has none of them).
type PanelAPI struct {
	// Logs: GET /api/logs (snapshot; ?format=text for the download) and
	// GET /api/logs/stream (Server-Sent Events), for read and control tokens.
	Logs *logring.Ring
	// Device: GET /api/device, any JSON value, for read and control tokens.
	Device func() any
	// Config: GET /api/config, the running configuration's text, and
	// Validate: POST /api/config/validate, for the control token only
	// (the text may hold secrets, and it is the way to change the bridge).
	Config   func() ConfigText
	Validate func(src []byte) ConfigReport
	// Apply: POST /api/config/apply, and ApplyStatus: GET
	// /api/config/status, control token only. Apply answers with an HTTP
	// status and a JSON body; who names the caller for the log.
	Apply       func(src []byte, who string) (int, any)
	ApplyStatus func() any
}

// ConfigText is the configuration the bridge runs with.
type ConfigText struct {
	Path string `json:"path"` // "" for the built-in demo
	Text string `json:"text"`
}

// ConfigReport is what the loader of `bridge -check` says of a text.
type ConfigReport struct {
	Valid    bool            `json:"valid"`
	Problems []ConfigProblem `json:"problems"`
	Signals  []ConfigSignal  `json:"signals"`
	Warnings []string        `json:"warnings,omitempty"`
}

// ConfigProblem is one problem; Line is 1-based, 0 when it has none.
type ConfigProblem struct {
	Line int    `json:"line,omitempty"`
	Path string `json:"path,omitempty"`
	Msg  string `json:"msg"`
}

// ConfigSignal is one row of the resolved signal/pin table.
type ConfigSignal struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Writable bool   `json:"writable"`
	Unit     string `json:"unit,omitempty"`
	Pin      string `json:"pin,omitempty"` // the pin, or the sensor's source
}

const (
	// maxLogStreams bounds the open log streams: each holds a connection
	// and a goroutine, and a few panels are all a Pi needs.
	maxLogStreams = 8
	// logHeartbeat keeps proxies and the browser from timing a quiet
	// stream out.
	logHeartbeat = 15 * time.Second
	// logWriteTimeout bounds each write of a stream; the http.Server's
	// WriteTimeout would end it after 30 s otherwise.
	logWriteTimeout = 10 * time.Second
)

// logStreams counts the open log streams of every server in the process.
var logStreams atomic.Int32

// PanelRoutes registers the routes of api on mux, and lists the pages
// they serve in the hello ("pages":["logs","device","settings"]), so that
// the panel shows their tabs without asking for what may not exist. Call
// it before Run.
func (s *Server) PanelRoutes(mux *http.ServeMux, api PanelAPI) {
	var pages []string
	defer func() {
		if len(pages) == 0 || s.started.Load() {
			return
		}
		s.helloHead = append(s.helloHead, `,"pages":[`...)
		for i, p := range pages {
			if i > 0 {
				s.helloHead = append(s.helloHead, ',')
			}
			s.helloHead = append(append(append(s.helloHead, '"'), p...), '"')
		}
		s.helloHead = append(s.helloHead, ']')
	}()
	if api.Logs != nil {
		pages = append(pages, "logs")
		mux.HandleFunc("GET /api/logs", func(w http.ResponseWriter, r *http.Request) { s.serveLogs(w, r, api.Logs) })
		mux.HandleFunc("GET /api/logs/stream", func(w http.ResponseWriter, r *http.Request) { s.serveLogStream(w, r, api.Logs) })
	}
	if api.Device != nil {
		pages = append(pages, "device")
		mux.HandleFunc("GET /api/device", func(w http.ResponseWriter, r *http.Request) {
			if _, ok := s.restGuard(w, r); !ok {
				return
			}
			b, err := json.Marshal(api.Device())
			if err != nil {
				httpx.WriteError(w, http.StatusInternalServerError, "device: "+err.Error())
				return
			}
			httpx.WriteJSON(w, http.StatusOK, b)
		})
	}
	if api.Config != nil && api.Validate != nil {
		pages = append(pages, "settings") // shown to the control token only
		mux.HandleFunc("GET /api/config", func(w http.ResponseWriter, r *http.Request) {
			if !s.controlOnly(w, r) {
				return
			}
			b, _ := json.Marshal(api.Config()) // strings only: cannot fail
			httpx.WriteJSON(w, http.StatusOK, b)
		})
		mux.HandleFunc("POST /api/config/validate", func(w http.ResponseWriter, r *http.Request) {
			if !s.controlOnly(w, r) {
				return
			}
			src, ok := readConfigBody(w, r)
			if !ok {
				return
			}
			rep := api.Validate(src)
			if rep.Problems == nil {
				rep.Problems = []ConfigProblem{}
			}
			if rep.Signals == nil {
				rep.Signals = []ConfigSignal{}
			}
			b, err := json.Marshal(rep)
			if err != nil {
				httpx.WriteError(w, http.StatusInternalServerError, "validate: "+err.Error())
				return
			}
			httpx.WriteJSON(w, http.StatusOK, b)
		})
	}
	if api.Apply != nil && api.ApplyStatus != nil {
		mux.HandleFunc("POST /api/config/apply", func(w http.ResponseWriter, r *http.Request) {
			if !s.controlOnly(w, r) {
				return
			}
			src, ok := readConfigBody(w, r)
			if !ok {
				return
			}
			code, body := api.Apply(src, "control token from "+r.RemoteAddr)
			b, err := json.Marshal(body)
			if err != nil {
				httpx.WriteError(w, http.StatusInternalServerError, "apply: "+err.Error())
				return
			}
			httpx.WriteJSON(w, code, b)
		})
		mux.HandleFunc("GET /api/config/status", func(w http.ResponseWriter, r *http.Request) {
			if !s.controlOnly(w, r) {
				return
			}
			b, err := json.Marshal(api.ApplyStatus())
			if err != nil {
				httpx.WriteError(w, http.StatusInternalServerError, "status: "+err.Error())
				return
			}
			httpx.WriteJSON(w, http.StatusOK, b)
		})
	}
}

// readConfigBody reads a configuration text posted to the settings API.
func readConfigBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	src, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxConfigBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a configuration may be at most %d bytes", maxConfigBody))
			return nil, false
		}
		httpx.WriteError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return nil, false
	}
	return src, true
}

// Sessions are a Server's panel logins, to hand to the Server that
// replaces it when the configuration is applied (Options.Sessions).
type Sessions struct{ st *sessionStore }

// Sessions returns the logins of s.
func (s *Server) Sessions() Sessions { return Sessions{s.gate.sessions} }

// maxConfigBody is the loader's own bound on a configuration file (1 MiB).
const maxConfigBody = 1 << 20

// controlOnly passes requests with the control token; a read token gets 403.
func (s *Server) controlOnly(w http.ResponseWriter, r *http.Request) bool {
	role, ok := s.restGuard(w, r)
	if !ok {
		return false
	}
	if role != roleControl {
		httpx.WriteError(w, http.StatusForbidden, "settings need the control token; this session has the read token")
		return false
	}
	return true
}

// serveLogs serves the records the ring holds: JSON {"records":[…]}, or
// with ?format=text one line per record as a file to download.
func (s *Server) serveLogs(w http.ResponseWriter, r *http.Request, ring *logring.Ring) {
	if _, ok := s.restGuard(w, r); !ok {
		return
	}
	recs := ring.Since(0, nil)
	if r.URL.Query().Get("format") == "text" {
		var b strings.Builder
		for _, rec := range recs {
			b.WriteString(rec.Text())
			b.WriteByte('\n')
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Disposition", `attachment; filename="pibridge-`+time.Now().UTC().Format("20060102-150405")+`.log"`)
		io.WriteString(w, b.String())
		return
	}
	if recs == nil {
		recs = []logring.Record{}
	}
	b, _ := json.Marshal(struct {
		Records []logring.Record `json:"records"`
	}{recs})
	httpx.WriteJSON(w, http.StatusOK, b)
}

// serveLogStream sends the ring's records as Server-Sent Events, one
// "log" event each with the record's seq as its id, then every new one as
// it comes. A browser that reconnects sends Last-Event-ID and gets only
// what it missed.
func (s *Server) serveLogStream(w http.ResponseWriter, r *http.Request, ring *logring.Ring) {
	if _, ok := s.restGuard(w, r); !ok {
		return
	}
	if logStreams.Add(1) > maxLogStreams {
		logStreams.Add(-1)
		w.Header().Set("Retry-After", "10")
		httpx.WriteError(w, http.StatusServiceUnavailable, "too many log streams open")
		return
	}
	defer logStreams.Add(-1)
	var seen uint64
	// Event ids are "<epoch>.<seq>": after a restart of the bridge the
	// browser's Last-Event-ID names another ring, and it gets all of this one.
	if epoch, seq, ok := strings.Cut(r.Header.Get("Last-Event-ID"), "."); ok && epoch == ring.Epoch() {
		seen, _ = strconv.ParseUint(seq, 10, 64)
	}
	wake, stop := ring.Watch()
	defer stop()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	heartbeat := time.NewTicker(logHeartbeat)
	defer heartbeat.Stop()
	var recs []logring.Record
	var buf []byte
	for {
		recs = ring.Since(seen, recs[:0])
		buf = buf[:0]
		if len(recs) == 0 {
			buf = append(buf, ": ok\n\n"...) // also flushes the headers at once
		}
		for _, rec := range recs {
			j, _ := json.Marshal(rec)
			buf = append(append(append(buf, "event: log\nid: "...), ring.Epoch()...), '.')
			buf = strconv.AppendUint(buf, rec.Seq, 10)
			buf = append(append(append(buf, "\ndata: "...), j...), "\n\n"...)
			seen = rec.Seq
		}
		rc.SetWriteDeadline(time.Now().Add(logWriteTimeout))
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-wake:
		case <-heartbeat.C:
		case <-r.Context().Done():
			return
		case <-s.stopped:
			return
		}
	}
}

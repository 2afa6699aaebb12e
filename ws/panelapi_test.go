package ws

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"pibridge"
	"pibridge/internal/logring"
)

const (
	panelControl = "control-token-0123456789"
	panelRead    = "read-token-0123456789abc"
)

type panelHarness struct {
	srv  *Server
	url  string
	ring *logring.Ring
	log  *slog.Logger
	stop func()
}

// newPanelHarness runs a Server with both tokens and every PanelAPI
// route, the validator echoing its input's length.
func newPanelHarness(t *testing.T) *panelHarness {
	t.Helper()
	core, err := pibridge.New(pibridge.Options{Device: pibridge.Device{ID: "test", Name: "Test", Version: "0.0.1"}, Signals: testSignals, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	cfg := Defaults()
	cfg.Token, cfg.ReadToken = panelControl, panelRead
	srv, err := New(Options{Core: core, Config: cfg, Hostname: "testpi"})
	if err != nil {
		t.Fatal(err)
	}
	ring := logring.New(0, 0)
	mux := http.NewServeMux()
	srv.Routes(mux)
	srv.PanelRoutes(mux, PanelAPI{
		Logs:   ring,
		Device: func() any { return map[string]int{"uptime_s": 7} },
		Config: func() ConfigText { return ConfigText{Path: "/etc/pibridge/config.yaml", Text: "device: {id: x}\n"} },
		Validate: func(src []byte) ConfigReport {
			return ConfigReport{Problems: []ConfigProblem{{Line: 1, Msg: strings.Repeat("x", len(src))}}}
		},
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.running
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return &panelHarness{srv: srv, url: ts.URL, ring: ring, log: slog.New(ring.Handler(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))), stop: stop}
}

func TestPanelAPIAccess(t *testing.T) {
	h := newPanelHarness(t)
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/logs", "", http.StatusUnauthorized},
		{"GET", "/api/logs", panelRead, http.StatusOK},
		{"GET", "/api/logs?format=text", panelRead, http.StatusOK},
		{"GET", "/api/device", "", http.StatusUnauthorized},
		{"GET", "/api/device", panelRead, http.StatusOK},
		{"GET", "/api/device", panelControl, http.StatusOK},
		{"GET", "/api/config", panelRead, http.StatusForbidden},
		{"GET", "/api/config", panelControl, http.StatusOK},
		{"POST", "/api/config/validate", panelRead, http.StatusForbidden},
		{"POST", "/api/config/validate", panelControl, http.StatusOK},
		{"POST", "/api/config/validate", "wrong-token-0123456789", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(c.method, h.url+c.path, strings.NewReader("abc"))
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if got := do(t, req); got.status != c.want {
			t.Errorf("%s %s with %q: %d %s, want %d", c.method, c.path, c.token, got.status, got.body, c.want)
		}
	}
	req, _ := http.NewRequest("POST", h.url+"/api/config/validate", strings.NewReader("abcd"))
	req.Header.Set("Authorization", "Bearer "+panelControl)
	var rep ConfigReport
	if err := json.Unmarshal([]byte(do(t, req).body), &rep); err != nil || len(rep.Problems) != 1 || rep.Problems[0].Msg != "xxxx" || rep.Signals == nil {
		t.Errorf("validate answered %+v (%v)", rep, err)
	}
	big, _ := http.NewRequest("POST", h.url+"/api/config/validate", strings.NewReader(strings.Repeat("#", maxConfigBody+1)))
	big.Header.Set("Authorization", "Bearer "+panelControl)
	if got := do(t, big); got.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a 1 MiB + 1 body: %d", got.status)
	}
	hello := h.srv.appendHello(nil, nil, false)
	if !strings.Contains(string(hello), `"pages":["logs","device","settings"]`) {
		t.Errorf("hello does not list the pages: %s", hello)
	}
}

// readEvents reads SSE "log" events until n arrived.
func readEvents(t *testing.T, sc *bufio.Scanner, n int) (ids []string, recs []logring.Record) {
	t.Helper()
	for len(recs) < n && sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			ids = append(ids, id)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var r logring.Record
			if err := json.Unmarshal([]byte(data), &r); err != nil {
				t.Fatalf("data %q: %v", data, err)
			}
			recs = append(recs, r)
		}
	}
	if len(recs) < n {
		t.Fatalf("stream ended after %d of %d records: %v", len(recs), n, sc.Err())
	}
	return ids, recs
}

func openStream(t *testing.T, h *panelHarness, lastID string) (*http.Response, *bufio.Scanner) {
	t.Helper()
	req, _ := http.NewRequest("GET", h.url+"/api/logs/stream", nil)
	req.Header.Set("Authorization", "Bearer "+panelRead)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp, bufio.NewScanner(resp.Body)
}

func TestLogStream(t *testing.T) {
	h := newPanelHarness(t)
	h.log.Info("one", "part", "gpio")
	h.log.Warn("two", "part", "mqtt")
	_, sc := openStream(t, h, "")
	ids, recs := readEvents(t, sc, 2)
	if recs[0].Msg != "one" || recs[1].Part != "mqtt" || recs[1].Level != "WARN" {
		t.Fatalf("replayed %+v", recs)
	}
	h.log.Info("three")
	_, live := readEvents(t, sc, 1)
	if live[0].Msg != "three" || live[0].Seq != 3 {
		t.Errorf("live record %+v", live[0])
	}

	// Resuming after the first record: only what came after it.
	_, sc2 := openStream(t, h, ids[0])
	_, again := readEvents(t, sc2, 2)
	if again[0].Msg != "two" || again[1].Msg != "three" {
		t.Errorf("resumed with %+v", again)
	}
	// An id from another run's ring: everything.
	_, sc3 := openStream(t, h, "otherepoch.2")
	_, all := readEvents(t, sc3, 3)
	if all[0].Msg != "one" {
		t.Errorf("another ring's id resumed at %+v", all[0])
	}

	// The streams end when the server stops.
	h.stop()
	ended := make(chan struct{})
	go func() {
		for sc.Scan() {
		}
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the log stream is still open after the server stopped")
	}
}

func TestLogStreamsBounded(t *testing.T) {
	h := newPanelHarness(t)
	for range maxLogStreams {
		openStream(t, h, "")
	}
	req, _ := http.NewRequest("GET", h.url+"/api/logs/stream", nil)
	req.Header.Set("Authorization", "Bearer "+panelRead)
	if got := do(t, req); got.status != http.StatusServiceUnavailable {
		t.Errorf("stream %d: %d, want 503", maxLogStreams+1, got.status)
	}
}

package ws

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pibridge"
)

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func TestRESTState(t *testing.T) {
	h := newHarness(t, setup{})
	h.emitSync("fan", pibridge.Number(0.75))
	req, _ := http.NewRequest("GET", h.ts.URL+"/api/state", nil)
	resp := do(t, req)
	if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s %s", resp.status, resp.header, resp.body)
	}
	var got struct {
		Device  pibridge.Device
		Signals []map[string]any
		Clock   struct{ Synced bool }
		Run     pibridge.RunInfo
		State   map[string]struct {
			Value float64
			TS    string
			Seq   uint64
		}
	}
	dec := json.NewDecoder(strings.NewReader(resp.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%s: %v", resp.body, err)
	}
	if got.Device.ID != "test" || len(got.Signals) != len(testSignals) || len(got.State) != 1 || got.State["fan"].Value != 0.75 ||
		got.Run != (pibridge.RunInfo{FirstSeq: 1, Clean: true}) {
		t.Errorf("state %s", resp.body)
	}
	// The same shapes as hello: compare byte for byte.
	c := h.dial(dialOpt{})
	hello := strings.TrimPrefix(c.hello.raw, `{"type":"hello","protocol":1,`)
	if hello != strings.TrimPrefix(resp.body, "{") {
		t.Errorf("hello and /api/state differ:\n%s\n%s", c.hello.raw, resp.body)
	}
}

func TestRESTSignal(t *testing.T) {
	h := newHarness(t, setup{})
	for _, tc := range []struct {
		name, body string
		want       int
		contains   string
	}{
		{"led", "on", 200, `"value":true`},
		{"led", "toggle", 200, `"value":false`},
		{"led", ` {"value":true,"id":"x1"} `, 200, `"value":true`},
		{"fan", "0.25", 200, `"value":0.25`},
		{"fan", `{"value":0.5}`, 200, `"value":0.5`},
		{"led", "maybe", 400, `led: bad value`},
		{"led", `{"value":true,"extra":1}`, 400, `bad value`},
		{"led", `{"id":"x"}`, 400, `"value\" is missing`},
		{"fan", "1.5", 400, `fan: bad value 1.5`},
		{"led", "", 400, `bad value`},
		{"nosuch", "on", 404, `nosuch: no such signal`},
		{"air.temperature", "1", 409, `not writable: it is a sensor`},
		{"door", "on", 409, `not writable: it is an input`},
		{"door", "garbage", 409, `not writable`},
		{"locked", "on", 409, `locked: conflict`},
		{"stuck", "on", 504, `deadline exceeded`},
		{"led", strings.Repeat(" ", maxMessageSize+1), 413, `larger than 64 KiB`},
	} {
		req, _ := http.NewRequest("POST", h.ts.URL+"/api/signals/"+tc.name, strings.NewReader(tc.body))
		resp := do(t, req)
		if resp.status != tc.want || !strings.Contains(resp.body, tc.contains) {
			t.Errorf("POST %s %.40q: %d %s, want %d containing %s", tc.name, tc.body, resp.status, resp.body, tc.want, tc.contains)
		}
		if tc.want != 200 && !strings.HasPrefix(resp.body, `{"error":`) {
			t.Errorf("POST %s: error body %s is not {\"error\":…}", tc.name, resp.body)
		}
		if tc.want == 200 {
			var r struct {
				Seq uint64
				TS  string
			}
			if err := json.Unmarshal([]byte(resp.body), &r); err != nil || r.Seq == 0 || r.TS == "" {
				t.Errorf("POST %s: reading %s", tc.name, resp.body)
			}
		}
	}
	// The mux's method patterns answer wrong methods.
	req, _ := http.NewRequest("GET", h.ts.URL+"/api/signals/led", nil)
	if got := do(t, req).status; got != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/signals/led: %d, want 405", got)
	}
}

func TestRESTHandlersCheckMethodsWithoutPatterns(t *testing.T) {
	h := newHarness(t, setup{})
	mux := http.NewServeMux()
	mux.HandleFunc("/api/signals/", h.srv.ServeSignal)
	mux.HandleFunc("/api/state", h.srv.ServeState)
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/api/signals/led", "on", 200},
		{"GET", "/api/signals/led", "", 405},
		{"POST", "/api/state", "", 405},
	} {
		req, _ := http.NewRequest(tc.method, "http://127.0.0.1"+tc.path, strings.NewReader(tc.body))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, rec.Code, rec.Body.String(), tc.want)
		}
	}
}

func TestRESTHistory(t *testing.T) {
	h := newHarness(t, setup{})
	now := time.Now()
	h.core.Emit("air.humidity", pibridge.Number(40), now.Add(-90*time.Second))
	h.core.Emit("air.humidity", pibridge.Number(41.5), now.Add(-30*time.Second))
	for _, tc := range []struct {
		query    string
		want     int
		contains string
	}{
		{"name=air.humidity", 200, `{"name":"air.humidity","points":[[`},
		{"name=air.humidity&since=1m", 200, `,41.5]]}`},
		{"name=led", 200, `{"name":"led","points":[]}`},
		{"", 400, "name is missing"},
		{"name=air.humidity&since=soon", 400, "since"},
		{"name=air.humidity&since=-1m", 400, "must be above 0"},
		{"name=nosuch", 404, "no such signal"},
	} {
		req, _ := http.NewRequest("GET", h.ts.URL+"/api/history?"+tc.query, nil)
		resp := do(t, req)
		if resp.status != tc.want || !strings.Contains(resp.body, tc.contains) {
			t.Errorf("history?%s: %d %s, want %d containing %s", tc.query, resp.status, resp.body, tc.want, tc.contains)
		}
	}
	req, _ := http.NewRequest("GET", h.ts.URL+"/api/history?name=air.humidity", nil)
	var got struct {
		Points [][2]float64
	}
	if err := json.Unmarshal([]byte(do(t, req).body), &got); err != nil || len(got.Points) != 2 || got.Points[1][1] != 41.5 {
		t.Errorf("points %v (%v)", got.Points, err)
	}
}

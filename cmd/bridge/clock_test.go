package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// TestClockStateEverywhere: whether the board's clock is synchronised is
// said in /healthz ("clock"), in the WebSocket hello and in the retained
// meta ("clock":{"synced":…}), all as the kernel says it.
func TestClockStateEverywhere(t *testing.T) {
	b := startDemo(t)
	cs := b.core.ClockState()
	want := cs.String()

	resp, err := http.Get("http://" + b.http + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h healthReport
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if h.Clock != want || h.Status != "ok" {
		t.Errorf("/healthz clock %q status %q, want %q and ok whatever the clock", h.Clock, h.Status, want)
	}

	type clockField struct {
		Clock *struct {
			Synced bool `json:"synced"`
		} `json:"clock"`
	}
	ws := dialWS(t, b.http)
	raw, _ := json.Marshal(ws.hello["clock"])
	var hello clockField
	if err := json.Unmarshal([]byte(`{"clock":`+string(raw)+`}`), &hello); err != nil || hello.Clock == nil || hello.Clock.Synced != cs.Synced {
		t.Errorf("hello clock %s, want synced %v", raw, cs.Synced)
	}

	w := watchMQTT(t, b.mqtt, "pibridge/demo/meta")
	eventually(t, 5*time.Second, "meta with the clock state", func() bool {
		return w.find(func(_ string, payload []byte, _ bool) bool {
			var m clockField
			return json.Unmarshal(payload, &m) == nil && m.Clock != nil && m.Clock.Synced == cs.Synced
		})
	})
}

package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

func TestHelloListsSignalsAndState(t *testing.T) {
	h := newHarness(t, setup{})
	h.emitSync("led", pibridge.Bool(true))
	h.emitSync("air.temperature", pibridge.Number(21.5))
	c := h.dial(dialOpt{})

	hello := c.hello
	if hello.Protocol != 1 {
		t.Errorf("protocol = %d, want 1", hello.Protocol)
	}
	if want := map[string]string{"id": "test", "name": `Test "bench"`, "version": "0.0.1"}; fmt.Sprint(hello.Device) != fmt.Sprint(want) {
		t.Errorf("device = %v, want %v", hello.Device, want)
	}
	if len(hello.Signals) != len(testSignals) {
		t.Fatalf("%d signals, want %d: %s", len(hello.Signals), len(testSignals), hello)
	}
	byName := map[string]map[string]any{}
	for _, s := range hello.Signals {
		byName[s["name"].(string)] = s
	}
	for name, want := range map[string]string{
		"led":             `map[kind:output name:led writable:true]`,
		"fan":             `map[kind:pwm max:1 min:0 name:fan writable:true]`,
		"door":            `map[kind:input name:door writable:false]`,
		"air.temperature": `map[kind:sensor name:air.temperature unit:°C writable:false]`,
	} {
		if got := fmt.Sprint(byName[name]); got != want {
			t.Errorf("signal %s = %s, want %s", name, got, want)
		}
	}
	if len(hello.State) != 2 {
		t.Fatalf("state has %d entries, want led and air.temperature: %s", len(hello.State), hello)
	}
	var temp struct {
		Value float64 `json:"value"`
		Unit  string  `json:"unit"`
		TS    string  `json:"ts"`
		Seq   uint64  `json:"seq"`
	}
	if err := json.Unmarshal(hello.State["air.temperature"], &temp); err != nil {
		t.Fatal(err)
	}
	if temp.Value != 21.5 || temp.Unit != "°C" || temp.Seq == 0 {
		t.Errorf("air.temperature state = %+v", temp)
	}
	if _, err := time.Parse(pibridge.TimeFormat, temp.TS); err != nil {
		t.Errorf("ts %q: %v", temp.TS, err)
	}
}

// maxSeq returns the newest seq in a hello's state.
func maxSeq(t *testing.T, hello frame) uint64 {
	var m uint64
	for _, raw := range hello.State {
		var r struct{ Seq uint64 }
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		m = max(m, r.Seq)
	}
	return m
}

func TestHelloAndReadingsJoinWithoutGap(t *testing.T) {
	h := newHarness(t, setup{})
	h.emitSync("led", pibridge.Bool(true))
	h.emitSync("fan", pibridge.Number(0.5))
	c := h.dial(dialOpt{})
	last := maxSeq(t, c.hello)
	seq := h.emit("air.humidity", pibridge.Number(40))
	if seq != last+1 {
		t.Fatalf("emitted seq %d, hello's newest %d: the test expects no emits in between", seq, last)
	}
	if f := c.next(); f.Type != "reading" || f.Seq != last+1 || f.Name != "air.humidity" {
		t.Fatalf("first frame after hello = %s, want the reading with seq %d", f, last+1)
	}

	// Clients joining while readings stream: the first reading each one
	// gets follows its hello's state, and seq only grows.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h.core.Emit("air.temperature", pibridge.Number(float64(i)), time.Time{})
		}
	}()
	for range 10 {
		c := h.dial(dialOpt{})
		prev := maxSeq(t, c.hello)
		for range 20 {
			f := c.next()
			if f.Seq <= prev {
				t.Fatalf("reading seq %d after %d (hello's newest was %d)", f.Seq, prev, maxSeq(t, c.hello))
			}
			prev = f.Seq
		}
		c.conn.Close()
	}
	close(stop)
	wg.Wait()
}

func TestReadingsArriveInSeqOrder(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	names := []string{"air.temperature", "air.humidity", "fan", "led"}
	var last uint64
	for i := range 1000 {
		n := names[i%len(names)]
		v := pibridge.Number(float64(i % 2))
		if n == "led" {
			v = pibridge.Bool(i%8 == 3)
		}
		last = h.emit(n, v)
	}
	var prev uint64
	for prev < last {
		f := c.next()
		if f.Type != "reading" {
			t.Fatalf("unexpected %s", f)
		}
		if f.Seq <= prev {
			t.Fatalf("seq %d after %d", f.Seq, prev)
		}
		prev = f.Seq
	}
}

func TestSetAcksAfterTheEcho(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	for _, tc := range []struct {
		msg, name string
		value     any
	}{
		{`{"type":"set","id":"c1","name":"led","value":true}`, "led", true},
		{`{"type":"set","id":"c2","name":"led","value":"toggle"}`, "led", false},
		{`{"type":"set","id":"c3","name":"led","value":"on"}`, "led", true},
		{`{"type":"set","id":"c4","name":"led","value":0}`, "led", false},
		{`{"type":"set","id":"c5","name":"fan","value":0.25}`, "fan", 0.25},
	} {
		c.send(tc.msg)
		var echo *frame
		for {
			f := c.next()
			if f.Type == "reading" {
				if f.Name == tc.name {
					echo = &f
				}
				continue
			}
			var want struct{ ID string }
			json.Unmarshal([]byte(tc.msg), &want)
			if f.Type != "ack" || f.id() != want.ID || f.OK == nil || !*f.OK || f.Name != tc.name {
				t.Fatalf("%s: reply %s, want an ok ack", tc.msg, f)
			}
			break
		}
		if echo == nil {
			t.Fatalf("%s: the ack came before the echo reading", tc.msg)
		}
		if echo.Value != tc.value {
			t.Errorf("%s: echo %s, want value %v", tc.msg, echo, tc.value)
		}
	}
	// Without an id, success is confirmed by the echo alone.
	if got := c.exchange(`{"type":"set","name":"relay","value":true}`); len(got) != 0 {
		t.Errorf("set without id: replies %v, want none", got)
	}
}

func TestPulse(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	c.send(`{"type":"pulse","id":"p1","name":"relay","for":"500ms"}`)
	var values []any
	for {
		f := c.next()
		if f.Type == "reading" && f.Name == "relay" {
			values = append(values, f.Value)
			continue
		}
		if f.Type != "ack" || f.id() != "p1" || f.OK == nil || !*f.OK {
			t.Fatalf("reply %s, want an ok ack for p1", f)
		}
		break
	}
	// The relay readings may be coalesced, but the last must be off.
	if len(values) == 0 || values[len(values)-1] != false {
		t.Errorf("relay readings before the ack: %v, want ending in false", values)
	}

	// Without "for" the output's own length (relay's is 2s).
	for _, f := range c.exchange(`{"type":"pulse","id":"p2","name":"relay"}`) {
		if f.Type == "ack" && (f.id() != "p2" || f.OK == nil || !*f.OK) {
			t.Fatalf("reply %s, want an ok ack for p2", f)
		}
	}
	if calls := h.act.Calls(); len(calls) != 2 || calls[0] != "pulse relay 500ms" || calls[1] != "pulse relay 2s" {
		t.Errorf("actuator calls %q, want pulse relay 500ms then 2s", calls)
	}
}

func TestHistoryReply(t *testing.T) {
	h := newHarness(t, setup{})
	now := time.Now()
	for i, v := range []float64{20, 20.5, 21} {
		h.core.Emit("air.temperature", pibridge.Number(v), now.Add(time.Duration(i-3)*time.Second))
	}
	c := h.dial(dialOpt{})
	for _, msg := range []string{
		`{"type":"history","id":"h1","name":"air.temperature","since":"10m"}`,
		`{"type":"history","id":"h2","name":"air.temperature"}`,
	} {
		got := c.exchange(msg)
		if len(got) != 1 || got[0].Type != "history" || got[0].Name != "air.temperature" {
			t.Fatalf("%s: replies %v, want one history", msg, got)
		}
		pts := got[0].Points
		if len(pts) != 3 || pts[0][1] != 20 || pts[2][1] != 21 {
			t.Fatalf("points %v", pts)
		}
		if want := float64(now.Add(-3 * time.Second).UnixMilli()); pts[0][0] != want {
			t.Errorf("first point at %v, want %v", pts[0][0], want)
		}
	}
	if got := c.exchange(`{"type":"history","id":"h3","name":"air.temperature","since":"1ms"}`); len(got) != 1 || len(got[0].Points) != 0 || !strings.Contains(got[0].raw, `"points":[]`) {
		t.Errorf("since 1ms: %v, want an empty points list", got)
	}
}

// TestErrorPaths: every message gets exactly one reply with its id, and
// the connection stays open (exchange's sentinel proves it).
func TestErrorPaths(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	for _, tc := range []struct {
		name, msg string
		typ, id   string // expected reply
		contains  string
	}{
		{"unknown signal", `{"type":"set","id":"e1","name":"nosuch","value":true}`, "ack", "e1", "nosuch: no such signal"},
		{"sensor write", `{"type":"set","id":"e2","name":"air.temperature","value":1}`, "ack", "e2", "air.temperature: not writable: it is a sensor"},
		{"input write", `{"type":"set","id":"e3","name":"door","value":true}`, "ack", "e3", "door: not writable: it is an input"},
		{"bad value", `{"type":"set","id":"e4","name":"led","value":"maybe"}`, "ack", "e4", `led: bad value "maybe"`},
		{"bad value type", `{"type":"set","id":"e4b","name":"led","value":{"x":1}}`, "ack", "e4b", "led: bad value"},
		{"pwm out of range", `{"type":"set","id":"e5","name":"fan","value":2}`, "ack", "e5", "fan: bad value 2"},
		{"bad value, unknown signal", `{"type":"set","id":"e6","name":"nosuch","value":"maybe"}`, "ack", "e6", "nosuch: no such signal"},
		{"bad value, sensor", `{"type":"set","id":"e6b","name":"air.humidity","value":"maybe"}`, "ack", "e6b", "not writable"},
		{"conflict", `{"type":"set","id":"e7","name":"locked","value":true}`, "ack", "e7", "locked: conflict: interlocked"},
		{"actuator timeout", `{"type":"set","id":"e8","name":"stuck","value":true}`, "ack", "e8", "stuck: context deadline exceeded"},
		{"failing command without id", `{"type":"set","name":"nosuch","value":true}`, "ack", "", "no such signal"},
		{"pulse a pwm", `{"type":"pulse","id":"e9","name":"fan","for":"1s"}`, "ack", "e9", "only outputs can be pulsed"},
		{"pulse too long", `{"type":"pulse","id":"e10","name":"relay","for":"2h"}`, "ack", "e10", "relay: bad value"},
		{"pulse bad length", `{"type":"pulse","id":"e11","name":"relay","for":"soon"}`, "ack", "e11", "relay: bad value"},
		{"pulse without for, no default", `{"type":"pulse","id":"e12","name":"led"}`, "ack", "e12", "led: bad value: pulse length is missing"},
		{"pulse for a number", `{"type":"pulse","id":"e13","name":"relay","for":500}`, "error", "e13", "for must be a string"},
		{"malformed JSON", `{"type":"set",`, "error", "", "malformed JSON"},
		{"not an object", `[1,2]`, "error", "", "malformed JSON"},
		{"empty", ``, "error", "", "malformed JSON"},
		{"unknown type", `{"type":"frobnicate","id":"u1"}`, "error", "u1", `unknown type "frobnicate"`},
		{"missing type", `{"id":"t1","name":"led"}`, "error", "t1", "type is missing"},
		{"type not a string", `{"id":"t2","type":7}`, "error", "t2", "type must be a string"},
		{"id not a string", `{"id":7,"type":"set"}`, "error", "", "id must be a string"},
		{"missing name", `{"type":"set","id":"n1","value":true}`, "error", "n1", "set: name is missing"},
		{"name not a string", `{"type":"set","id":"n2","name":5,"value":true}`, "error", "n2", "set: name must be a string"},
		{"missing value", `{"type":"set","id":"n3","name":"led"}`, "error", "n3", "set: value is missing"},
		{"null value", `{"type":"set","id":"n4","name":"led","value":null}`, "error", "n4", "set: value is missing"},
		{"history unknown signal", `{"type":"history","id":"h9","name":"nosuch"}`, "error", "h9", "nosuch: no such signal"},
		{"history bad since", `{"type":"history","id":"h10","name":"led","since":"yesterday"}`, "error", "h10", "history: since"},
		{"history since too long", `{"type":"history","id":"h11","name":"led","since":"48h"}`, "error", "h11", "at most 24h"},
		{"history without name", `{"type":"history","id":"h12"}`, "error", "h12", "history: name is missing"},
		{"subscribe", `{"type":"subscribe","id":"s1","topics":["home/+/temp"]}`, "error", "s1", "not enabled: mqtt.bridge_allow is empty"},
		{"unsubscribe", `{"type":"unsubscribe","id":"s2","topics":["home/+/temp"]}`, "error", "s2", "not enabled: mqtt.bridge_allow is empty"},
		{"publish", `{"type":"publish","id":"p1","topic":"home/lamp/set","payload":"on"}`, "error", "p1", "not enabled: mqtt.bridge_allow is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			got := c.exchange(tc.msg)
			if len(got) != 1 {
				t.Fatalf("%s: %d replies %v, want exactly one", tc.msg, len(got), got)
			}
			f := got[0]
			if f.Type != tc.typ || f.id() != tc.id || !strings.Contains(f.Error, tc.contains) {
				t.Fatalf("%s: reply %s, want a %s with id %q containing %q", tc.msg, f, tc.typ, tc.id, tc.contains)
			}
			if tc.id == "" && f.ID != nil {
				t.Errorf("reply %s carries an id the message did not", f)
			}
			if f.Type == "ack" && (f.OK == nil || *f.OK) {
				t.Errorf("reply %s: want ok:false", f)
			}
		})
	}
	c.t = t

	// Binary frames are refused the same way.
	c.conn.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"set"}`))
	if got := c.exchange(`{"type":"history","id":"x","name":"led"}`); len(got) != 2 || got[0].Type != "error" || !strings.Contains(got[0].Error, "binary") {
		t.Errorf("binary frame: replies %v", got)
	}
}

func TestFrameSizeLimit(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	// Exactly the limit is fine…
	msg := `{"type":"history","id":"big","name":"led"}`
	msg += strings.Repeat(" ", maxMessageSize-len(msg))
	if got := c.exchange(msg); len(got) != 1 || got[0].id() != "big" {
		t.Fatalf("a %d-byte frame: replies %v", len(msg), got)
	}
	// …one byte more closes the connection with 1009.
	c.send(msg + " ")
	if code := c.closeCode(5 * time.Second); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	waitFor(t, "the server to drop the client", func() bool { return h.srv.Clients() == 0 })
}

// smallSendBuffer makes the server's sockets' send buffers small, so a
// client that stops reading fills them within a few writes, however
// seldom the scheduler runs its writer. It must be the server's tuning:
// a listener's setting is overridden when the client is set up.
func smallSendBuffer(t *tuning) { t.sendBuffer = 4096 }

// readsLittle dials with a small receive buffer, for a client that stops
// reading: little is in flight when the server gives up on it, so it
// sees the end of the connection as soon as it reads again.
var readsLittle = &websocket.Dialer{
	HandshakeTimeout: 5 * time.Second,
	NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	},
}

func TestSlowClientIsClosedOthersKeepReceiving(t *testing.T) {
	h := newHarness(t, setup{
		tune: func(t *tuning) { smallSendBuffer(t); t.writeWait = 300 * time.Millisecond },
	})
	slow := h.dial(dialOpt{dialer: readsLittle})
	fast := h.dial(dialOpt{})
	// The fast client reads everything, in its own goroutine.
	var fastSeq atomic.Uint64
	go func() {
		for {
			f, err := fast.read(20 * time.Second)
			if err != nil {
				return
			}
			fastSeq.Store(f.Seq)
		}
	}()
	// The slow client never reads again. Stream readings until the server
	// gives up on it.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; h.srv.SlowClosed() == 0; i++ {
		h.core.Emit("air.temperature", pibridge.Number(float64(i)), time.Time{})
		h.core.Emit("air.humidity", pibridge.Number(float64(i)), time.Time{})
		if time.Now().After(deadline) {
			t.Fatal("the slow client was never closed")
		}
	}
	if n := h.srv.SlowClosed(); n != 1 {
		t.Fatalf("SlowClosed = %d, want 1", n)
	}
	// The fast client still gets new readings.
	seq := h.emit("led", pibridge.Bool(true))
	waitFor(t, "the fast client to get the newest reading", func() bool { return fastSeq.Load() == seq })
	// The slow one finds its connection closed once it reads what is buffered.
	// A socket too full for a close frame is dropped: the client sees 1006.
	if code := slow.closeCode(10 * time.Second); code != websocket.CloseAbnormalClosure && code != websocket.ClosePolicyViolation {
		t.Fatalf("slow client closed with %d, want 1008 or a dropped connection (1006)", code)
	}
	waitFor(t, "one client left", func() bool { return h.srv.Clients() == 1 })
}

func TestReplyOverflowClosesWith1008(t *testing.T) {
	var g gate
	h := newHarness(t, setup{tune: func(t *tuning) {
		t.maxReplies = 4
		t.writeWait = 200 * time.Millisecond
		t.beforeTake = g.wait
	}})
	g.shut()
	defer g.open()
	c := h.dial(dialOpt{})
	// The writer is held: four replies fit, the reader waits with the
	// fifth, and gives up on the client after writeWait.
	for i := range 5 {
		c.send(fmt.Sprintf(`{"type":"nope","id":"%d"}`, i))
	}
	waitFor(t, "the overflow", func() bool { return h.srv.SlowClosed() == 1 })
	g.open()
	if code := c.closeCode(5 * time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	waitFor(t, "the server to drop the client", func() bool { return h.srv.Clients() == 0 })
}

// A client that sends faster than the server writes is slowed down, not
// closed: its replies wait for room.
func TestBurstIsSlowedNotClosed(t *testing.T) {
	var g gate
	h := newHarness(t, setup{tune: func(t *tuning) {
		t.maxReplies = 4
		t.beforeTake = g.wait
	}})
	g.shut()
	c := h.dial(dialOpt{})
	for i := range 10 {
		c.send(fmt.Sprintf(`{"type":"nope","id":"%d"}`, i))
	}
	// Held until the reader waits for room…
	waitFor(t, "the reader to wait", func() bool {
		mb := h.srv.hub.connected()[0].mb
		mb.mu.Lock()
		defer mb.mu.Unlock()
		return len(mb.replies) == 4
	})
	g.open()
	for i := range 10 {
		if f := c.next(); f.id() != fmt.Sprint(i) {
			t.Fatalf("reply %d: %s", i, f)
		}
	}
	if n := h.srv.SlowClosed(); n != 0 {
		t.Errorf("SlowClosed = %d", n)
	}
}

func TestCoalescingKeepsTheNewestPerSignal(t *testing.T) {
	var g gate
	h := newHarness(t, setup{tune: func(t *tuning) { t.beforeTake = g.wait }})
	g.shut()
	c := h.dial(dialOpt{})
	var want = map[string]uint64{}
	for i := range 100 {
		want["air.temperature"] = h.emit("air.temperature", pibridge.Number(float64(i)))
		want["air.humidity"] = h.emit("air.humidity", pibridge.Number(float64(100+i)))
		if i%10 == 0 {
			want["led"] = h.emit("led", pibridge.Bool(i%20 == 0))
		}
	}
	waitFor(t, "the hub to queue every reading", func() bool { return h.srv.hub.lastSeq.Load() >= maxOf(want) })
	g.open()
	var prev uint64
	for range want {
		f := c.next()
		if f.Type != "reading" || f.Seq != want[f.Name] {
			t.Fatalf("got %s, want only the newest reading of each signal (%v)", f, want)
		}
		if f.Seq <= prev {
			t.Fatalf("seq %d after %d", f.Seq, prev)
		}
		prev = f.Seq
	}
	marker := h.emit("fan", pibridge.Number(1))
	if f := c.next(); f.Seq != marker {
		t.Fatalf("after the newest readings got %s, want the marker seq %d", f, marker)
	}
}

func maxOf(m map[string]uint64) uint64 {
	var x uint64
	for _, v := range m {
		x = max(x, v)
	}
	return x
}

func TestOriginCheck(t *testing.T) {
	h := newHarness(t, setup{config: func(c *Config) {
		c.AllowedOrigins = []string{"https://Panel.example:8443"}
	}})
	host := strings.TrimPrefix(h.ts.URL, "http://")
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"", http.StatusSwitchingProtocols},
		{"http://" + host, http.StatusSwitchingProtocols},
		{"https://panel.example:8443", http.StatusSwitchingProtocols},
		{"http://evil.example", http.StatusForbidden},
		{"https://panel.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
	} {
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		if got := h.dialStatus(hdr); got != tc.want {
			t.Errorf("/ws with Origin %q: %d, want %d", tc.origin, got, tc.want)
		}
	}
	// A cross-site form post is refused too: no token is configured here.
	req, _ := http.NewRequest("POST", h.ts.URL+"/api/signals/led", strings.NewReader("on"))
	req.Header.Set("Origin", "http://evil.example")
	resp := do(t, req)
	if resp.status != http.StatusForbidden {
		t.Errorf("cross-origin POST: %d %s, want 403", resp.status, resp.body)
	}
}

func TestHostCheck(t *testing.T) {
	h := newHarness(t, setup{config: func(c *Config) { c.AllowedHosts = []string{"Bridge.lan"} }})
	for _, tc := range []struct {
		host string
		want int
	}{
		{"attacker.example", http.StatusMisdirectedRequest},
		{"attacker.example:8080", http.StatusMisdirectedRequest},
		{"testpi.evil.example", http.StatusMisdirectedRequest},
		{"", http.StatusMisdirectedRequest},
		{"localhost", http.StatusSwitchingProtocols},
		{"LOCALHOST:8080", http.StatusSwitchingProtocols},
		{"testpi:8080", http.StatusSwitchingProtocols},
		{"testpi.local.", http.StatusSwitchingProtocols},
		{"bridge.lan", http.StatusSwitchingProtocols},
		{"10.0.0.7:8080", http.StatusSwitchingProtocols},
		{"[::1]:8080", http.StatusSwitchingProtocols},
	} {
		if tc.host == "" {
			continue // gorilla's client always sends one; see the REST case below
		}
		if got := h.dialStatus(http.Header{"Host": {tc.host}}); got != tc.want {
			t.Errorf("/ws with Host %q: %d, want %d", tc.host, got, tc.want)
		}
		req, _ := http.NewRequest("GET", h.ts.URL+"/api/state", nil)
		req.Host = tc.host
		wantREST := tc.want
		if wantREST == http.StatusSwitchingProtocols {
			wantREST = http.StatusOK
		}
		if got := do(t, req).status; got != wantREST {
			t.Errorf("/api/state with Host %q: %d, want %d", tc.host, got, wantREST)
		}
	}
	if h.srv.gate.hostAllowed("") {
		t.Error("an empty Host is allowed")
	}
}

func TestMaxClients(t *testing.T) {
	h := newHarness(t, setup{config: func(c *Config) { c.MaxClients = 2 }})
	a := h.dial(dialOpt{})
	h.dial(dialOpt{})
	if got := h.dialStatus(nil); got != http.StatusServiceUnavailable {
		t.Fatalf("third client: %d, want 503", got)
	}
	a.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	a.closeCode(5 * time.Second)
	waitFor(t, "a free slot", func() bool { return h.srv.Clients() == 1 })
	h.dial(dialOpt{})
}

func TestShutdownClosesClientsWith1001(t *testing.T) {
	h := newHarness(t, setup{})
	a, b := h.dial(dialOpt{}), h.dial(dialOpt{})
	codes := make(chan int, 2)
	for _, c := range []*wsClient{a, b} {
		go func() {
			for {
				_, _, err := c.conn.ReadMessage()
				if ce, ok := err.(*websocket.CloseError); ok {
					codes <- ce.Code
					return
				} else if err != nil {
					codes <- -1
					return
				}
			}
		}()
	}
	h.stop()
	for range 2 {
		if code := <-codes; code != websocket.CloseGoingAway {
			t.Errorf("close code %d, want 1001", code)
		}
	}
	if n := h.srv.Clients(); n != 0 {
		t.Errorf("%d clients after Run returned", n)
	}
	if got := h.dialStatus(nil); got != http.StatusServiceUnavailable {
		t.Errorf("dial after shutdown: %d, want 503", got)
	}
}

func TestShutdownForcesClientsThatDoNotAnswer(t *testing.T) {
	h := newHarness(t, setup{tune: func(t *tuning) { t.shutdownGrace = 200 * time.Millisecond; t.closeGrace = 10 * time.Second }})
	h.dial(dialOpt{}) // never reads: never answers the close frame
	start := time.Now()
	h.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %s to return", d)
	}
}

func TestPingsKeepReadersAliveAndDropSilentClients(t *testing.T) {
	h := newHarness(t, setup{tune: func(t *tuning) {
		// A wide margin between ping and pong wait: -race on a busy machine.
		t.pongWait = 600 * time.Millisecond
		t.pingPeriod = 150 * time.Millisecond
	}})
	alive := h.dial(dialOpt{})
	pings := make(chan struct{}, 10)
	alive.conn.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return alive.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	done := make(chan error, 1)
	go func() {
		for {
			if _, _, err := alive.conn.ReadMessage(); err != nil {
				done <- err
				return
			}
		}
	}()
	silent := h.dial(dialOpt{}) // never reads, so never answers pings
	_ = silent
	for range 4 {
		select {
		case <-pings:
		case err := <-done:
			t.Fatalf("reading client dropped: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no ping")
		}
	}
	waitFor(t, "the silent client to be dropped", func() bool { return h.srv.Clients() == 1 })
	select {
	case err := <-done:
		t.Fatalf("reading client dropped: %v", err)
	default:
	}
}

func TestTokenFile(t *testing.T) {
	core, err := pibridge.New(pibridge.Options{Signals: testSignals, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withFile := func(name string) Config { c := Defaults(); c.TokenFile = name; return c }
	good := write("token", "s3cret-from-a-file-123\n")
	s, err := New(Options{Core: core, Config: withFile(good)})
	if err != nil {
		t.Fatal(err)
	}
	if s.gate.checkToken("s3cret-from-a-file-123") != roleControl {
		t.Error("the token from the file is refused")
	}
	for name, content := range map[string]string{"empty": " \n", "spaces": "two words"} {
		if _, err := New(Options{Core: core, Config: withFile(write(name, content))}); err == nil {
			t.Errorf("token file %q accepted", content)
		} else if strings.Contains(err.Error(), "two words") {
			t.Errorf("the error quotes the token: %v", err)
		}
	}
	if _, err := New(Options{Core: core, Config: withFile(dir + "/missing")}); err == nil {
		t.Error("a missing token file is accepted")
	}
}

// TestSlowConsumerFiftyOthers: one client stops reading while 50 others
// take a fast stream. The slow one is dropped and counted; each of the 50
// gets the stream's final reading within the deadline, and none of them
// is dropped.
func TestSlowConsumerFiftyOthers(t *testing.T) {
	const fast = 50
	h := newHarness(t, setup{
		config: func(c *Config) { c.MaxClients = fast + 1 },
		// A write deadline generous enough that 50 reading clients never
		// miss it on a busy machine with -race; the slow one always does.
		tune: func(t *tuning) { smallSendBuffer(t); t.writeWait = 2 * time.Second },
	})
	slow := h.dial(dialOpt{dialer: readsLittle})
	var last [fast]atomic.Uint64 // newest seq each fast client has read
	var readErrs atomic.Int64
	var wg sync.WaitGroup
	for i := range fast {
		c := h.dial(dialOpt{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f, err := c.read(30 * time.Second)
				if err != nil {
					var ce *websocket.CloseError
					if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
						readErrs.Add(1)
					}
					return
				}
				last[i].Store(f.Seq)
			}
		}()
	}
	// The stream: two signals as fast as the core takes them, until the
	// server has given up on the slow client.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; h.srv.SlowClosed() == 0; i++ {
		h.core.Emit("air.temperature", pibridge.Number(float64(i)), time.Time{})
		h.core.Emit("air.humidity", pibridge.Number(float64(i)), time.Time{})
		if time.Now().After(deadline) {
			t.Fatal("the slow client was never dropped")
		}
	}
	final := h.emit("led", pibridge.Bool(true))
	deadline = time.Now().Add(5 * time.Second)
	for i := range fast {
		for last[i].Load() < final {
			if time.Now().After(deadline) {
				t.Fatalf("fast client %d stalled at seq %d, the final reading is %d", i, last[i].Load(), final)
			}
			time.Sleep(time.Millisecond) // polling with a deadline
		}
	}
	if n := h.srv.SlowClosed(); n != 1 {
		t.Errorf("SlowClosed = %d, want exactly the slow one", n)
	}
	if code := slow.closeCode(10 * time.Second); code != websocket.CloseAbnormalClosure && code != websocket.ClosePolicyViolation {
		t.Errorf("slow client ended with %d, want 1008 or a dropped connection (1006)", code)
	}
	waitFor(t, "the slow client to be gone", func() bool { return h.srv.Clients() == fast })
	h.stop()
	wg.Wait()
	if n := readErrs.Load(); n != 0 {
		t.Errorf("%d fast clients lost their connection before shutdown", n)
	}
}

// TestMalformedFlood: 1,000 malformed frames in a row are each answered
// with an error; the connection stays open, a valid set then works, and
// the server serves others as before.
func TestMalformedFlood(t *testing.T) {
	h := newHarness(t, setup{})
	c := h.dial(dialOpt{})
	bad := []string{
		`{"type":"set",`, `not json`, `[]`, `null`, `{"type":7}`, `{"type":"warp"}`,
		`{"id":{"x":1}}`, `{"type":"set","name":"led"}`, `"\ufffd"`, strings.Repeat("[", 5000),
		`{"type":"subscribe","topics":"x"}`, `{"type":"pulse","name":"relay","for":500}`,
	}
	errorsSeen := make(chan int, 1)
	go func() {
		n := 0
		for n < 1000 {
			f, err := c.read(10 * time.Second)
			if err != nil || f.Type != "error" {
				break
			}
			n++
		}
		errorsSeen <- n
	}()
	for i := range 1000 {
		if i%97 == 0 {
			c.conn.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2})
			continue
		}
		c.send(bad[i%len(bad)])
	}
	if n := <-errorsSeen; n != 1000 {
		t.Fatalf("%d error replies, want 1000", n)
	}
	got := c.exchange(`{"type":"set","id":"ok","name":"led","value":true}`)
	if len(got) != 1 || got[0].Type != "ack" || !*got[0].OK {
		t.Fatalf("set after the flood: %v", got)
	}
	if moves := h.act.Calls(); len(moves) != 1 || moves[0] != "set led true" {
		t.Errorf("actuator calls %v, want just the valid set", moves)
	}
	if h.srv.SlowClosed() != 0 || h.srv.Clients() != 1 {
		t.Errorf("SlowClosed %d, Clients %d", h.srv.SlowClosed(), h.srv.Clients())
	}
	other := h.dial(dialOpt{})
	seq := h.emit("fan", pibridge.Number(0.5))
	if f := other.next(); f.Seq != seq {
		t.Errorf("another client got %s, want seq %d", f, seq)
	}
}

func TestCompressionIsOff(t *testing.T) {
	h := newHarness(t, setup{})
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, EnableCompression: true}
	conn, resp, err := d.Dial(h.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Errorf("the server negotiated %q, want no compression", ext)
	}
}

func TestShutdownClosesUnauthenticatedWith1001(t *testing.T) {
	h := tokenHarness(t, nil) // authWait stays 10s
	conn, _, err := h.dialRaw(dialOpt{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Tracked, not just counted in npending: the handshake's response goes
	// out before the server tracks the connection, and one that shutdown
	// overtakes there is dropped like a failed upgrade (1006).
	waitFor(t, "the connection to wait for its auth frame", func() bool {
		h.srv.connMu.Lock()
		defer h.srv.connMu.Unlock()
		for _, waiting := range h.srv.conns {
			return waiting
		}
		return false
	})
	start := time.Now()
	h.stop()
	c := &wsClient{t: t, conn: conn}
	if code := c.closeCode(5 * time.Second); code != websocket.CloseGoingAway {
		t.Errorf("close code %d, want 1001", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s", d)
	}
}

package ws

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func bridgeHarness(t testing.TB, pass *fakePass, su setup) *harness {
	su.options = func(o *Options) {
		o.Passthrough = pass
		o.BridgeAllow = []string{"home/+/temp", "home/lamp/#", "$SYS/broker/#"}
	}
	return newHarness(t, su)
}

// nextMQTT reads until an mqtt frame.
func (c *wsClient) nextMQTT() frame {
	c.t.Helper()
	for {
		if f := c.nextReply(); f.Type == "mqtt" {
			return f
		} else {
			c.t.Fatalf("got %s, want an mqtt message", f)
		}
	}
}

func TestPassthroughSubscribe(t *testing.T) {
	pass := newFakePass()
	pass.retained["home/kitchen/temp"] = "21.5"
	h := bridgeHarness(t, pass, setup{})
	c := h.dial(dialOpt{})
	if !strings.Contains(c.hello.raw, `,"bridge_allow":["home/+/temp","home/lamp/#","$SYS/broker/#"],"clock":`) {
		t.Errorf("the hello does not list bridge_allow: %s", c.hello)
	}
	if !strings.Contains(h.dial(dialOpt{}).hello.raw, "bridge_allow") {
		t.Error("bridge_allow missing from a second hello")
	}

	// The ack comes first, then the retained message the broker had.
	c.send(`{"type":"subscribe","id":"s1","topics":["home/+/temp"]}`)
	if f := c.nextReply(); f.Type != "ack" || f.id() != "s1" || !*f.OK {
		t.Fatalf("reply %s, want an ok ack", f)
	}
	if f := c.nextMQTT(); f.Topic != "home/kitchen/temp" || *f.Payload != "21.5" || !*f.Retained {
		t.Fatalf("got %s, want the retained message", f)
	}
	pass.send("home/garage/temp", `4.0 "cold"`)
	f := c.nextMQTT()
	if f.Topic != "home/garage/temp" || *f.Payload != `4.0 "cold"` || *f.Retained {
		t.Fatalf("got %s", f)
	}
	if want := `{"type":"mqtt","topic":"home/garage/temp","payload":"4.0 \"cold\"","retained":false}`; f.raw != want {
		t.Errorf("wire form %s, want %s", f.raw, want)
	}
	// Never coalesced: every message arrives, in order.
	for i := range 20 {
		pass.send("home/kitchen/temp", fmt.Sprint(i))
	}
	for i := range 20 {
		if f := c.nextMQTT(); *f.Payload != fmt.Sprint(i) {
			t.Fatalf("message %d: %s", i, f)
		}
	}
	// Subscribing again to a filter already held does not double it (nor
	// deliver its retained messages again).
	if got := c.exchange(`{"type":"subscribe","id":"s2","topics":["home/+/temp","home/lamp/#","home/lamp/#"]}`); len(got) != 1 || got[0].Type != "ack" || !*got[0].OK {
		t.Fatalf("second subscribe: %v", got)
	}
	if fs := pass.filters(); fmt.Sprint(fs) != "[home/+/temp home/lamp/#]" {
		t.Errorf("subscriptions at the broker: %v", fs)
	}
	// Unsubscribe stops delivery; a filter not held is no error.
	if got := c.exchange(`{"type":"unsubscribe","id":"u1","topics":["home/+/temp","home/lamp/x"]}`); len(got) != 1 || !*got[0].OK {
		t.Fatalf("unsubscribe: %v", got)
	}
	pass.send("home/kitchen/temp", "gone")
	pass.send("home/lamp/state", "on")
	if f := c.nextMQTT(); f.Topic != "home/lamp/state" {
		t.Fatalf("after unsubscribe got %s", f)
	}
	// Without an id, success is silent.
	if got := c.exchange(`{"type":"subscribe","topics":["home/attic/temp"]}`); len(got) != 0 {
		t.Errorf("subscribe without id: %v", got)
	}
	// The client's subscriptions end with it.
	c.conn.Close()
	waitFor(t, "the subscriptions to be cancelled", func() bool { return len(pass.filters()) == 0 })
}

// asyncPass is a fakePass that also publishes without the caller waiting
// (AsyncPublisher), as mqtt.Client does; hold keeps the answers back until
// release.
type asyncPass struct {
	*fakePass
	mu   sync.Mutex
	hold bool
	held []func()
}

func (p *asyncPass) PublishAsync(topic string, payload []byte, retain bool, done func(error)) {
	answer := func() { done(p.Publish(context.Background(), topic, payload, retain)) }
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold {
		p.held = append(p.held, answer)
		return
	}
	go answer() // the broker answers on another goroutine
}

func (p *asyncPass) heldCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held)
}

func (p *asyncPass) release() {
	p.mu.Lock()
	held := p.held
	p.held, p.hold = nil, false
	p.mu.Unlock()
	for _, f := range held {
		f()
	}
}

func TestPassthroughPublish(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(map[bool]string{false: "waiting", true: "async"}[async], func(t *testing.T) {
			pass := newFakePass()
			var p Passthrough = pass
			if async {
				p = &asyncPass{fakePass: pass}
			}
			testPassthroughPublish(t, pass, p)
		})
	}
}

func testPassthroughPublish(t *testing.T, pass *fakePass, p Passthrough) {
	h := newHarness(t, setup{config: withTokens, tune: noLimit, options: func(o *Options) {
		o.Passthrough = p
		o.BridgeAllow = []string{"home/+/temp", "home/lamp/#", "$SYS/broker/#"}
	}})
	c := h.dial(dialOpt{header: bearer(controlToken)})
	for _, msg := range []string{
		`{"type":"publish","id":"p1","topic":"home/lamp/set","payload":"on","retain":false}`,
		`{"type":"publish","id":"p2","topic":"home/lamp/brightness","payload":"","retain":true}`,
		`{"type":"publish","id":"p3","topic":"home/hall/temp","payload":"19"}`,
	} {
		if got := c.exchange(msg); len(got) != 1 || got[0].Type != "ack" || !*got[0].OK {
			t.Fatalf("%s: %v", msg, got)
		}
	}
	if got := fmt.Sprint(pass.publishes()); got != "[home/lamp/set on false home/lamp/brightness  true home/hall/temp 19 false]" {
		t.Errorf("published %s", got)
	}
	// The read token sees but does not publish; it may subscribe.
	v := h.dial(dialOpt{header: bearer(readToken)})
	if got := v.exchange(`{"type":"publish","id":"r1","topic":"home/lamp/set","payload":"off"}`); len(got) != 1 || !strings.Contains(got[0].Error, "read-only") {
		t.Errorf("read-only publish: %v", got)
	}
	if got := v.exchange(`{"type":"subscribe","id":"r2","topics":["home/lamp/#"]}`); len(got) != 1 || !*got[0].OK {
		t.Errorf("read-only subscribe: %v", got)
	}
	if n := len(pass.publishes()); n != 3 {
		t.Errorf("%d publishes, want 3", n)
	}
	// Broker failures come back as failing acks.
	pass.mu.Lock()
	pass.failPub, pass.failSub = errors.New("broker unreachable"), errors.New("broker unreachable")
	pass.mu.Unlock()
	if got := c.exchange(`{"type":"publish","id":"f1","topic":"home/lamp/set","payload":"on"}`); len(got) != 1 || got[0].Error != `publish "home/lamp/set": broker unreachable` {
		t.Errorf("failing publish: %v", got)
	}
	if got := c.exchange(`{"type":"subscribe","id":"f2","topics":["home/x/temp"]}`); len(got) != 1 || got[0].Error != `subscribe "home/x/temp": broker unreachable` {
		t.Errorf("failing subscribe: %v", got)
	}
}

func TestPassthroughRefusals(t *testing.T) {
	pass := newFakePass()
	h := bridgeHarness(t, pass, setup{})
	c := h.dial(dialOpt{})
	for _, tc := range []struct {
		name, msg, typ, contains string
	}{
		{"widening #", `{"type":"subscribe","id":"1","topics":["home/#"]}`, "ack", `subscribe "home/#": not inside mqtt.bridge_allow`},
		{"widening +", `{"type":"subscribe","id":"2","topics":["+/kitchen/temp"]}`, "ack", "not inside"},
		{"all", `{"type":"subscribe","id":"3","topics":["#"]}`, "ack", "not inside"},
		{"elsewhere", `{"type":"subscribe","id":"4","topics":["office/temp"]}`, "ack", "not inside"},
		{"one bad of two", `{"type":"subscribe","id":"5","topics":["home/a/temp","home/a/humidity"]}`, "ack", `"home/a/humidity": not inside`},
		{"$SYS through a wildcard", `{"type":"subscribe","id":"6","topics":["$SYS/#"]}`, "ack", "not inside"},
		{"malformed filter", `{"type":"subscribe","id":"7","topics":["home/#/temp"]}`, "ack", "# must be alone"},
		{"empty filter", `{"type":"subscribe","id":"8","topics":[""]}`, "ack", "must not be empty"},
		{"topics missing", `{"type":"subscribe","id":"9"}`, "error", "subscribe: topics is missing"},
		{"topics empty", `{"type":"subscribe","id":"10","topics":[]}`, "error", "topics is empty"},
		{"topics a string", `{"type":"subscribe","id":"11","topics":"home/+/temp"}`, "error", "topics must be a list of strings"},
		{"topics of numbers", `{"type":"unsubscribe","id":"12","topics":[1]}`, "error", "topics must be a list of strings"},
		{"too many topics", `{"type":"subscribe","id":"13","topics":[` + strings.Repeat(`"a",`, maxTopicsPerMessage) + `"a"]}`, "error", "at most 32 topics"},
		{"unsubscribe outside", `{"type":"unsubscribe","id":"14","topics":["#"]}`, "ack", "not inside"},
		{"publish outside", `{"type":"publish","id":"15","topic":"office/lamp","payload":"on"}`, "ack", `publish "office/lamp": not inside`},
		{"publish to a filter", `{"type":"publish","id":"16","topic":"home/+/temp","payload":"1"}`, "ack", "must not contain + or #"},
		{"publish NUL", `{"type":"publish","id":"17","topic":"home/lamp/\u0000","payload":"1"}`, "ack", "NUL"},
		{"publish without topic", `{"type":"publish","id":"18","payload":"1"}`, "error", "publish: topic is missing"},
		{"publish without payload", `{"type":"publish","id":"19","topic":"home/lamp/set"}`, "error", "payload is missing"},
		{"publish payload not a string", `{"type":"publish","id":"20","topic":"home/lamp/set","payload":1}`, "error", "payload must be a string"},
		{"publish retain not a bool", `{"type":"publish","id":"21","topic":"home/lamp/set","payload":"1","retain":"yes"}`, "error", "retain must be true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			got := c.exchange(tc.msg)
			if len(got) != 1 || got[0].Type != tc.typ || !strings.Contains(got[0].Error, tc.contains) {
				t.Fatalf("%s: %v, want one %s containing %q", tc.msg, got, tc.typ, tc.contains)
			}
			if got[0].Type == "ack" && *got[0].OK {
				t.Fatalf("%s: ok", tc.msg)
			}
		})
	}
	c.t = t
	if fs := pass.filters(); len(fs) != 0 {
		t.Errorf("subscribed %v", fs)
	}
	if ps := pass.publishes(); len(ps) != 0 {
		t.Errorf("published %v", ps)
	}
	// The bound on subscriptions per connection.
	var topics []string
	for i := range maxSubscriptions {
		topics = append(topics, fmt.Sprintf(`"home/r%d/temp"`, i))
	}
	if got := c.exchange(`{"type":"subscribe","id":"m1","topics":[` + strings.Join(topics, ",") + `]}`); len(got) != 1 || !*got[0].OK {
		t.Fatalf("%d subscriptions: %v", maxSubscriptions, got)
	}
	if got := c.exchange(`{"type":"subscribe","id":"m2","topics":["home/one-more/temp"]}`); len(got) != 1 || !strings.Contains(got[0].Error, "at most 32 subscriptions") {
		t.Fatalf("one more: %v", got)
	}
}

func TestPassthroughOff(t *testing.T) {
	// Without bridge_allow the messages are answered "not enabled", even
	// with a Passthrough wired (TestErrorPaths covers none at all).
	pass := newFakePass()
	h := newHarness(t, setup{options: func(o *Options) { o.Passthrough = pass }})
	c := h.dial(dialOpt{})
	if strings.Contains(c.hello.raw, "bridge_allow") {
		t.Errorf("hello lists bridge_allow while it is empty: %s", c.hello)
	}
	for _, msg := range []string{
		`{"type":"subscribe","id":"s","topics":["home/+/temp"]}`,
		`{"type":"unsubscribe","id":"u","topics":["home/+/temp"]}`,
		`{"type":"publish","id":"p","topic":"home/lamp/set","payload":"on"}`,
	} {
		if got := c.exchange(msg); len(got) != 1 || got[0].Type != "error" || got[0].Error != errBridgeOff {
			t.Errorf("%s: %v", msg, got)
		}
	}
	if len(pass.filters()) != 0 || len(pass.publishes()) != 0 {
		t.Error("the passthrough was used")
	}
}

func TestPassthroughOptions(t *testing.T) {
	h := newHarness(t, setup{})
	if _, err := New(Options{Core: h.core, BridgeAllow: []string{"home/#"}}); err == nil {
		t.Error("BridgeAllow without a Passthrough accepted")
	}
	if _, err := New(Options{Core: h.core, Passthrough: newFakePass(), BridgeAllow: []string{"home/#", "a/#/b"}}); err == nil || !strings.Contains(err.Error(), "bridge_allow[1]") {
		t.Errorf("a malformed allowed filter: %v", err)
	}
}

// An MQTT flood the client cannot take overflows its reply queue: it is
// closed with 1008 and counted, like any client that falls behind.
func TestPassthroughOverflowClosesWith1008(t *testing.T) {
	var g gate
	pass := newFakePass()
	h := bridgeHarness(t, pass, setup{tune: func(t *tuning) {
		t.maxReplies = 8
		t.beforeTake = g.wait
	}})
	c := h.dial(dialOpt{})
	if got := c.exchange(`{"type":"subscribe","id":"s","topics":["home/+/temp"]}`); len(got) != 1 || !*got[0].OK {
		t.Fatal(got)
	}
	g.shut()
	defer g.open()
	for i := range 20 {
		pass.send("home/kitchen/temp", fmt.Sprint(i))
	}
	waitFor(t, "the overflow", func() bool { return h.srv.SlowClosed() == 1 })
	g.open()
	if code := c.closeCode(5 * time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	waitFor(t, "the subscription to go with the client", func() bool { return len(pass.filters()) == 0 })
}

// Retained messages that flood in before the subscribe's ack is queued are
// held within the same bound.
func TestPassthroughHeldOverflow(t *testing.T) {
	pass := newFakePass()
	for i := range 20 {
		pass.retained[fmt.Sprintf("home/r%d/temp", i)] = "1"
	}
	h := bridgeHarness(t, pass, setup{tune: func(t *tuning) { t.maxReplies = 8 }})
	c := h.dial(dialOpt{})
	c.send(`{"type":"subscribe","id":"s","topics":["home/+/temp"]}`)
	if code := c.closeCode(5 * time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	// The close frame can reach the client before the server has counted
	// it: the count follows the close that it counts.
	waitFor(t, "the overflow counted", func() bool { return h.srv.SlowClosed() >= 1 })
	if n := h.srv.SlowClosed(); n != 1 {
		t.Errorf("SlowClosed = %d", n)
	}
}

// The memo shares a frame only between equal messages: whatever the
// caller does with its buffer, a different message gets its own frame.
func TestFrameMemo(t *testing.T) {
	var m frameMemo
	buf := []byte("1")
	a := m.frame("home/a/temp", buf, false)
	if b := m.frame("home/a/temp", []byte("1"), false); &b[0] != &a[0] {
		t.Error("an equal message was framed again")
	}
	buf[0] = '2' // the caller reuses its buffer
	for _, c := range []struct {
		topic    string
		payload  []byte
		retained bool
		want     string
	}{
		{"home/a/temp", buf, false, `{"type":"mqtt","topic":"home/a/temp","payload":"2","retained":false}`},
		{"home/b/temp", buf, false, `{"type":"mqtt","topic":"home/b/temp","payload":"2","retained":false}`},
		{"home/b/temp", buf, true, `{"type":"mqtt","topic":"home/b/temp","payload":"2","retained":true}`},
		{"home/b/temp", nil, true, `{"type":"mqtt","topic":"home/b/temp","payload":"","retained":true}`},
	} {
		if got := string(framePayload(m.frame(c.topic, c.payload, c.retained))); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}

// A client that keeps up on average survives a burst far beyond the old
// 256-entry queue while its writer is held (as when the one core is busy
// elsewhere), and gets every message, in order.
func TestPassthroughBurstIsNotClosed(t *testing.T) {
	var g gate
	pass := newFakePass()
	h := bridgeHarness(t, pass, setup{tune: func(t *tuning) { t.beforeTake = g.wait }})
	c := h.dial(dialOpt{})
	if got := c.exchange(`{"type":"subscribe","id":"s","topics":["home/+/temp"]}`); len(got) != 1 || !*got[0].OK {
		t.Fatal(got)
	}
	const burst = 2000
	g.shut()
	for i := range burst {
		pass.send("home/kitchen/temp", fmt.Sprint(i))
	}
	g.open()
	for i := range burst {
		if f := c.nextMQTT(); f.Payload == nil || *f.Payload != fmt.Sprint(i) {
			t.Fatalf("message %d: %s", i, f)
		}
	}
	if n := h.srv.SlowClosed(); n != 0 {
		t.Errorf("SlowClosed = %d", n)
	}
}

// TestPublishDoesNotHoldTheReader: while the broker has not answered a
// publish, the connection's next command runs (its echoed reading
// arrives), and the acks still come in the order of the requests.
func TestPublishDoesNotHoldTheReader(t *testing.T) {
	pass := &asyncPass{fakePass: newFakePass(), hold: true}
	h := newHarness(t, setup{config: withTokens, tune: noLimit, options: func(o *Options) {
		o.Passthrough = pass
		o.BridgeAllow = []string{"home/lamp/#"}
	}})
	c := h.dial(dialOpt{header: bearer(controlToken)})
	c.send(`{"type":"publish","id":"p1","topic":"home/lamp/set","payload":"on"}`)
	c.send(`{"type":"set","id":"c1","name":"led","value":true}`)
	if f := c.next(); f.Type != "reading" || f.Name != "led" {
		t.Fatalf("got %s, want the echoed led reading while p1 is unanswered", f)
	}
	if n := pass.heldCount(); n != 1 {
		t.Fatalf("%d publishes waiting for the broker, want 1", n)
	}
	pass.release()
	for _, want := range []string{"p1", "c1"} {
		if f := c.nextReply(); f.Type != "ack" || f.id() != want || !*f.OK {
			t.Fatalf("got %s, want the ok ack of %s", f, want)
		}
	}
}

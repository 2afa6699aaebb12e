package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// interlockWait is the pair's dead time: long enough that ms timestamps
// can show it (a partner's "on" less than interlockWait−1 ms after the
// other's "off" is a violation), short enough for 10,000 commands.
const interlockWait = 5 * time.Millisecond

const interlockConfig = embeddedHead + `outputs:
  - {name: up,   pin: GPIO5, interlock: blind, interlock_wait: %s}
  - {name: down, pin: GPIO6, interlock: blind, interlock_wait: %s}
`

// Commanders on each door; each has one command in flight (the bridge
// runs one command at a time per WebSocket anyway).
const (
	wsCommanders   = 4
	mqttCommanders = 4
	ackTimeout     = 15 * time.Second
)

type tally struct{ ok, refused, unanswered atomic.Int64 }

// command is one random command: set on/off/toggle or a 20 ms pulse.
type command struct {
	name  string
	value any // true, false, "toggle"; nil for a pulse
}

func randomCommand(r *rand.Rand) command {
	c := command{name: "up"}
	if r.IntN(2) == 0 {
		c.name = "down"
	}
	switch p := r.IntN(10); {
	case p < 4:
		c.value = true
	case p < 6:
		c.value = false
	case p < 9:
		c.value = "toggle"
	}
	return c
}

// interlock is fault 4: o.commands random commands from WebSocket and
// MQTT clients at once to an interlocked pair. An MQTT subscriber gets
// every reading of both (the outbox drops none, and with only these two
// signals the seqs must be contiguous, which is checked); replayed in seq
// order, both must never be on at once. A WebSocket observer does the
// same with what it sees (its mailbox coalesces, so it may see fewer).
func interlock(ctx context.Context, s *suite) (harness.Table, error) {
	dm, w, stop, err := watchedBridge(ctx, s, "f4", fmt.Sprintf(interlockConfig, interlockWait, interlockWait))
	if err != nil {
		return harness.Table{}, err
	}
	defer stop()

	// The WebSocket observer; its hello is the state the replay starts from.
	var (
		wsMu    sync.Mutex
		wsReads []reading
		hello   = make(chan map[string]wireReading, 1)
	)
	obs, err := observe(ctx, dm.WSURL, func(f *frame, raw []byte, at time.Time) {
		switch f.Type {
		case "hello":
			var h struct {
				State map[string]wireReading `json:"state"`
			}
			_ = json.Unmarshal(raw, &h)
			hello <- h.State
		case "reading":
			wsMu.Lock()
			wsReads = append(wsReads, reading{Name: f.Name, Value: f.Value, Seq: f.Seq, At: at, Stamp: f.TS})
			wsMu.Unlock()
		}
	})
	if err != nil {
		return harness.Table{}, err
	}
	defer obs.close()
	var start map[string]wireReading
	select {
	case start = <-hello:
	case <-time.After(10 * time.Second):
		return harness.Table{}, fmt.Errorf("no hello")
	case <-ctx.Done():
		return harness.Table{}, ctx.Err()
	}
	var h0 uint64
	for _, r := range start {
		h0 = max(h0, r.Seq)
	}

	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + dm.MQTTAddr).
		SetClientID(fmt.Sprintf("faults-cmd-%d", rand.Int64())).SetCleanSession(true).SetConnectTimeout(5 * time.Second))
	if err := await(ctx, pub.Connect(), "command publisher connect"); err != nil {
		return harness.Table{}, err
	}
	defer pub.Disconnect(100)

	var next atomic.Int64 // commands handed out
	var wsT, mqT tally
	var g sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	t0 := time.Now()
	for k := range wsCommanders {
		c, err := dialWS(ctx, dm.WSURL)
		if err != nil {
			return harness.Table{}, err
		}
		defer c.Close()
		g.Go(func() {
			r := rand.New(rand.NewPCG(uint64(k), rand.Uint64()))
			for {
				i := next.Add(1)
				if i > int64(s.o.commands) || ctx.Err() != nil {
					return
				}
				if err := wsCommand(c, fmt.Sprintf("w%d", i), randomCommand(r), &wsT); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	for k := range mqttCommanders {
		g.Go(func() {
			r := rand.New(rand.NewPCG(uint64(100+k), rand.Uint64()))
			for {
				i := next.Add(1)
				if i > int64(s.o.commands) || ctx.Err() != nil {
					return
				}
				mqttCommand(ctx, pub, w, fmt.Sprintf("m%d", i), randomCommand(r), &mqT)
			}
		})
	}
	g.Wait()
	took := time.Since(t0)
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	if firstErr != nil {
		return harness.Table{}, firstErr
	}

	// Every reading up to the current state's must be at the subscriber.
	state, err := apiState(ctx, dm.HTTPURL)
	if err != nil {
		return harness.Table{}, err
	}
	var last uint64
	for _, r := range state {
		last = max(last, r.Seq)
	}
	werr := w.waitFor(ctx, 30*time.Second, fmt.Sprintf("every reading up to seq %d", last), func(w *watcher) bool {
		return len(w.missingLocked(h0+1, last)) == 0
	})
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	w.mu.Lock()
	gaps := len(w.missingLocked(h0+1, last))
	mq := slices.Clone(w.readings)
	w.mu.Unlock()
	wsMu.Lock()
	wsr := slices.Clone(wsReads)
	wsMu.Unlock()

	mqOverlap, mqDead, mqN := replay(start, mq, h0, last)
	wsOverlap, _, wsN := replay(start, wsr, h0, last)
	total := int64(s.o.commands)
	answered := wsT.ok.Load() + wsT.refused.Load() + mqT.ok.Load() + mqT.refused.Load()

	t := harness.Table{Title: fmt.Sprintf("fault 4: %d random commands from %d WebSocket and %d MQTT clients at once to an interlocked pair (interlock_wait %s)", s.o.commands, wsCommanders, mqttCommanders, interlockWait)}
	t.Rows = append(t.Rows,
		harness.R("readings of the pair (seq "+fmt.Sprint(h0+1)+" → "+fmt.Sprint(last)+") missing at the MQTT subscriber", fmt.Sprint(gaps), "0 (a complete view)", harness.Verdict(gaps == 0 && werr == nil)),
		harness.R("overlap: both on after a reading, MQTT view (seq order)", fmt.Sprintf("%d in %d readings", mqOverlap, mqN), "0", harness.Verdict(mqOverlap == 0 && mqN > 0)),
		harness.R("overlap, WebSocket observer's view (coalesced)", fmt.Sprintf("%d in %d readings", wsOverlap, wsN), "0", harness.Verdict(wsOverlap == 0)),
		harness.R(fmt.Sprintf("on < %s after the partner's off (ts, ms)", interlockWait-time.Millisecond), fmt.Sprint(mqDead), "0", harness.Verdict(mqDead == 0)),
		harness.R("WebSocket acks ok / refused / unanswered", fmt.Sprintf("%d / %d / %d", wsT.ok.Load(), wsT.refused.Load(), wsT.unanswered.Load()), "", ""),
		harness.R("MQTT acks ok / refused / unanswered", fmt.Sprintf("%d / %d / %d", mqT.ok.Load(), mqT.refused.Load(), mqT.unanswered.Load()), "", ""),
		harness.R("commands answered", fmt.Sprintf("%d of %d", answered, total), "all", harness.Verdict(answered == total)),
		harness.R("refused", fmt.Sprint(wsT.refused.Load()+mqT.refused.Load()), "0 (every command is valid)", harness.Verdict(wsT.refused.Load()+mqT.refused.Load() == 0)),
	)
	if werr != nil {
		t.Notes = append(t.Notes, werr.Error())
	}
	t.Notes = append(t.Notes,
		fmt.Sprintf("%d commands in %s (%.0f/s): 40 %% on, 20 %% off, 30 %% toggle, 10 %% pulse 20ms, each on up or down at random; every command carries an id", total, took.Round(time.Millisecond), float64(total)/took.Seconds()),
		"replay: the state from the WebSocket hello, then each reading in seq order; overlap counts readings after which both outputs are on",
	)
	return t, nil
}

// wireReading is a reading in the hello's state or /api/state.
type wireReading struct {
	Value any    `json:"value"`
	TS    string `json:"ts"`
	Seq   uint64 `json:"seq"`
}

func apiState(ctx context.Context, url string) (map[string]wireReading, error) {
	var st struct {
		State map[string]wireReading `json:"state"`
	}
	err := harness.Get(ctx, url+"/api/state", func(body io.Reader) error {
		if err := json.NewDecoder(body).Decode(&st); err != nil {
			return fmt.Errorf("/api/state: %w", err)
		}
		return nil
	})
	return st.State, err
}

// replay applies the readings in seq order (after h0, up to last) to the
// start state and counts the readings after which both outputs are on,
// and the switches on that came sooner than the dead time after the
// partner's switch off, by the readings' ms timestamps.
func replay(start map[string]wireReading, rs []reading, h0, last uint64) (overlap, dead, n int) {
	on := map[string]bool{}
	for name, r := range start {
		on[name] = r.Value == true
	}
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b reading) int { return cmp.Compare(a.Seq, b.Seq) })
	lastOff := map[string]time.Time{}
	for _, r := range sorted {
		if r.Seq <= h0 || r.Seq > last || (r.Name != "up" && r.Name != "down") {
			continue
		}
		n++
		v := r.Value == true
		if v && !on[r.Name] {
			partner := "up"
			if r.Name == "up" {
				partner = "down"
			}
			if off, ok := lastOff[partner]; ok && !r.TS().IsZero() && r.TS().Sub(off) < interlockWait-time.Millisecond {
				dead++
			}
		}
		if !v && on[r.Name] {
			lastOff[r.Name] = r.TS()
		}
		on[r.Name] = v
		if on["up"] && on["down"] {
			overlap++
		}
	}
	return overlap, dead, n
}

func wsCommand(c *websocket.Conn, id string, cmd command, t *tally) error {
	var msg []byte
	if cmd.value == nil {
		msg, _ = json.Marshal(map[string]any{"type": "pulse", "id": id, "name": cmd.name, "for": "20ms"})
	} else {
		msg, _ = json.Marshal(map[string]any{"type": "set", "id": id, "name": cmd.name, "value": cmd.value})
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
		return fmt.Errorf("ws command: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(ackTimeout))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.unanswered.Add(1)
			return fmt.Errorf("ws command %s: no ack: %w", id, err)
		}
		var f frame
		if json.Unmarshal(b, &f) != nil || f.Type != "ack" && f.Type != "error" || f.ID != id {
			continue
		}
		if f.Type == "ack" && f.OK {
			t.ok.Add(1)
		} else {
			t.refused.Add(1)
		}
		return nil
	}
}

func mqttCommand(ctx context.Context, pub paho.Client, w *watcher, id string, cmd command, t *tally) {
	topic, payload := base+"/"+cmd.name+"/set", []byte(nil)
	if cmd.value == nil {
		topic = base + "/" + cmd.name + "/pulse"
		payload, _ = json.Marshal(map[string]any{"for": "20ms", "id": id})
	} else {
		payload, _ = json.Marshal(map[string]any{"value": cmd.value, "id": id})
	}
	ch := w.expectAck(id)
	if err := await(ctx, pub.Publish(topic, 1, false, payload), "command publish"); err != nil {
		w.forget(id)
		t.unanswered.Add(1)
		return
	}
	timer := time.NewTimer(ackTimeout)
	defer timer.Stop()
	select {
	case a := <-ch:
		if a.OK {
			t.ok.Add(1)
		} else {
			t.refused.Add(1)
		}
	case <-timer.C:
		w.forget(id)
		t.unanswered.Add(1)
	case <-ctx.Done():
		w.forget(id)
	}
}

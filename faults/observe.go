package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

const (
	prefix = "pibridge"
	device = "faults"
	base   = prefix + "/" + device
)

// embeddedHead begins the config of a bridge on its embedded broker.
const embeddedHead = `device: {id: ` + device + `, name: "pibridge faults"}
board: sim
http: {listen: "127.0.0.1:0"}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:0", topic_prefix: ` + prefix + `, homeassistant: {discovery: false}}
`

// brokerHead begins the config of a bridge on the broker at addr.
func brokerHead(addr string) string {
	return fmt.Sprintf(`device: {id: %s, name: "pibridge faults"}
board: sim
http: {listen: "127.0.0.1:0"}
mqtt: {broker: "tcp://%s", qos: 1, topic_prefix: %s, homeassistant: {discovery: false}}
`, device, addr, prefix)
}

// --- MQTT: every seq through an independent subscriber -----------------

// watcher counts the seqs of the readings it receives on a persistent
// session (clean session off, fixed id) that paho reconnects every 50 ms,
// so that the broker keeps messages for it while it is away.
type watcher struct {
	client paho.Client
	mu     sync.Mutex
	counts map[uint64]int
	first  map[uint64]time.Time // when each seq first arrived
	latest map[string]uint64    // topic → newest seq
	// dupState are copies of the newest reading of their topic (the state
	// the bridge re-publishes on each connect); dupOther the rest
	// (QoS 1 redeliveries).
	dupState, dupOther int
	maxSeq             uint64
	contig             uint64    // every seq from 1 to contig has arrived
	readings           []reading // in arrival order, when keep is set
	keep               bool
	acks               map[string]ack
	ackWait            map[string]chan ack // id → who waits for its ack
	acksOK, acksBad    int                 // every ack, with or without an id
	acksWithID         int                 // acks that carry an id
	acksBusy           int                 // refused busy: too many commands waiting
	online             bool
	// stamps is each seq's ts (and value) as first received: the same
	// seq again with another is a reused seq, never a redelivery.
	stamps map[uint64]string
	reused int
	// runs are the distinct `run` objects of P/D/meta, in arrival order.
	runs     []runInfo
	since    time.Time // when it last came online
	connects int
	change   chan struct{}
}

type reading struct {
	Name  string
	Value any
	Seq   uint64
	At    time.Time // arrival
	Stamp string    // the reading's ts
}

// TS is the reading's ts, zero when unreadable.
func (r reading) TS() time.Time {
	t, _ := parseTS(r.Stamp)
	return t
}

// runInfo is P/D/meta's and the hello's `run`.
type runInfo struct {
	FirstSeq        uint64 `json:"first_seq"`
	PreviousLastSeq uint64 `json:"previous_last_seq"`
	Clean           bool   `json:"clean"`
}

type ack struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

func newWatcher(ctx context.Context, addr, filter string, keep bool) (*watcher, error) {
	w := &watcher{counts: map[uint64]int{}, first: map[uint64]time.Time{}, latest: map[string]uint64{}, stamps: map[uint64]string{},
		acks: map[string]ack{}, ackWait: map[string]chan ack{}, keep: keep, change: make(chan struct{}, 1)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("faults-watch-%d", rand.Int64())).
		SetCleanSession(false).SetOrderMatters(true).
		SetAutoReconnect(true).SetMaxReconnectInterval(50 * time.Millisecond).SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).
		SetConnectTimeout(2 * time.Second).SetKeepAlive(30 * time.Second).
		// Messages of a restored session arrive before any Subscribe.
		SetDefaultPublishHandler(w.onMessage).
		SetOnConnectHandler(func(paho.Client) { w.setOnline(true) }).
		SetConnectionLostHandler(func(paho.Client, error) { w.setOnline(false) })
	w.client = paho.NewClient(opts)
	if err := await(ctx, w.client.Connect(), "watcher connect"); err != nil {
		return nil, err
	}
	if err := await(ctx, w.client.Subscribe(filter, 1, nil), "watcher subscribe"); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *watcher) close() { w.client.Disconnect(100) }

// expectAck returns a channel that gets the ack with this id; call it
// before sending the command.
func (w *watcher) expectAck(id string) <-chan ack {
	ch := make(chan ack, 1)
	w.mu.Lock()
	w.ackWait[id] = ch
	w.mu.Unlock()
	return ch
}

// forget drops a wait that timed out.
func (w *watcher) forget(id string) {
	w.mu.Lock()
	delete(w.ackWait, id)
	w.mu.Unlock()
}

func await(ctx context.Context, tok paho.Token, what string) error {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%s: no answer in 10 s", what)
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (w *watcher) setOnline(up bool) {
	w.mu.Lock()
	w.online = up
	if up {
		w.since = time.Now()
		w.connects++
	}
	w.mu.Unlock()
	notify(w.change)
}

func (w *watcher) onMessage(_ paho.Client, m paho.Message) {
	now := time.Now()
	topic := m.Topic()
	if topic == base+"/ack" {
		var a ack
		if json.Unmarshal(m.Payload(), &a) == nil {
			w.mu.Lock()
			w.acks[a.ID] = a
			if a.OK {
				w.acksOK++
			} else {
				w.acksBad++
			}
			if a.ID != "" {
				w.acksWithID++
			}
			if strings.Contains(a.Error, ": busy") {
				w.acksBusy++
			}
			if ch, ok := w.ackWait[a.ID]; ok {
				ch <- a
				delete(w.ackWait, a.ID)
			}
			w.mu.Unlock()
			notify(w.change)
		}
		return
	}
	if topic == base+"/meta" {
		var meta struct {
			Run *runInfo `json:"run"`
		}
		if json.Unmarshal(m.Payload(), &meta) == nil && meta.Run != nil {
			w.mu.Lock()
			if k := len(w.runs); k == 0 || w.runs[k-1] != *meta.Run {
				w.runs = append(w.runs, *meta.Run)
			}
			w.mu.Unlock()
			notify(w.change)
		}
		return
	}
	var r struct {
		Value any    `json:"value"`
		TS    string `json:"ts"`
		Seq   uint64 `json:"seq"`
	}
	if err := json.Unmarshal(m.Payload(), &r); err != nil || r.Seq == 0 {
		return // status: not a reading
	}
	stamp := topic + " " + r.TS + " " + fmt.Sprint(r.Value)
	w.mu.Lock()
	if old, ok := w.stamps[r.Seq]; ok && old != stamp {
		w.reused++
	} else if !ok {
		w.stamps[r.Seq] = stamp
	}
	if w.counts[r.Seq] == 0 {
		w.first[r.Seq] = now
		if w.keep {
			w.readings = append(w.readings, reading{Name: topic[len(base)+1:], Value: r.Value, Seq: r.Seq, At: now, Stamp: r.TS})
		}
	} else if w.latest[topic] == r.Seq {
		w.dupState++
	} else {
		w.dupOther++
	}
	w.counts[r.Seq]++
	w.latest[topic] = max(w.latest[topic], r.Seq)
	w.maxSeq = max(w.maxSeq, r.Seq)
	for w.counts[w.contig+1] > 0 {
		w.contig++
	}
	w.mu.Unlock()
	notify(w.change)
}

// waitFor waits until cond holds (evaluated under the watcher's lock),
// ctx ends or limit passes.
func (w *watcher) waitFor(ctx context.Context, limit time.Duration, what string, cond func(w *watcher) bool) error {
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		w.mu.Lock()
		ok := cond(w)
		w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-w.change:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return fmt.Errorf("timed out after %s waiting for %s; %s", limit, what, w.summary())
		}
	}
}

// missing returns the seqs in [from, to] that never arrived. Locked.
func (w *watcher) missingLocked(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		if w.counts[s] == 0 {
			out = append(out, s)
		}
	}
	return out
}

func (w *watcher) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%d seqs received (newest %d), online=%v", len(w.counts), w.maxSeq, w.online)
}

// --- WebSocket: a client that reads everything ---------------------------

// frame is any server message, decoded loosely.
type frame struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	TS    string `json:"ts"`
	Seq   uint64 `json:"seq"`
	Value any    `json:"value"`
}

// wsObserver reads every frame of one connection in its own goroutine
// and hands each to fn (in that goroutine) with its arrival time.
type wsObserver struct {
	conn *websocket.Conn
	done chan struct{}
	err  error
}

func dialWS(ctx context.Context, url string) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, err
	}
	return c, nil
}

func observe(ctx context.Context, url string, fn func(f *frame, raw []byte, at time.Time)) (*wsObserver, error) {
	c, err := dialWS(ctx, url)
	if err != nil {
		return nil, err
	}
	o := &wsObserver{conn: c, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for {
			_, b, err := c.ReadMessage()
			at := time.Now()
			if err != nil {
				o.err = err
				return
			}
			var f frame
			if json.Unmarshal(b, &f) != nil {
				continue
			}
			fn(&f, b, at)
		}
	}()
	return o, nil
}

// close ends the connection and waits for the reader.
func (o *wsObserver) close() {
	o.conn.Close()
	<-o.done
}

// seqTracker is the newest seq a WebSocket observer has seen.
type seqTracker struct {
	mu   sync.Mutex
	max  uint64
	seen map[uint64]time.Time // when keep
	keep bool
}

func (t *seqTracker) add(f *frame, at time.Time) {
	if f.Type != "reading" || f.Seq == 0 {
		return
	}
	t.mu.Lock()
	t.max = max(t.max, f.Seq)
	if t.keep {
		if t.seen == nil {
			t.seen = map[uint64]time.Time{}
		}
		t.seen[f.Seq] = at
	}
	t.mu.Unlock()
}

func (t *seqTracker) newest() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.max
}

// --- small helpers --------------------------------------------------------

// poll calls cond every step until it is true, ctx ends or limit passes.
func poll(ctx context.Context, limit, step time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", limit, what)
		}
		if err := harness.Sleep(ctx, step); err != nil {
			return err
		}
	}
}

// healthz returns /healthz's status code within timeout.
func healthz(ctx context.Context, url string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func dist(ds []time.Duration) harness.Dist {
	s := slices.Clone(ds)
	slices.Sort(s)
	return harness.Dist(s)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

var errStopped = errors.New("stopped")

// parseTS reads a reading's ts.
func parseTS(s string) (time.Time, error) { return time.Parse("2006-01-02T15:04:05.000Z07:00", s) }

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// Command path: a WebSocket client publishes to MQTT at a paced rate and
// a plain MQTT subscriber of the broker times each message. Through the
// bridge, the browser's {"type":"publish"} goes WebSocket → bridge → its
// MQTT connection (QoS 1, acknowledged to the browser on PUBACK) →
// mosquitto → subscriber; through mosquitto's WebSocket listener, an MQTT
// over WebSocket client publishes at QoS 1 → mosquitto → subscriber.

// cmdSender sends one timed payload over the subject's WebSocket.
type cmdSender interface {
	send(seq int64, payload []byte) error
	// answered is how many commands the subject has acknowledged.
	answered() int64
	Close() error
}

const cmdTopic = "lab/cmd"

type cmdResult struct {
	name       string
	lat        harness.Dist
	sent       int
	answered   int64
	use        usage
	senderErr  error
	subscriber error
}

func commandScenario(ctx context.Context, e peerEnv) (harness.Table, error) {
	var results []cmdResult
	for _, name := range subjectNames(e.o, true) {
		if name == peerNodeRED || name == peerMochi {
			continue // the bridge against mosquitto's own listener; the others have no such path configured
		}
		rs, err := commandRun(ctx, e, name)
		if err != nil {
			return harness.Table{}, fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, rs...)
	}
	t := harness.Table{Title: fmt.Sprintf("WebSocket command → MQTT (WebSocket client publishes lab/cmd → subject → MQTT subscriber), %d commands at %d/s, GOMAXPROCS=%d", e.o.cmdSamples, e.o.cmdRate, e.d.Procs)}
	var mosq *cmdResult
	for i := range results {
		if strings.HasPrefix(results[i].name, "mosquitto") {
			mosq = &results[i]
		}
	}
	for _, r := range results {
		target, verdict := "", ""
		if mosq != nil && r.name != mosq.name && !strings.Contains(r.name, "hop alone") && !strings.HasPrefix(r.name, "bridged") {
			target = "each ≤ mosquitto-ws"
			verdict = harness.Verdict(r.lat.Q(.5) <= mosq.lat.Q(.5) && r.lat.Q(.99) <= mosq.lat.Q(.99) && r.lat.Q(.999) <= mosq.lat.Q(.999))
		}
		t.Rows = append(t.Rows,
			harness.R(r.name+": p50 / p99 / p99.9 / max", fmt.Sprintf("%s / %s / %s / %s", harness.US(r.lat.Q(.5)), harness.US(r.lat.Q(.99)), harness.US(r.lat.Q(.999)), harness.US(r.lat.Max())), target, verdict),
			harness.R(r.name+": received / sent / answered", fmt.Sprintf("%d / %d / %d", len(r.lat), r.sent, r.answered), "", ""),
			harness.R(r.name+": CPU per command; syscalls per command", fmt.Sprintf("%.1f µs; %.2f r + %.2f w", float64(r.use.cpu)/float64(max(r.sent, 1))/1e3,
				float64(r.use.syscr)/float64(max(r.sent, 1)), float64(r.use.syscw)/float64(max(r.sent, 1))), "", ""),
		)
		if r.senderErr != nil {
			t.Notes = append(t.Notes, fmt.Sprintf("%s: the WebSocket client failed: %v", r.name, r.senderErr))
		}
	}
	t.Notes = append(t.Notes,
		"latency = the MQTT subscriber's receipt − the send time carried in the payload, both the load generator's monotonic clock; one command written at a time, the next not waiting for the answer",
		"the subscriber is on the broker's TCP listener (for the bridge: the mosquitto it is connected to, on the load generator's core; for mosquitto-ws: the subject itself)",
		"the bridge's path has one broker hop more than mosquitto-ws's; its \"broker hop alone\" row times that hop by itself (QoS 1 over TCP, same pacing): the bridge's own share is its row minus that one",
		fmt.Sprintf("the first %d commands are warm-up, not counted; CPU and syscalls: the subject's process over the sending and drain", cmdWarmup(e.o)),
	)
	return t, nil
}

func cmdWarmup(o peerOptions) int { return min(1000, o.cmdSamples/10) }

// commandRun measures name's command path; for the bridge it also
// measures, on the same broker, the hop its path has and mosquitto-ws's
// has not: an MQTT publisher → that mosquitto → the subscriber.
func commandRun(ctx context.Context, e peerEnv, name string) ([]cmdResult, error) {
	s, err := e.start(ctx, name, "command-"+name)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	var dial func() (cmdSender, error)
	if s.wsURL != "" {
		dial = func() (cmdSender, error) { return dialBridgeCommander(ctx, s.wsURL) }
	} else {
		dial = func() (cmdSender, error) { return dialMQTTWSCommander(ctx, s.cmdURL, "commander") }
	}
	r, err := commandMeasure(ctx, e, s, s.name, "cmdsub", dial)
	if err != nil || s.wsURL == "" {
		return []cmdResult{r}, err
	}
	broker := "mosquitto"
	if name == peerEmbedded {
		broker = "its embedded broker"
	}
	hop, err := commandMeasure(ctx, e, s, s.name+": its broker hop alone (MQTT publisher → "+broker+" → subscriber)", "hopsub",
		func() (cmdSender, error) { return dialTCPCommander(ctx, s.pubAddr, "hopcommander") })
	return []cmdResult{r, hop}, err
}

// commandMeasure sends the paced commands through the sender dial makes
// and times them at a subscriber of s's broker.
func commandMeasure(ctx context.Context, e peerEnv, s *subject, name, subID string, dial func() (cmdSender, error)) (cmdResult, error) {
	r := cmdResult{name: name}
	sub, err := dialMQTT(ctx, s.pubAddr, subID, "lab/#")
	if err != nil {
		return r, fmt.Errorf("subscriber: %w", err)
	}
	warm := cmdWarmup(e.o)
	f := startFleet([]receiver{sub}, true, int64(warm))
	defer f.stop()
	probePub, err := dialPublisher(ctx, s.pubAddr, "probe")
	if err != nil {
		return r, err
	}
	defer probePub.Close()
	if err := f.waitReady(ctx, probePub, 20*time.Second); err != nil {
		return r, err
	}
	snd, err := dial()
	if err != nil {
		return r, fmt.Errorf("command client: %w", err)
	}
	defer snd.Close()
	m, err := markCPU(s.pid)
	if err != nil {
		return r, err
	}
	n := warm + e.o.cmdSamples
	start := time.Now()
	var pay []byte
	for i := range n {
		if i%256 == 0 && ctx.Err() != nil {
			return r, ctx.Err()
		}
		next := start.Add(time.Duration(float64(i) / float64(e.o.cmdRate) * float64(time.Second)))
		if w := time.Until(next); w > 0 {
			time.Sleep(w) // pacing, not synchronising
		}
		pay = appendPayload(pay[:0], int64(i), nil)
		if err := snd.send(int64(i), pay); err != nil {
			r.senderErr = err
			break
		}
		r.sent++
	}
	f.drain(ctx, int64(r.sent), time.Second, 10*time.Second)
	// The answers of the last commands come after their messages.
	for end := time.Now().Add(5 * time.Second); snd.answered() < int64(r.sent) && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond) // polling a counter
	}
	if r.use, err = m.since(); err != nil {
		return r, err
	}
	r.answered = snd.answered()
	f.stop()
	r.subscriber = f.errs[0]
	r.sent -= warm
	r.lat = f.latencies(0)
	if len(r.lat) == 0 {
		return r, fmt.Errorf("no command reached the subscriber; log: %s", harness.Tail(s.logPath))
	}
	return r, nil
}

// bridgeCommander publishes through the bridge's WebSocket protocol and
// counts the acks.
type bridgeCommander struct {
	c   *websocket.Conn
	buf []byte
	ok  atomic.Int64
	bad atomic.Pointer[string]
}

func dialBridgeCommander(ctx context.Context, url string) (*bridgeCommander, error) {
	c, err := dialHello(ctx, wsDialer(), url)
	if err != nil {
		return nil, err
	}
	b := &bridgeCommander{c: c}
	go func() {
		for {
			_, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			if strings.Contains(string(m), `"type":"ack"`) {
				if strings.Contains(string(m), `"ok":true`) {
					b.ok.Add(1)
				} else if b.bad.Load() == nil {
					s := string(m)
					b.bad.Store(&s)
				}
			}
		}
	}()
	return b, nil
}

func (b *bridgeCommander) send(seq int64, payload []byte) error {
	if p := b.bad.Load(); p != nil {
		return errors.New("publish refused: " + *p)
	}
	b.buf = append(b.buf[:0], `{"type":"publish","id":"`...)
	b.buf = strconv.AppendInt(b.buf, seq, 10)
	b.buf = append(b.buf, `","topic":"`+cmdTopic+`","payload":"`...)
	b.buf = append(b.buf, payload...) // digits and spaces: nothing to escape
	b.buf = append(b.buf, `"}`...)
	_ = b.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return b.c.WriteMessage(websocket.TextMessage, b.buf)
}

func (b *bridgeCommander) answered() int64 { return b.ok.Load() }
func (b *bridgeCommander) Close() error    { return closeNow(b.c.NetConn()) }

// mqttWSCommander publishes at QoS 1 over MQTT over WebSocket and counts
// the PUBACKs.
type mqttWSCommander struct {
	c    *websocket.Conn
	buf  []byte
	acks atomic.Int64
}

const pktPuback = 4

func dialMQTTWSCommander(ctx context.Context, url, clientID string) (*mqttWSCommander, error) {
	c, _, err := wsDialer("mqtt").DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	_ = c.NetConn().SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.BinaryMessage, mqttConnect(clientID)); err != nil {
		closeNow(c.NetConn())
		return nil, err
	}
	r := &mqttReader{r: bufio.NewReaderSize(&wsStream{c: c}, 2048)}
	if _, err := r.expect(pktConnack); err != nil {
		closeNow(c.NetConn())
		return nil, err
	}
	_ = c.NetConn().SetDeadline(time.Time{})
	m := &mqttWSCommander{c: c}
	go countPubacks(r, &m.acks)
	return m, nil
}

// countPubacks counts the PUBACKs r reads until it fails.
func countPubacks(r *mqttReader, acks *atomic.Int64) {
	for {
		t, _, err := r.next()
		if err != nil {
			return
		}
		if t == pktPuback {
			acks.Add(1)
		}
	}
}

// appendCommand appends a QoS 1 PUBLISH of payload to cmdTopic.
func appendCommand(b []byte, seq int64, payload []byte) []byte {
	id := uint16(seq%65535) + 1
	b = appendRemaining(append(b, pktPublish<<4|0x02), 2+len(cmdTopic)+2+len(payload))
	b = appendMQTTString(b, cmdTopic)
	b = append(b, byte(id>>8), byte(id))
	return append(b, payload...)
}

func (m *mqttWSCommander) send(seq int64, payload []byte) error {
	m.buf = appendCommand(m.buf[:0], seq, payload)
	_ = m.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return m.c.WriteMessage(websocket.BinaryMessage, m.buf)
}

func (m *mqttWSCommander) answered() int64 { return m.acks.Load() }
func (m *mqttWSCommander) Close() error    { return closeNow(m.c.NetConn()) }

// tcpCommander publishes at QoS 1 over plain MQTT and counts the PUBACKs.
type tcpCommander struct {
	c    net.Conn
	buf  []byte
	acks atomic.Int64
}

func dialTCPCommander(ctx context.Context, addr, clientID string) (*tcpCommander, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(mqttConnect(clientID)); err != nil {
		c.Close()
		return nil, err
	}
	r := &mqttReader{r: bufio.NewReaderSize(c, 2048)}
	if _, err := r.expect(pktConnack); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	m := &tcpCommander{c: c}
	go countPubacks(r, &m.acks)
	return m, nil
}

func (m *tcpCommander) send(seq int64, payload []byte) error {
	m.buf = appendCommand(m.buf[:0], seq, payload)
	_ = m.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := m.c.Write(m.buf)
	return err
}

func (m *tcpCommander) answered() int64 { return m.acks.Load() }
func (m *tcpCommander) Close() error    { return closeNow(m.c) }

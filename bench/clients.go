package main

// Load-generator clients: one paced MQTT publisher, and receivers for
// every way a message can reach a subscriber (the bridge's WebSocket
// frames, Node-RED's, MQTT over WebSocket, plain MQTT). Every receiver
// yields the MQTT payload as sent, so that one parser reads the sequence
// number and the send time for all of them.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// base is the monotonic origin of the send times carried in payloads: the
// publisher and every receiver run in this process, so time.Since(base)
// on both sides compares readings of one monotonic clock.
var base = time.Now()

func sinceBase() int64 { return int64(time.Since(base)) }

// appendPayload appends "<seq> <ns since base> <pad>" to b.
func appendPayload(b []byte, seq int64, pad []byte) []byte {
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, sinceBase(), 10)
	if len(pad) > 0 {
		b = append(b, ' ')
		b = append(b, pad...)
	}
	return b
}

// probe is the payload of readiness probes; it never parses as a sample.
var probe = []byte("probe")

// parsePayload returns the sequence number and send time of a payload,
// ok false for a probe or anything else.
func parsePayload(p []byte) (seq, sent int64, ok bool) {
	i := bytes.IndexByte(p, ' ')
	if i <= 0 {
		return 0, 0, false
	}
	seq, ok1 := atoi(p[:i])
	p = p[i+1:]
	if j := bytes.IndexByte(p, ' '); j >= 0 {
		p = p[:j]
	}
	sent, ok2 := atoi(p)
	return seq, sent, ok1 && ok2
}

func atoi(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// --- publisher ------------------------------------------------------------

// publisher is one MQTT connection that publishes at QoS 0.
type publisher struct {
	c   net.Conn
	w   *bufio.Writer
	buf []byte
	pay []byte
}

func dialPublisher(ctx context.Context, addr, clientID string) (*publisher, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(mqttConnect(clientID)); err != nil {
		c.Close()
		return nil, fmt.Errorf("publisher CONNECT: %w", err)
	}
	r := &mqttReader{r: bufio.NewReader(c)}
	if _, err := r.expect(pktConnack); err != nil {
		c.Close()
		return nil, fmt.Errorf("publisher: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	// Nothing comes back at QoS 0, but the socket must be drained should
	// the broker ever send (a PINGRESP); a reader keeps it so.
	go func() { _, _ = io.Copy(io.Discard, c) }()
	return &publisher{c: c, w: bufio.NewWriterSize(c, 64<<10)}, nil
}

func (p *publisher) Close() error { return p.c.Close() }

// send publishes one message; it is written when flush is called.
func (p *publisher) send(topic string, payload []byte) error {
	p.buf = appendPublish(p.buf[:0], topic, payload)
	_, err := p.w.Write(p.buf)
	return err
}

func (p *publisher) flush() error {
	_ = p.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return p.w.Flush()
}

// paced publishes sample messages (seq from 0) on topic at rate per
// second until d has passed or n were sent (n 0: no bound), and returns
// how many went out. It sleeps between batches rather than spinning: the
// load generator's core is shared with the broker. flushEach writes each
// message at once (latency runs); otherwise a batch is one write.
func (p *publisher) paced(ctx context.Context, topic string, rate int, d time.Duration, n int, pad []byte, flushEach bool) (int, error) {
	start := time.Now()
	sent := 0
	for {
		el := time.Since(start)
		if el >= d || (n > 0 && sent >= n) {
			return sent, nil
		}
		if sent%4096 == 0 && ctx.Err() != nil {
			return sent, ctx.Err()
		}
		due := int(el.Seconds()*float64(rate)) + 1
		if n > 0 {
			due = min(due, n)
		}
		for sent < due {
			p.pay = appendPayload(p.pay[:0], int64(sent), pad)
			if err := p.send(topic, p.pay); err != nil {
				return sent, err
			}
			sent++
			if flushEach {
				if err := p.flush(); err != nil {
					return sent, err
				}
			}
		}
		if err := p.flush(); err != nil {
			return sent, err
		}
		next := start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))
		if w := time.Until(next); w > 0 {
			time.Sleep(w) // pacing, not synchronising
		}
	}
}

// --- receivers ------------------------------------------------------------

// receiver yields the payloads of the MQTT messages one subscriber gets.
type receiver interface {
	// next returns the next message's payload, valid until the next call.
	next() ([]byte, error)
	setReadDeadline(time.Time) error
	Close() error
}

// wsDialer keeps the load generator's per-connection buffers small.
func wsDialer(subprotocols ...string) *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  1024,
		Subprotocols:     subprotocols,
		NetDialContext:   (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
}

// closeNow closes without TIME_WAIT on this side: ten thousand
// connections per subject would otherwise hold as many ports.
func closeNow(c net.Conn) error {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.Close()
}

// wsReceiver reads text frames from the bridge or Node-RED.
type wsReceiver struct {
	c     *websocket.Conn
	buf   []byte
	frame func(b []byte) ([]byte, bool) // the payload inside a frame, ok false to skip it
}

func (r *wsReceiver) next() ([]byte, error) {
	for {
		_, rd, err := r.c.NextReader()
		if err != nil {
			return nil, err
		}
		r.buf = r.buf[:0]
		for {
			if len(r.buf) == cap(r.buf) {
				r.buf = append(r.buf, 0)[:len(r.buf)]
			}
			n, err := rd.Read(r.buf[len(r.buf):cap(r.buf)])
			r.buf = r.buf[:len(r.buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		if p, ok := r.frame(r.buf); ok {
			return p, nil
		}
	}
}

func (r *wsReceiver) setReadDeadline(t time.Time) error { return r.c.SetReadDeadline(t) }
func (r *wsReceiver) Close() error                      { return closeNow(r.c.NetConn()) }

var (
	mqttFramePrefix = []byte(`{"type":"mqtt",`)
	payloadKey      = []byte(`"payload":"`)
)

// bridgeFrame takes the payload out of {"type":"mqtt",…,"payload":"…"}.
// The bench's payloads are digits, spaces and letters: no escapes.
func bridgeFrame(b []byte) ([]byte, bool) {
	if !bytes.HasPrefix(b, mqttFramePrefix) {
		return nil, false
	}
	i := bytes.Index(b, payloadKey)
	if i < 0 {
		return nil, false
	}
	p := b[i+len(payloadKey):]
	j := bytes.IndexByte(p, '"')
	if j < 0 {
		return nil, false
	}
	return p[:j], true
}

// dialBridge opens a WebSocket to the bridge, reads the hello and
// subscribes to filter; it returns once the subscription is acknowledged.
func dialBridge(ctx context.Context, url, filter string) (*wsReceiver, error) {
	return dialBridgeWith(ctx, wsDialer(), url, filter)
}

// dialBridgeWith is dialBridge through d.
func dialBridgeWith(ctx context.Context, d *websocket.Dialer, url, filter string) (*wsReceiver, error) {
	c, err := dialHello(ctx, d, url)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	sub := fmt.Appendf(nil, `{"type":"subscribe","id":"s1","topics":[%q]}`, filter)
	if err := c.WriteMessage(websocket.TextMessage, sub); err != nil {
		closeNow(c.NetConn())
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			closeNow(c.NetConn())
			return nil, fmt.Errorf("waiting for the subscribe ack: %w", err)
		}
		if bytes.Contains(b, []byte(`"type":"ack"`)) && bytes.Contains(b, []byte(`"id":"s1"`)) {
			if !bytes.Contains(b, []byte(`"ok":true`)) {
				closeNow(c.NetConn())
				return nil, fmt.Errorf("subscribe refused: %s", b)
			}
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	return &wsReceiver{c: c, frame: bridgeFrame}, nil
}

// dialBridgeIdle opens a WebSocket to the bridge and reads the hello.
func dialBridgeIdle(ctx context.Context, url string) (*websocket.Conn, error) {
	return dialHello(ctx, wsDialer(), url)
}

func dialHello(ctx context.Context, d *websocket.Dialer, url string) (*websocket.Conn, error) {
	c, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		closeNow(c.NetConn())
		return nil, fmt.Errorf("reading hello: %w", err)
	}
	if !bytes.HasPrefix(b, []byte(`{"type":"hello"`)) {
		closeNow(c.NetConn())
		return nil, fmt.Errorf("first frame is not hello: %.60s", b)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// dialNodeRED opens a WebSocket to a Node-RED "websocket out" listener:
// each frame is a message's payload.
func dialNodeRED(ctx context.Context, url string) (*wsReceiver, error) {
	c, _, err := wsDialer().DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	return &wsReceiver{c: c, frame: func(b []byte) ([]byte, bool) { return b, true }}, nil
}

// wsStream reads the binary messages of a WebSocket as one byte stream:
// MQTT over WebSocket may split or join packets across messages.
type wsStream struct {
	c   *websocket.Conn
	cur io.Reader
}

func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if s.cur == nil {
			_, r, err := s.c.NextReader()
			if err != nil {
				return 0, err
			}
			s.cur = r
		}
		n, err := s.cur.Read(p)
		if err == io.EOF {
			s.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// mqttReceiver is an MQTT subscriber over TCP or WebSocket.
type mqttReceiver struct {
	r        *mqttReader
	deadline func(time.Time) error
	close    func() error
}

func (m *mqttReceiver) next() ([]byte, error) {
	for {
		t, body, err := m.r.next()
		if err != nil {
			return nil, err
		}
		if t == pktPublish {
			return publishPayload(body)
		}
	}
}

func (m *mqttReceiver) setReadDeadline(t time.Time) error { return m.deadline(t) }
func (m *mqttReceiver) Close() error                      { return m.close() }

// dialMQTTWS connects an MQTT client over WebSocket (subprotocol mqtt)
// and subscribes to filter unless it is "".
func dialMQTTWS(ctx context.Context, url, clientID, filter string) (*mqttReceiver, error) {
	c, _, err := wsDialer("mqtt").DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	m := &mqttReceiver{
		r:        &mqttReader{r: bufio.NewReaderSize(&wsStream{c: c}, 2048)},
		deadline: c.SetReadDeadline,
		close:    func() error { return closeNow(c.NetConn()) },
	}
	write := func(b []byte) error {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return c.WriteMessage(websocket.BinaryMessage, b)
	}
	if err := mqttHandshake(m, write, clientID, filter); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// dialMQTT connects a plain MQTT client and subscribes to filter.
func dialMQTT(ctx context.Context, addr, clientID, filter string) (*mqttReceiver, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	m := &mqttReceiver{
		r:        &mqttReader{r: bufio.NewReaderSize(c, 16<<10)},
		deadline: c.SetReadDeadline,
		close:    func() error { return closeNow(c) },
	}
	write := func(b []byte) error {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write(b)
		return err
	}
	if err := mqttHandshake(m, write, clientID, filter); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func mqttHandshake(m *mqttReceiver, write func([]byte) error, clientID, filter string) error {
	_ = m.deadline(time.Now().Add(10 * time.Second))
	defer m.deadline(time.Time{})
	if err := write(mqttConnect(clientID)); err != nil {
		return fmt.Errorf("CONNECT: %w", err)
	}
	if _, err := m.r.expect(pktConnack); err != nil {
		return err
	}
	if filter == "" {
		return nil
	}
	if err := write(mqttSubscribe(filter)); err != nil {
		return fmt.Errorf("SUBSCRIBE: %w", err)
	}
	_, err := m.r.expect(pktSuback)
	return err
}

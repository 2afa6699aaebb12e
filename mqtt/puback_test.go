package mqtt

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pibridge "pibridge"
)

// ackProxy forwards MQTT between a client and a broker and, while told
// to, swallows the broker's PUBACKs: the broker has the messages, the
// client never hears so.
type ackProxy struct {
	addr, target string
	swallow      atomic.Bool
	swallowed    atomic.Int64
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
	wg           sync.WaitGroup
}

func newAckProxy(t *testing.T, target string) *ackProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ackProxy{addr: ln.Addr().String(), target: target, ln: ln}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *ackProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(up, down); up.Close(); down.Close() }()
		go func() { defer p.wg.Done(); p.filter(down, up); up.Close(); down.Close() }()
	}
}

// filter copies broker → client packet by packet, leaving out PUBACKs
// while swallow is set.
func (p *ackProxy) filter(dst io.Writer, src io.Reader) {
	r := bufio.NewReader(src)
	for {
		pkt, err := readPacket(r)
		if err != nil {
			return
		}
		if pkt[0]>>4 == 4 && p.swallow.Load() { // PUBACK
			p.swallowed.Add(1)
			continue
		}
		if _, err := dst.Write(pkt); err != nil {
			return
		}
	}
}

// readPacket reads one MQTT control packet: fixed header, remaining
// length (variable byte integer), body.
func readPacket(r *bufio.Reader) ([]byte, error) {
	b0, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	pkt := []byte{b0}
	n, shift := 0, 0
	for i := 0; ; i++ {
		if i == 4 {
			return nil, errors.New("malformed remaining length")
		}
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		pkt = append(pkt, b)
		n |= int(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(pkt, body...), nil
}

// cut closes every forwarded connection; new ones are accepted.
func (p *ackProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestNoCommitWithoutPuback: the broker receives readings but its PUBACKs
// never reach the bridge; the connection drops and comes back. On the
// reconnect paho resends the readings and completes their old tokens at
// once (paho #563): the outbox must still hold them until PUBACKs arrive
// on the new connection.
func TestNoCommitWithoutPuback(t *testing.T) {
	for _, kind := range []struct {
		name string
		disk bool
	}{{"memory outbox", false}, {"disk outbox", true}} {
		t.Run(kind.name, func(t *testing.T) {
			addr := startMosquitto(t)
			px := newAckProxy(t, addr)
			core, _ := newCore(t)
			w := watch(t, addr, base+"/cpu")
			if kind.disk {
				t.Setenv(outboxEnv, "disk")
			}
			c, _ := startClient(t, core, "tcp://"+px.addr, nil)
			eventually(t, "connected", c.Connected)

			px.swallow.Store(true)
			const n = 5
			for i := 0; i < n; i++ {
				core.Emit("cpu", pibridge.Number(float64(i)), time.Time{})
			}
			w.waitFor("the readings at the broker", func(ms []msg) bool { return len(ms) >= n })
			px.cut()
			eventually(t, "the reconnect", func() bool { return c.Stats().Connects == 2 && c.Connected() })
			// paho's resend, then a reading emitted on the new connection:
			// by the time it is at the broker, the publisher has seen the
			// old tokens complete.
			w.waitFor("paho's resend", func(ms []msg) bool { return len(ms) >= 2*n })
			core.Emit("cpu", pibridge.Number(99), time.Time{})
			w.waitFor("the new reading", func(ms []msg) bool {
				return slices.Contains(readingSeqs(t, ms), core.Emitted())
			})
			if st := c.Stats(); st.Queued != n+1 || st.Published != 0 {
				t.Fatalf("without a single PUBACK: Queued %d, Published %d; want %d and 0", st.Queued, st.Published, n+1)
			}
			// The broker sends its PUBACKs after forwarding to the watcher:
			// the proxy may not have read the last ones yet.
			eventually(t, fmt.Sprintf("%d PUBACKs swallowed", 2*n), func() bool { return px.swallowed.Load() >= 2*n })
			px.swallow.Store(false)
			px.cut() // the publisher resends once more and gets its PUBACKs
			eventually(t, "the readings acknowledged", func() bool { return c.Queued() == 0 })
			if st := c.Stats(); st.Published != n+1 {
				t.Errorf("Published %d, want %d", st.Published, n+1)
			}
		})
	}
}

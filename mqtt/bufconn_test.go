package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"pibridge/internal/rawio"
	"pibridge/internal/testkit"
)

// countingConn counts the reads that reach the socket.
type countingConn struct {
	net.Conn
	reads atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

// TestBufConnReadsPerPacket: paho reading a burst of publishes through
// the buffered connection reaches the socket about once per burst, where
// the bare socket is read at least three times per packet (fixed header,
// length, rest).
func TestBufConnReadsPerPacket(t *testing.T) {
	const packetsPerBurst = 50
	var burst bytes.Buffer
	for range packetsPerBurst {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.TopicName = "lab/bench"
		p.Payload = bytes.Repeat([]byte{'x'}, 64)
		if err := p.Write(&burst); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		buffered bool
		check    func(reads int64) bool
		want     string
	}{
		{"bare socket", false, func(n int64) bool { return n >= 3*packetsPerBurst }, "≥ 3 per packet"},
		{"buffered", true, func(n int64) bool { return n <= 3 }, "≤ 3 for the burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			cc := &countingConn{Conn: client}
			var conn net.Conn = cc
			if tc.buffered {
				conn = newBufConn(cc)
			}
			if _, err := server.Write(burst.Bytes()); err != nil {
				t.Fatal(err)
			}
			for i := range packetsPerBurst {
				cp, err := packets.ReadPacket(conn)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				if p, ok := cp.(*packets.PublishPacket); !ok || p.TopicName != "lab/bench" || len(p.Payload) != 64 {
					t.Fatalf("packet %d: %v", i, cp)
				}
			}
			if n := cc.reads.Load(); !tc.check(n) {
				t.Errorf("%d socket reads for %d packets, want %s", n, packetsPerBurst, tc.want)
			}
		})
	}
}

// tcpPair is a connected loopback TCP pair.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestOpenConnectionUnknownScheme(t *testing.T) {
	u, _ := url.Parse("quic://user:secret@host:1883")
	_, err := dialBroker(context.Background(), u, *paho.NewClientOptions())
	if err == nil || !strings.Contains(err.Error(), "quic://") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v, want the scheme named and the password hidden", err)
	}
}

// TestBufConnRawTCP: on a plain TCP socket the buffer is filled by raw
// reads (no wake-up of the runtime's monitor thread per message); paho
// reads the same packets through it, and the broker's close ends it.
func TestBufConnRawTCP(t *testing.T) {
	client, server := tcpPair(t)
	bc := newBufConn(client)
	if _, raw := bc.Conn.(*rawio.Conn); runtime.GOOS == "linux" && !raw {
		t.Fatal("a TCP connection does not read through rawio")
	}
	for i := range 3 {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.TopicName = fmt.Sprintf("lab/%d", i)
		p.Payload = []byte("x")
		if err := p.Write(server); err != nil {
			t.Fatal(err)
		}
		cp, err := packets.ReadPacket(bc)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if got, ok := cp.(*packets.PublishPacket); !ok || got.TopicName != p.TopicName {
			t.Fatalf("packet %d: %v", i, cp)
		}
	}
	server.Close()
	if _, err := packets.ReadPacket(bc); !errors.Is(err, io.EOF) {
		t.Fatalf("after the close: %v, want EOF", err)
	}
}

// recordingTap takes every QoS 0 publish outside cmd/ and records it.
type recordingTap struct{ taken []string }

func (r *recordingTap) wants(topic string) bool { return !strings.HasPrefix(topic, "cmd/") }

func (r *recordingTap) take(topic string, payload []byte, retained bool) {
	r.taken = append(r.taken, fmt.Sprintf("%s %d %x %v", topic, len(payload), sum(payload), retained))
}

func sum(p []byte) (s byte) {
	for _, b := range p {
		s += b
	}
	return s
}

// tapStream is a broker's side of a session: each packet with what paho
// must read of it, or the tap's record of it.
func tapStream(t *testing.T) (stream []byte, forPaho, forTap []string) {
	t.Helper()
	var b bytes.Buffer
	publish := func(topic string, qos byte, retain bool, payload []byte) {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.TopicName, p.Qos, p.Retain, p.Payload = topic, qos, retain, payload
		if qos > 0 {
			p.MessageID = 7
		}
		if err := p.Write(&b); err != nil {
			t.Fatal(err)
		}
		if qos > 0 || strings.HasPrefix(topic, "cmd/") || len(topic) > readBuffer {
			forPaho = append(forPaho, fmt.Sprintf("publish %.20s q%d", topic, qos))
		} else {
			forTap = append(forTap, fmt.Sprintf("%s %d %x %v", topic, len(payload), sum(payload), retain))
		}
	}
	other := func(kind byte, name string) {
		if err := packets.NewControlPacket(kind).Write(&b); err != nil {
			t.Fatal(err)
		}
		forPaho = append(forPaho, name)
	}
	other(packets.Connack, "connack")
	publish("lab/a", 0, false, []byte("21.5"))
	publish("cmd/led/set", 0, false, []byte("on")) // the bridge's own topic
	publish("lab/b", 1, false, []byte("qos 1"))    // acknowledged: paho's
	publish("lab/c", 0, true, bytes.Repeat([]byte{'r'}, 300))
	publish("lab/big", 0, false, testkit.Pattern(3*readBuffer)) // more than the buffer
	publish("lab/empty", 0, false, nil)
	publish(strings.Repeat("t", readBuffer+1), 0, false, []byte("x")) // a topic longer than the buffer
	other(packets.Pingresp, "pingresp")
	publish("lab/d", 0, false, testkit.Pattern(200000)) // a 3-byte remaining length
	other(packets.Suback, "suback")
	return b.Bytes(), forPaho, forTap
}

// TestBufConnTap: paho and the tap together get every packet once, in
// order, however the stream is cut: the tap the QoS 0 publishes it wants,
// paho everything else (acknowledged publishes, the bridge's own topics,
// other packets, a topic longer than the buffer).
func TestBufConnTap(t *testing.T) {
	stream, wantPaho, wantTap := tapStream(t)
	for _, tc := range []struct {
		name      string
		chunk     func(i int) int
		readAhead bool // paho's side reads in large chunks
	}{
		{"whole", func(int) int { return len(stream) }, false},
		{"a byte at a time", func(int) int { return 1 }, false},
		{"odd cuts", func(i int) int { return 1 + i*7919%13 }, false},
		{"cuts near the buffer", func(i int) int { return readBuffer - 3 + i%7 }, false},
		{"a reader that reads ahead", func(int) int { return len(stream) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			go func() {
				defer server.Close()
				for i, rest := 0, stream; len(rest) > 0; i++ {
					n := min(tc.chunk(i), len(rest))
					if _, err := server.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
				}
			}()
			tap := &recordingTap{}
			bc := newBufConn(client)
			bc.tap = tap
			var r io.Reader = bc
			if tc.readAhead {
				r = bufio.NewReaderSize(bc, 64<<10)
			}
			var gotPaho []string
			for {
				cp, err := packets.ReadPacket(r)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("after %v: %v", gotPaho, err)
				}
				switch p := cp.(type) {
				case *packets.PublishPacket:
					gotPaho = append(gotPaho, fmt.Sprintf("publish %.20s q%d", p.TopicName, p.Qos))
				case *packets.ConnackPacket:
					gotPaho = append(gotPaho, "connack")
				case *packets.PingrespPacket:
					gotPaho = append(gotPaho, "pingresp")
				case *packets.SubackPacket:
					gotPaho = append(gotPaho, "suback")
				default:
					t.Fatalf("unexpected %v", cp)
				}
			}
			if fmt.Sprint(gotPaho) != fmt.Sprint(wantPaho) {
				t.Errorf("paho read\n%q\nwant\n%q", gotPaho, wantPaho)
			}
			if fmt.Sprint(tap.taken) != fmt.Sprint(wantTap) {
				t.Errorf("the tap took\n%q\nwant\n%q", tap.taken, wantTap)
			}
		})
	}
}

// TestBufConnTapMalformed: what the tap cannot read as a whole packet is
// left to paho, which judges it; the tap never reads across a packet's end.
func TestBufConnTapMalformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream []byte
		taken  []string
	}{
		{"remaining length of five bytes", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, nil},
		// A valid packet follows, which the topic must not be read into.
		{"topic longer than the packet", []byte{0x30, 0x04, 0x00, 0x09, 'l', 'a', 0x30, 0x07, 0x00, 0x03, 'l', 'a', 'b', 'x', 'y'}, nil},
		{"cut inside the payload", []byte{0x30, 0x09, 0x00, 0x03, 'l', 'a', 'b', '1'}, nil},
		{"cut inside the header", []byte{0x30, 0x80}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			go func() {
				server.Write(tc.stream)
				server.Close()
			}()
			tap := &recordingTap{}
			bc := newBufConn(client)
			bc.tap = tap
			var err error
			for range 3 {
				if _, err = packets.ReadPacket(bc); err != nil {
					break
				}
			}
			if err == nil {
				t.Error("paho read three packets out of a malformed stream")
			}
			if fmt.Sprint(tap.taken) != fmt.Sprint(tc.taken) {
				t.Errorf("the tap took %q, want %q", tap.taken, tc.taken)
			}
		})
	}
}

// TestBufConnRawWrites: on a plain TCP socket paho's packets go out whole
// through raw writes; the deadline paho sets bounds a write to a broker
// that stops reading (a timeout error, as from the Conn), and clearing it
// keeps that bound for the next packets instead of arming a timer.
func TestBufConnRawWrites(t *testing.T) {
	client, server := tcpPair(t)
	bc := newBufConn(client)
	if _, raw := bc.Conn.(*rawio.Conn); runtime.GOOS == "linux" && !raw {
		t.Fatal("a TCP connection does not write through rawio")
	}
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload = "lab/x", 1, 9, []byte("21.5")
	if err := p.Write(bc); err != nil {
		t.Fatal(err)
	}
	cp, err := packets.ReadPacket(server)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := cp.(*packets.PublishPacket); !ok || got.TopicName != "lab/x" || string(got.Payload) != "21.5" || got.MessageID != 9 {
		t.Fatalf("the broker read %v", cp)
	}

	client.(*net.TCPConn).SetWriteBuffer(4096)
	bc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	bc.SetWriteDeadline(time.Time{}) // paho's "written": the bound stays
	big := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	big.TopicName, big.Payload = "lab/big", make([]byte, 8<<20)
	wrote := make(chan error, 1)
	go func() { wrote <- big.Write(bc) }()

	select {
	case err = <-wrote:
	case <-time.After(defaultWriteWait / 2):
		// Only the 200ms paho set, kept through its clear, ends it sooner.
		t.Fatal("the write to a broker that does not read waited past the bound paho set")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("writing 8 MiB to a broker that does not read: %v, want a timeout", err)
	}
}

// TestBufConnConcurrentWrites: paho writes from its outgoing goroutine
// and its keepalive goroutine at once; every packet arrives whole.
func TestBufConnConcurrentWrites(t *testing.T) {
	client, server := tcpPair(t)
	bc := newBufConn(client)
	const each = 500
	done := make(chan error, 2)
	go func() {
		for i := range each {
			p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			p.TopicName, p.Qos, p.MessageID, p.Payload = "lab/x", 1, uint16(i+1), bytes.Repeat([]byte{'p'}, 700)
			if err := p.Write(bc); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	go func() {
		for range each {
			if err := packets.NewControlPacket(packets.Pingreq).Write(bc); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	publishes, pings := 0, 0
	for publishes+pings < 2*each {
		cp, err := packets.ReadPacket(server)
		if err != nil {
			t.Fatalf("after %d publishes and %d pings: %v", publishes, pings, err)
		}
		switch p := cp.(type) {
		case *packets.PublishPacket:
			if p.TopicName != "lab/x" || len(p.Payload) != 700 {
				t.Fatalf("a torn publish: %v", p)
			}
			publishes++
		case *packets.PingreqPacket:
			pings++
		default:
			t.Fatalf("unexpected %v", cp)
		}
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

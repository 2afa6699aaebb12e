package mqtt

import (
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

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
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
	if runtime.GOOS == "linux" && !bc.raw {
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

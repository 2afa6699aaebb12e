package mqtt

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"pibridge/internal/rawio"
)

// readBuffer is what one read(2) may bring in: a burst of small packets,
// or one packet of up to a few KiB.
const readBuffer = 4 << 10

// bufConn reads through a buffer: paho's packets.ReadPacket reads the
// fixed header byte, each remaining-length byte and then the rest, which
// on a bare socket is one read(2) (and one netpoller wake-up) per field.
// On a plain TCP socket Conn is a rawio.Conn: the buffer is filled by raw
// read(2)s, so that a message arriving after a quiet spell costs no
// wake-up of the runtime's monitor thread, and packets go out in raw
// write(2)s, the write deadline paho sets and clears around every packet
// (two runtime timer updates each) kept as the bound a full socket arms.
type bufConn struct {
	net.Conn
	r *bufio.Reader

	tap publishTap // nil: every packet is paho's
	// pahoLeft is what paho has yet to read of its current packet: its
	// reads never reach into the next one, which the tap may take.
	pahoLeft int
}

// publishTap takes QoS 0 PUBLISH packets off the connection before paho
// parses them: wants decides by topic; take gets the message, its payload
// valid only during the call.
type publishTap interface {
	wants(topic string) bool
	take(topic string, payload []byte, retained bool)
}

var errMalformedLength = errors.New("mqtt: malformed packet: remaining length over 4 bytes")

// defaultWriteWait bounds a raw write until paho sets its write timeout.
const defaultWriteWait = 10 * time.Second

func newBufConn(c net.Conn) *bufConn {
	if rc, err := rawio.NewConn(c, defaultWriteWait, 0); err == nil {
		c = rc
	}
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBuffer)}
}

func (c *bufConn) Read(p []byte) (int, error) {
	if c.tap == nil {
		return c.r.Read(p)
	}
	if c.pahoLeft == 0 {
		n, err := c.skipTaken()
		if err != nil {
			return 0, err
		}
		c.pahoLeft = n
	}
	if len(p) > c.pahoLeft {
		p = p[:c.pahoLeft]
	}
	n, err := c.r.Read(p)
	c.pahoLeft -= n
	return n, err
}

// skipTaken gives the tap the packets it wants, up to the next one that is
// paho's, and returns that one's length. It waits only for bytes of the
// packet at hand, which paho would wait for too.
func (c *bufConn) skipTaken() (int, error) {
	for {
		first, length, header, err := c.fixedHeader()
		if err != nil {
			return 0, err
		}
		total := header + length
		// PUBLISH, QoS 0 (no packet id, no acknowledgement), DUP clear;
		// the low bit is RETAIN.
		if first&^1 != 0x30 || length < 2 {
			return total, nil
		}
		h, err := c.r.Peek(header + 2)
		if err != nil {
			return 0, err
		}
		topicEnd := header + 2 + (int(h[header])<<8 | int(h[header+1]))
		if topicEnd > total || topicEnd > c.r.Size() {
			return total, nil // malformed, or a topic of over 4 KiB: paho's to judge
		}
		if h, err = c.r.Peek(topicEnd); err != nil {
			return 0, err
		}
		topic := string(h[header+2:])
		if !c.tap.wants(topic) {
			return total, nil
		}
		retained := first&1 != 0
		if total <= c.r.Size() {
			pkt, err := c.r.Peek(total)
			if err != nil {
				return 0, err
			}
			c.tap.take(topic, pkt[topicEnd:], retained)
			c.r.Discard(total)
			continue
		}
		c.r.Discard(topicEnd)
		payload := make([]byte, total-topicEnd)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return 0, err
		}
		c.tap.take(topic, payload, retained)
	}
}

// fixedHeader peeks at the next packet's first byte and remaining length
// and says how many bytes the two take. A remaining length of n bytes
// means at least 128^(n-1) more, so no peek waits beyond the packet.
func (c *bufConn) fixedHeader() (first byte, length, size int, err error) {
	for n := 1; n <= 4; n++ {
		h, err := c.r.Peek(1 + n)
		if err != nil {
			return 0, 0, 0, err
		}
		b := h[n]
		length |= int(b&0x7f) << (7 * (n - 1))
		if b&0x80 == 0 {
			return h[0], length, 1 + n, nil
		}
	}
	return 0, 0, 0, errMalformedLength
}

var errUnknownScheme = errors.New("unknown scheme: want tcp, ssl, ws or wss")

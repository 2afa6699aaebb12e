package mqtt

import (
	"bufio"
	"errors"
	"net"

	"pibridge/internal/rawio"
)

// readBuffer is what one read(2) may bring in: a burst of small packets,
// or one packet of up to a few KiB.
const readBuffer = 4 << 10

// bufConn reads through a buffer: paho's packets.ReadPacket reads the
// fixed header byte, each remaining-length byte and then the rest, which
// on a bare socket is one read(2) (and one netpoller wake-up) per field.
// On a plain TCP socket the buffer is filled by raw read(2)s (see
// rawio): a message arriving after a quiet spell then costs no wake-up of
// the runtime's monitor thread.
type bufConn struct {
	net.Conn
	r   *bufio.Reader
	raw bool // r is filled by raw reads
}

func newBufConn(c net.Conn) *bufConn {
	if r, err := rawio.NewReader(c); err == nil {
		return &bufConn{Conn: c, r: bufio.NewReaderSize(r, readBuffer), raw: true}
	}
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBuffer)}
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

var errUnknownScheme = errors.New("unknown scheme: want tcp, ssl, ws or wss")

package rawio

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// Conn is a plain TCP or Unix socket read and written with raw calls (see
// the package comment), for code that holds it as a net.Conn.
//
// Writes may come from several goroutines; each is whole. The write
// deadline its holder sets is kept as the bound of a write that has to
// wait for room: a write that completes at once, the usual case, touches
// no timer. A zero deadline keeps the bound as it is.
type Conn struct {
	net.Conn
	rc syscall.RawConn
	r  *Reader

	wmu       sync.Mutex
	w         Writer
	writeWait time.Duration

	// readSlack lets a read deadline that moves later by less than this
	// stay where it is; see NewConn.
	readSlack time.Duration
	rmu       sync.Mutex
	readUntil time.Time // the deadline on the socket
}

// NewConn wraps c, or returns ErrUnsupported when c is not a plain TCP or
// Unix socket or the platform has no raw calls. writeWait bounds a write
// until a write deadline is set. With readSlack > 0, a read deadline is
// moved only when it would come earlier or more than readSlack later, and
// then to readSlack beyond what was asked: a peer refreshing its deadline
// on every packet costs a timer update a readSlack, and the deadline
// passes at most readSlack late.
func NewConn(c net.Conn, writeWait, readSlack time.Duration) (*Conn, error) {
	r, err := NewReader(c)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, rc: r.rc, r: r, writeWait: writeWait, readSlack: readSlack}, nil
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.w.Write(c.rc, p, c.Conn, c.writeWait); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetWriteDeadline keeps what is left until t as the bound of the next
// writes; a zero t keeps the bound as it is.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		c.wmu.Lock()
		c.writeWait = max(time.Until(t), time.Millisecond)
		c.wmu.Unlock()
	}
	return nil
}

// SetReadDeadline sets the read deadline, within readSlack (see NewConn).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	// A deadline already due (one that unblocks a read) applies as it is.
	if c.readSlack > 0 && t.After(time.Now()) {
		if !c.readUntil.IsZero() && !c.readUntil.Before(t) && c.readUntil.Sub(t) <= c.readSlack {
			return nil
		}
		t = t.Add(c.readSlack)
	}
	c.readUntil = t
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

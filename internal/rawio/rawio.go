// Package rawio reads and writes non-blocking sockets with raw system
// calls, outside the Go runtime's system-call bookkeeping.
//
// A read or write on a net.Conn enters the runtime's syscall state, and
// the first one after the process was idle wakes the runtime's monitor
// thread (sysmon), which then polls every 20 µs until the process is idle
// again: at a message every millisecond that is two or three context
// switches per message, more than the message's own work. The sockets are
// non-blocking, so a read or write returns at once and needs none of that
// bookkeeping; waiting for readiness still goes through the netpoller
// (syscall.RawConn), which also keeps the descriptor from being closed
// and reused under the call.
package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// ErrUnsupported is returned by NewReader where raw calls are not built in.
var ErrUnsupported = errors.New("rawio: not supported on this platform")

// Writer writes through raw write(2)s. One Writer may serve many
// sockets, one call at a time; its zero value is ready.
type Writer struct {
	p     []byte
	errno syscall.Errno
	d     Deadliner
	wait  time.Duration
	armed bool                  // the deadline was set by this call
	fn    func(fd uintptr) bool // w.write, made once: a call allocates nothing
}

// Deadliner is the part of a net.Conn that Write needs.
type Deadliner interface {
	SetWriteDeadline(time.Time) error
}

// Write writes all of p as net.Conn.Write would, under the descriptor's
// write lock, so that no other write to the socket lands inside p: raw
// write(2)s, and when the socket is full, a wait for room in the
// netpoller. Only then is a deadline set (d.SetWriteDeadline(now + wait),
// and cleared once p is out): a write that completes at once, the usual
// case, sets no timer. The error of a deadline is a net.Error whose
// Timeout is true.
func (w *Writer) Write(rc syscall.RawConn, p []byte, d Deadliner, wait time.Duration) error {
	if len(p) == 0 {
		return nil
	}
	if w.fn == nil {
		w.fn = w.write
	}
	w.p, w.errno, w.d, w.wait, w.armed = p, 0, d, wait, false
	err := rc.Write(w.fn)
	errno, armed := w.errno, w.armed
	w.p, w.d = nil, nil
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	if err == nil && armed {
		err = d.SetWriteDeadline(time.Time{})
	}
	return err
}

// write is called with the descriptor's write lock held, until it
// returns true.
func (w *Writer) write(fd uintptr) bool {
	for len(w.p) > 0 {
		n, errno := rawWrite(fd, w.p)
		if errno == syscall.EAGAIN || (errno == 0 && n == 0) {
			break
		}
		if errno != 0 {
			w.errno = errno
			return true
		}
		w.p = w.p[n:]
	}
	if len(w.p) == 0 {
		return true
	}
	if !w.armed {
		// SetWriteDeadline does not take the write lock: it may run here.
		w.armed = true
		w.d.SetWriteDeadline(time.Now().Add(w.wait))
	}
	return false // wait for room
}

// Reader is a net.Conn's reading side through raw read(2)s; it waits for
// data in the netpoller like the Conn would, and honours its read
// deadline. One reader goroutine at a time.
type Reader struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// NewReader returns a Reader for c, or ErrUnsupported when c is not a
// plain TCP or Unix socket or the platform has no raw calls.
func NewReader(c net.Conn) (*Reader, error) {
	rc, err := RawConn(c)
	if err != nil {
		return nil, err
	}
	r := &Reader{rc: rc}
	r.fn = r.read
	return r, nil
}

// RawConn returns the raw connection of a plain TCP or Unix socket, or
// ErrUnsupported.
func RawConn(c net.Conn) (syscall.RawConn, error) {
	if !supported {
		return nil, ErrUnsupported
	}
	switch c := c.(type) {
	case *net.TCPConn:
		return c.SyscallConn()
	case *net.UnixConn:
		return c.SyscallConn()
	}
	return nil, ErrUnsupported
}

func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.errno = p, 0, 0
	err := r.rc.Read(r.fn)
	n, errno := r.n, r.errno
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *Reader) read(fd uintptr) bool {
	r.n, r.errno = rawRead(fd, r.p)
	return r.errno != syscall.EAGAIN // else wait for data and try again
}

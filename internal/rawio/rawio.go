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
)

// ErrUnsupported is returned by NewReader where raw calls are not built in.
var ErrUnsupported = errors.New("rawio: not supported on this platform")

// Writer makes single non-blocking write attempts. One Writer may serve
// many sockets, one call at a time; its zero value is ready.
type Writer struct {
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // w.write, made once: a call allocates nothing
}

// TryWrite writes what one write(2) takes of p and never waits for room:
// it returns the bytes written, fewer than len(p) when the socket's
// buffer is full. err is a failure of the socket (or its write deadline
// having passed), never "would block".
func (w *Writer) TryWrite(rc syscall.RawConn, p []byte) (n int, err error) {
	if len(p) == 0 {
		return 0, nil
	}
	if w.fn == nil {
		w.fn = w.write
	}
	w.p, w.n, w.errno = p, 0, 0
	err = rc.Write(w.fn)
	n, errno := w.n, w.errno
	w.p = nil
	if err != nil {
		return 0, err
	}
	switch errno {
	case 0, syscall.EAGAIN:
		return n, nil
	}
	return n, os.NewSyscallError("write", errno)
}

func (w *Writer) write(fd uintptr) bool {
	w.n, w.errno = rawWrite(fd, w.p)
	return true // one attempt: never wait
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

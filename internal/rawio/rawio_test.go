package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"pibridge/internal/testkit"
)

func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(got)
			return
		}
		got <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-got
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// smallSendBuffer gives a connected pair whose sending side's buffer is
// small, so that a write of a megabyte must wait for the peer.
func smallSendBuffer(t *testing.T) (a, b *net.TCPConn, rc syscall.RawConn) {
	t.Helper()
	a, b = tcpPair(t)
	a.SetWriteBuffer(4096)
	rc, err := RawConn(a)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, rc
}

// readInBackground reads exactly n bytes from c and hands them over.
func readInBackground(c net.Conn, n int) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, n)
		io.ReadFull(c, buf)
		got <- buf
	}()
	return got
}

func skipUnsupported(t *testing.T) {
	if !supported {
		t.Skipf("no raw calls on %s", runtime.GOOS)
	}
}

// countingDeadliner counts the deadlines Write sets.
type countingDeadliner struct {
	net.Conn
	set, cleared int
}

func (d *countingDeadliner) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		d.cleared++
	} else {
		d.set++
	}
	return d.Conn.SetWriteDeadline(t)
}

// TestWrite: a write the socket takes at once sets no deadline; one that
// fills the socket waits for the peer to read, arms the deadline and
// clears it after; the peer gets every byte once, in order.
func TestWrite(t *testing.T) {
	skipUnsupported(t)
	a, b, rc := smallSendBuffer(t)
	d := &countingDeadliner{Conn: a}
	var w Writer
	if err := w.Write(rc, []byte("hello"), d, time.Second); err != nil {
		t.Fatal(err)
	}
	if d.set != 0 || d.cleared != 0 {
		t.Fatalf("a write taken at once set %d and cleared %d deadlines, want none", d.set, d.cleared)
	}
	big := testkit.Pattern(1 << 20) // more than the sending socket's buffer
	got := readInBackground(b, 5+len(big))
	if err := w.Write(rc, big, d, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d.set != 1 || d.cleared != 1 {
		t.Fatalf("a write that filled the socket set %d and cleared %d deadlines, want 1 and 1", d.set, d.cleared)
	}
	if buf := <-got; string(buf[:5]) != "hello" || !bytes.Equal(buf[5:], big) {
		t.Fatal("the peer did not read every byte once, in order")
	}
}

// TestWriteDeadline: a peer that never reads makes Write fail with a
// timeout once the wait has passed; what the peer gets is a prefix of p.
// A deadline already passed (set by someone else) fails at once, and so
// does a closed connection.
func TestWriteDeadline(t *testing.T) {
	skipUnsupported(t)
	a, b, rc := smallSendBuffer(t)
	var w Writer
	big := testkit.Pattern(4 << 20)
	var ne net.Error
	if err := w.Write(rc, big, a, 100*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Write to a peer that does not read: %v, want a timeout", err)
	}
	a.CloseWrite()
	prefix, err := io.ReadAll(b)
	if err != nil || len(prefix) == 0 || len(prefix) >= len(big) || !bytes.Equal(prefix, big[:len(prefix)]) {
		t.Fatalf("the peer read %d bytes (%v), want a proper prefix of what was written", len(prefix), err)
	}

	c, _ := tcpPair(t)
	rc, _ = RawConn(c)
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := w.Write(rc, []byte("x"), c, time.Second); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past a deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	c.Close()
	if err := w.Write(rc, []byte("x"), c, time.Second); err == nil {
		t.Fatal("Write on a closed connection succeeded")
	}
}

// TestWriteIsNotInterleaved: a Write that waits for room holds the
// socket: a net.Conn.Write from elsewhere lands before or after it,
// never inside.
func TestWriteIsNotInterleaved(t *testing.T) {
	skipUnsupported(t)
	a, b, rc := smallSendBuffer(t)
	const size = 1 << 20
	raw, other := bytes.Repeat([]byte{'r'}, size), bytes.Repeat([]byte{'o'}, size)
	got := readInBackground(b, 2*size)
	done := make(chan error, 1)
	go func() {
		var w Writer
		done <- w.Write(rc, raw, a, 5*time.Second)
	}()
	if _, err := a.Write(other); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	buf := <-got
	if runs := 1 + bytes.Count(buf, []byte("ro")) + bytes.Count(buf, []byte("or")); runs != 2 {
		t.Fatalf("the two writes were cut into %d runs, want 2", runs)
	}
}

// TestReader: the Reader waits for data in the netpoller, returns what
// arrived, honours the read deadline and reports the peer's close as EOF.
func TestReader(t *testing.T) {
	skipUnsupported(t)
	a, b := tcpPair(t)
	r, err := NewReader(a)
	if err != nil {
		t.Fatal(err)
	}
	// A read that waits for its data: the write comes from another
	// goroutine once the reader is running.
	started := make(chan struct{})
	go func() {
		<-started
		b.Write([]byte("hello"))
	}()
	buf := make([]byte, 64)
	close(started)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v", err)
	}
	a.SetReadDeadline(time.Time{})
	b.Write([]byte("bye"))
	b.Close()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want \"bye\" then EOF", got, err)
	}
}

// TestRawConnOnlyPlainSockets: a wrapped or TLS connection has no raw
// path; its callers keep the Conn's own.
func TestRawConnOnlyPlainSockets(t *testing.T) {
	skipUnsupported(t)
	a, _ := tcpPair(t)
	type wrapped struct{ net.Conn }
	if _, err := RawConn(wrapped{a}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("RawConn(wrapped) = %v, want ErrUnsupported", err)
	}
	if _, err := NewReader(wrapped{a}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("NewReader(wrapped) = %v, want ErrUnsupported", err)
	}
}

// TestNoAllocations: a write or read allocates nothing.
func TestNoAllocations(t *testing.T) {
	skipUnsupported(t)
	a, b := tcpPair(t)
	rc, _ := RawConn(a)
	r, _ := NewReader(b)
	var w Writer
	p := []byte("0123456789")
	buf := make([]byte, 64)
	w.Write(rc, p, a, time.Second) // warm
	r.Read(buf)
	if n := testing.AllocsPerRun(100, func() {
		w.Write(rc, p, a, time.Second)
		r.Read(buf)
	}); n != 0 {
		t.Fatalf("%v allocations per write and read, want 0", n)
	}
}

// TestReaderLocalClose: a read blocked when the connection is closed
// under it fails as the Conn's own would, with the text paho looks for to
// tell a deliberate close from a broken connection.
func TestReaderLocalClose(t *testing.T) {
	skipUnsupported(t)
	a, _ := tcpPair(t)
	r, err := NewReader(a)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 16))
		done <- err
	}()
	a.Close()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "use of closed network connection") {
			t.Fatalf("Read after Close: %v, want net.ErrClosed (\"use of closed network connection\")", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked Read did not end with Close")
	}
}

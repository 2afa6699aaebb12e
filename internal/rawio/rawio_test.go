package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
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

func skipUnsupported(t *testing.T) {
	if !supported {
		t.Skipf("no raw calls on %s", runtime.GOOS)
	}
}

// TestTryWriteNeverWaits: TryWrite writes all of p while the socket has
// room, and once the peer stops reading it returns short (finally 0)
// without an error and without waiting; the peer then reads exactly the
// bytes TryWrite reported, in order.
func TestTryWriteNeverWaits(t *testing.T) {
	skipUnsupported(t)
	a, b := tcpPair(t)
	a.SetWriteBuffer(4096)
	b.SetReadBuffer(4096)
	rc, err := RawConn(a)
	if err != nil {
		t.Fatal(err)
	}
	var w Writer
	chunk := make([]byte, 1000)
	var sent bytes.Buffer
	short := false
	start := time.Now()
	for i := 0; !short; i++ {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the socket never filled")
		}
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		n, err := w.TryWrite(rc, chunk)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		sent.Write(chunk[:n])
		short = n < len(chunk)
	}
	// Full: further tries return at once with nothing written.
	for range 3 {
		t0 := time.Now()
		n, err := w.TryWrite(rc, chunk)
		if err != nil || n != 0 {
			t.Fatalf("TryWrite on a full socket = %d, %v; want 0, nil", n, err)
		}
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("TryWrite on a full socket took %v", d)
		}
	}
	a.CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatalf("peer read %d bytes, not the %d TryWrite reported written (or not in order)", len(got), sent.Len())
	}
}

// TestTryWriteErrors: a passed write deadline and a closed connection are
// errors, the first one a timeout like the Conn's own.
func TestTryWriteErrors(t *testing.T) {
	skipUnsupported(t)
	a, _ := tcpPair(t)
	rc, err := RawConn(a)
	if err != nil {
		t.Fatal(err)
	}
	var w Writer
	a.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := w.TryWrite(rc, []byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: %v, want a deadline error", err)
	}
	var ne net.Error
	if _, err := w.TryWrite(rc, []byte("x")); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("past deadline: %v is not a net.Error timeout", err)
	}
	a.SetWriteDeadline(time.Time{})
	if n, err := w.TryWrite(rc, []byte("x")); n != 1 || err != nil {
		t.Fatalf("deadline cleared: %d, %v", n, err)
	}
	a.Close()
	if _, err := w.TryWrite(rc, []byte("x")); err == nil {
		t.Fatal("TryWrite on a closed connection succeeded")
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
	w.TryWrite(rc, p) // warm
	r.Read(buf)
	if n := testing.AllocsPerRun(100, func() {
		w.TryWrite(rc, p)
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

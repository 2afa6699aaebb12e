package ws

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"pibridge"
)

// HTTPS (README "HTTPS"): the certificate is read from http.tls's files,
// and read again when they change, so that a renewal needs no restart. One
// port serves both: a TLS handshake gets the panel, a plain HTTP request
// gets a redirect to https (see Protect).

// certCheckEvery bounds how often a handshake looks at the files' size and
// modification time: a renewal takes effect within it, and a busy server
// stats the files at most once in it.
const certCheckEvery = 2 * time.Second

// CheckFiles looks at the files the section names, so that -check and
// start both report a missing or unreadable token_file and a missing,
// unreadable or mismatched certificate, naming the field (http.…).
// Validate does no I/O.
func (c Config) CheckFiles() error {
	var p pibridge.Problems
	if c.TokenFile != "" {
		p.Add("http.token_file", pibridge.CheckFile(c.TokenFile))
	}
	if c.TLS.Enabled() {
		_, err := loadKeyPair(c.TLS)
		p.Add("", err)
	}
	return p.Err()
}

// loadKeyPair is ServerTLS.LoadKeyPair with the paths from the file's root.
func loadKeyPair(t pibridge.ServerTLS) (*tls.Certificate, error) {
	cert, err := t.LoadKeyPair()
	var fe *pibridge.FieldError
	if errors.As(err, &fe) {
		return nil, &pibridge.FieldError{Path: "http.tls." + fe.Path, Msg: fe.Msg}
	}
	return cert, err
}

// fileStamp tells whether a file may have changed.
type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{size: -1}
	}
	return fileStamp{size: fi.Size(), mod: fi.ModTime()}
}

// certSource is tls.Config.GetCertificate for http.tls: the key pair, read
// again when either file's size or modification time changes, looked at
// no more than once per certCheckEvery. A pair that fails to load (say,
// the certificate is renewed but the key not yet) is logged and the last
// good one kept; the next change is tried again.
type certSource struct {
	files pibridge.ServerTLS
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // the one handshake that checks; the others go on
	checked time.Time
	stamps  [2]fileStamp // of the pair last tried
}

func newCertSource(files pibridge.ServerTLS, log *slog.Logger, now func() time.Time) (*certSource, error) {
	c := &certSource{files: files, log: log, every: certCheckEvery, now: now}
	c.stamps = c.stamp()
	cert, err := loadKeyPair(files)
	if err != nil {
		return nil, err
	}
	c.cert.Store(cert)
	c.checked = now()
	return c, nil
}

func (c *certSource) stamp() [2]fileStamp {
	return [2]fileStamp{stampOf(c.files.CertFile), stampOf(c.files.KeyFile)}
}

// get is the GetCertificate callback.
func (c *certSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c.mu.TryLock() {
		// A clock set back counts as time passed.
		if now := c.now(); now.Sub(c.checked) >= c.every || now.Before(c.checked) {
			c.checked = now
			c.refresh()
		}
		c.mu.Unlock()
	}
	return c.cert.Load(), nil
}

func (c *certSource) refresh() {
	st := c.stamp()
	if st == c.stamps {
		return
	}
	c.stamps = st
	cert, err := loadKeyPair(c.files)
	if err != nil {
		c.log.Warn("the changed certificate does not load: keeping the previous one", "err", err)
		return
	}
	c.cert.Store(cert)
	c.log.Info("certificate reloaded", "cert_file", c.files.CertFile)
}

// tlsConfig is the server side of http.tls: TLS 1.2 or later, HTTP/1.1
// only, because WebSocket upgrades need it (gorilla hijacks the connection).
func (c *certSource) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.get,
		NextProtos:     []string{"http/1.1"},
	}
}

// Listen listens on http.listen. With http.tls set, the listener serves
// TLS and plain connections on the same port: a connection whose first
// byte starts a TLS handshake is handed out as a *tls.Conn (so net/http
// fills Request.TLS), any other as it is, for Protect to redirect to
// https. firstByteWait bounds how long a connection may stay silent before
// it is closed unseen (use the server's ReadHeaderTimeout).
func (s *Server) Listen(firstByteWait time.Duration) (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, err
	}
	if s.certs == nil {
		return ln, nil
	}
	return newSplitListener(ln, s.certs.tlsConfig(), firstByteWait), nil
}

// splitListener sorts accepted connections into TLS and plain ones. Its
// accept goroutine, started by the first Accept, ends when the listener
// is closed; a goroutine per
// connection waits for the first byte, so that a silent client holds
// nobody else up.
type splitListener struct {
	net.Listener
	cfg  *tls.Config
	wait time.Duration

	out   chan accepted
	done  chan struct{}
	once  sync.Once
	start sync.Once // the accept goroutine

	mu      sync.Mutex
	sorting map[net.Conn]struct{} // waiting for their first byte
}

type accepted struct {
	c   net.Conn
	err error
}

func newSplitListener(ln net.Listener, cfg *tls.Config, wait time.Duration) *splitListener {
	return &splitListener{Listener: ln, cfg: cfg, wait: wait, out: make(chan accepted),
		done: make(chan struct{}), sorting: make(map[net.Conn]struct{})}
}

func (l *splitListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// Temporary errors (out of file descriptors) go to the caller,
			// whose back-off paces this loop too.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				select {
				case l.out <- accepted{err: err}:
					continue
				case <-l.done:
					return
				}
			}
			l.Close()
			return
		}
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			c.Close()
			return
		default:
		}
		l.sorting[c] = struct{}{}
		l.mu.Unlock()
		go l.sort(c)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// sort reads the first byte: 0x16 is a TLS handshake record.
func (l *splitListener) sort(c net.Conn) {
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(l.wait))
	_, err := io.ReadFull(c, b[:])
	c.SetReadDeadline(time.Time{})
	l.mu.Lock()
	delete(l.sorting, c)
	l.mu.Unlock()
	if err != nil {
		c.Close()
		return
	}
	var out net.Conn = &peekedConn{Conn: c, first: b[0], pending: true}
	if b[0] == 0x16 {
		out = tls.Server(out, l.cfg)
	}
	select {
	case l.out <- accepted{c: out}:
	case <-l.done:
		c.Close()
	}
}

func (l *splitListener) Accept() (net.Conn, error) {
	// Started by the first Accept (the server's Run), so that a listener
	// opened and closed without serving leaves no goroutine.
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case a := <-l.out:
		return a.c, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *splitListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		l.mu.Lock()
		close(l.done)
		for c := range l.sorting {
			c.Close()
		}
		l.mu.Unlock()
		err = l.Listener.Close()
	})
	return err
}

// peekedConn gives back the byte the listener read.
type peekedConn struct {
	net.Conn
	first   byte
	pending bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.pending && len(p) > 0 {
		c.pending = false
		p[0] = c.first
		return 1, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite keeps drainAndClose's half-close working through the wrapper.
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

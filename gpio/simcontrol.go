package gpio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// SimControl drives the sim board's inputs from outside the process: every
// datagram "<input> <0|1>" on a unix datagram socket is one DriveInput, so
// a script, a Node-RED flow or a benchmark can press a simulated button
// and watch the automation react, without hardware. It is a development
// aid: it refuses any board but sim, and only inputs move (DriveInput
// refuses outputs, pwm and sensors).
type SimControl struct {
	board *Board
	log   *slog.Logger
	conn  *net.UnixConn
	path  string
	now   func() time.Time // for the log rate limit; tests replace it

	accepted, rejected atomic.Uint64

	// Owned by Run's goroutine: the bad-datagram log rate limit.
	lastWarn   time.Time
	suppressed uint64

	closeOnce sync.Once
	closeErr  error
}

// maxDatagram is longer than any valid datagram (a name is at most 32
// bytes): a longer one is read truncated and refused.
const maxDatagram = 64

// simWarnEvery bounds the warnings about bad datagrams to one per this
// long; the ones in between are counted in the next warning.
const simWarnEvery = 10 * time.Second

// ListenSimControl opens the control socket of board b at path, mode 0600
// (only this user may drive the inputs). A stale socket left at path by a
// crash is replaced; a socket another process still listens on, or a file
// that is not a socket, is an error. Run serves it; Close (or the end of
// Run) closes it and removes path.
func ListenSimControl(path string, b *Board, log *slog.Logger) (*SimControl, error) {
	if !b.sim {
		return nil, fmt.Errorf("sim control: board is %s: only the inputs of board sim can be driven", b.cfg.Board)
	}
	if path == "" {
		return nil, errors.New("sim control: empty socket path")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("sim control %s: %w", path, err)
	}
	// Bind inside a private directory, set the mode, then rename into
	// place: the socket is never reachable with the umask's mode, which
	// chmod after a bind at path would allow for a moment.
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".pibridge-sim-")
	if err != nil {
		return nil, fmt.Errorf("sim control %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: bound, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("sim control %s: %w", path, err)
	}
	if err := os.Chmod(bound, 0o600); err != nil {
		conn.Close()
		return nil, fmt.Errorf("sim control %s: %w", path, err)
	}
	if err := os.Rename(bound, path); err != nil {
		conn.Close()
		return nil, fmt.Errorf("sim control %s: %w", path, err)
	}
	log.Info("sim control listening: datagrams \"<input> <0|1>\" drive inputs", "socket", path)
	return &SimControl{board: b, log: log, conn: conn, path: path, now: time.Now}, nil
}

// removeStaleSocket clears path for a new socket: nothing there is fine; a
// socket nobody listens on (left by a crash) is removed.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return errors.New("exists and is not a socket; not replacing it")
	}
	if c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"}); err == nil {
		c.Close()
		return errors.New("another process listens on this socket")
	}
	return os.Remove(path)
}

// Run serves datagrams until ctx ends, then closes the socket and removes
// its path. A bad datagram is refused, counted and logged (at most one
// warning per 10 s), never fatal; Run returns an error only when the
// socket itself fails.
func (c *SimControl) Run(ctx context.Context) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	defer stop()
	buf := make([]byte, maxDatagram+1)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("sim control %s: %w", c.path, err)
		}
		if err := c.handle(buf[:n]); err != nil {
			// Counted after the warning: whoever sees the count sees the log too.
			c.warn(buf[:n], err)
			c.rejected.Add(1)
			continue
		}
		c.accepted.Add(1)
	}
}

// handle applies one datagram: "<input> <0|1>", a trailing newline
// allowed (echo and socat send one).
func (c *SimControl) handle(d []byte) error {
	if len(d) > maxDatagram {
		return fmt.Errorf("longer than %d bytes", maxDatagram)
	}
	d = bytes.TrimSuffix(bytes.TrimSuffix(d, []byte{'\n'}), []byte{'\r'})
	name, v, ok := bytes.Cut(d, []byte{' '})
	if !ok || len(name) == 0 || len(v) != 1 || v[0] != '0' && v[0] != '1' {
		return errors.New(`want "<input> <0|1>"`)
	}
	return c.board.DriveInput(string(name), v[0] == '1')
}

// warn logs a refused datagram, or counts it when a warning went out less
// than simWarnEvery ago: a runaway script must not flood the journal.
func (c *SimControl) warn(d []byte, err error) {
	now := c.now()
	if !c.lastWarn.IsZero() && now.Sub(c.lastWarn) < simWarnEvery {
		c.suppressed++
		return
	}
	c.log.Warn("sim control: datagram refused", "datagram", fmt.Sprintf("%.64q", d), "err", err, "suppressed_since_last", c.suppressed)
	c.lastWarn, c.suppressed = now, 0
}

// Stats counts the datagrams applied and refused since the start.
func (c *SimControl) Stats() (accepted, rejected uint64) {
	return c.accepted.Load(), c.rejected.Load()
}

// Close closes the socket and removes its path; Run calls it on its way
// out. Calling it again is harmless.
func (c *SimControl) Close() error {
	c.closeOnce.Do(func() {
		err := c.conn.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		if e := os.Remove(c.path); e != nil && !errors.Is(e, fs.ErrNotExist) {
			err = errors.Join(err, e)
		}
		c.closeErr = err
	})
	return c.closeErr
}

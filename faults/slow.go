package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

const slowConfig = `device: {id: faults, name: "pibridge faults"}
board: sim
http: {listen: "127.0.0.1:0", max_clients: %d}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:0", topic_prefix: pibridge, homeassistant: {discovery: false}}
outputs:
  - {name: led, pin: GPIO22, initial: "off", safe: "off"}
sensors:
  - {name: t1, type: sim, interval: 10ms}
`

// latencies collects a normal client's reading latencies (its wall clock
// at receipt − the reading's ms ts) while on is set.
type latencies struct {
	mu  sync.Mutex
	on  bool
	got []time.Duration
}

func (l *latencies) add(f *frame, at time.Time) {
	if f.Type != "reading" {
		return
	}
	ts, err := parseTS(f.TS)
	if err != nil {
		return
	}
	l.mu.Lock()
	if l.on {
		l.got = append(l.got, at.Sub(ts))
	}
	l.mu.Unlock()
}

// window records for d (or until ctx ends) and returns what came in.
func (l *latencies) window(ctx context.Context, d time.Duration) ([]time.Duration, error) {
	l.mu.Lock()
	l.on, l.got = true, nil
	l.mu.Unlock()
	err := harness.Sleep(ctx, d)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = false
	return l.got, err
}

// slowClients is fault 3: o.slow slowloris HTTP clients (a request
// header one byte a second) and o.slow WebSocket clients that never read
// while a sim sensor streams 100 readings/s. The daemon must close them
// in time (http.Server.ReadHeaderTimeout; the WebSocket write deadline),
// keep its fd count bounded, and keep serving a normal client.
func slowClients(ctx context.Context, s *suite) (harness.Table, error) {
	n := s.o.slow
	dm, err := s.spec.Start(ctx, "f3", fmt.Sprintf(slowConfig, n+n/10+16))
	if err != nil {
		return harness.Table{}, err
	}
	defer dm.Stop()
	var lat latencies
	normal, err := observe(ctx, dm.WSURL, func(f *frame, _ []byte, at time.Time) { lat.add(f, at) })
	if err != nil {
		return harness.Table{}, err
	}
	defer normal.close()
	if err := harness.Sleep(ctx, time.Second); err != nil { // warm-up
		return harness.Table{}, err
	}
	fd0, err := harness.FDCount(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	met0, err := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
	if err != nil {
		return harness.Table{}, err
	}
	before, err := lat.window(ctx, s.o.window)
	if err != nil {
		return harness.Table{}, err
	}

	// The attack, with a sampler of the daemon's fds.
	actx, stopAttack := context.WithCancel(ctx)
	defer stopAttack()
	var fdPeak int
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if c, err := harness.FDCount(dm.PID); err == nil {
				fdPeak = max(fdPeak, c)
			}
			select {
			case <-actx.Done():
				return
			case <-t.C:
			}
		}
	})
	attackStart := time.Now()
	lat.mu.Lock()
	lat.on, lat.got = true, nil
	lat.mu.Unlock()

	// Slowloris: connect, send a request line and one header byte a second.
	lorisClosed := make([]time.Duration, n) // connect → EOF; 0 = not closed
	var lorisErr []error
	var lorisMu sync.Mutex
	var loris sync.WaitGroup
	for i := range n {
		loris.Go(func() {
			c, err := net.DialTimeout("tcp", dm.HTTPAddr, 10*time.Second)
			if err != nil {
				lorisMu.Lock()
				lorisErr = append(lorisErr, err)
				lorisMu.Unlock()
				return
			}
			t0 := time.Now()
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				b := make([]byte, 512)
				for {
					if _, err := c.Read(b); err != nil {
						if actx.Err() == nil { // closed by the daemon, not by us
							lorisClosed[i] = time.Since(t0)
						}
						return
					}
				}
			}()
			defer func() { c.Close(); <-closed }()
			if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")); err != nil {
				return
			}
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-closed:
					return
				case <-actx.Done():
					return
				case <-tick.C:
					if _, err := c.Write([]byte("a")); err != nil {
						return
					}
				}
			}
		})
	}

	// WebSocket clients that upgrade and never read; a small receive
	// buffer fills their socket in well under a second.
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			if err != nil {
				return err
			}
			return serr
		}}
		return d.Dial(network, addr)
	}}
	deaf := make([]*websocket.Conn, 0, n)
	var deafErr []error
	var deafMu sync.Mutex
	var dials sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range n {
		dials.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, _, err := dialer.DialContext(actx, dm.WSURL, nil)
			deafMu.Lock()
			defer deafMu.Unlock()
			if err != nil {
				deafErr = append(deafErr, err)
				return
			}
			deaf = append(deaf, c)
		})
	}
	dials.Wait()
	upgraded := time.Now()
	defer func() {
		for _, c := range deaf {
			c.NetConn().Close()
		}
	}()

	// Server side: every deaf client closed (pibridge_ws_clients back to
	// the normal client alone) by the write deadline after their sockets
	// filled; the gauge gives the closing times.
	wsLimit := s.o.pongWait + 15*time.Second
	var wsClosedAt time.Duration
	var wsCloses []time.Duration
	lastClients := float64(len(deaf) + 1)
	wsErr := poll(ctx, wsLimit, 100*time.Millisecond, "the deaf WebSocket clients closed", func() (bool, error) {
		m, err := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
		if err != nil {
			return false, err
		}
		c := m.Get("pibridge_ws_clients")
		for ; lastClients > c; lastClients-- {
			wsCloses = append(wsCloses, time.Since(upgraded))
		}
		if c <= 1 {
			wsClosedAt = time.Since(upgraded)
			return true, nil
		}
		return false, nil
	})
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	lorisLimit := s.o.readHeaderTimeout + 5*time.Second
	lorisDone := make(chan struct{})
	go func() { loris.Wait(); close(lorisDone) }()
	select {
	case <-lorisDone:
	case <-time.After(lorisLimit):
		stopAttack()
		<-lorisDone
	case <-ctx.Done():
		stopAttack()
		<-lorisDone
		return harness.Table{}, ctx.Err()
	}
	lat.mu.Lock()
	during := lat.got
	lat.on = false
	lat.mu.Unlock()
	attackLen := time.Since(attackStart)

	// Phase 2, after the attack above has been measured on its own:
	// a tenth as many never-reading clients that also send commands
	// without pause: their replies fill the mailbox's bounded reply queue,
	// and the daemon must close them (1008) and count them as slow, within
	// the write deadline once their sockets are full.
	nf := max(1, n/10)
	floodLimit := s.o.writeWait + 10*time.Second
	var floodErr atomic.Value
	var flooders sync.WaitGroup
	floodStart := time.Now()
	for range nf {
		c, _, err := dialer.DialContext(actx, dm.WSURL, nil)
		if err != nil {
			floodErr.Store(err)
			break
		}
		flooders.Go(func() {
			stop := context.AfterFunc(actx, func() { c.NetConn().Close() }) // unblocks a write
			defer stop()
			// The 16 KiB id comes back in each error reply: the
			// socket fills in moments, then the reply queue (256 KiB).
			msg := []byte(`{"type":"nope","id":"` + strings.Repeat("f", 16<<10) + `"}`)
			for actx.Err() == nil {
				if c.WriteMessage(websocket.TextMessage, msg) != nil {
					return
				}
			}
		})
	}
	lat.mu.Lock()
	lat.on, lat.got = true, nil
	lat.mu.Unlock()
	// Closed by the daemon: from the gauge again (a client whose window
	// is shut may never see the daemon's FIN, so it cannot tell).
	var floodCloses []time.Duration
	lastClients = float64(nf + 1)
	floodWait := poll(ctx, floodLimit, 100*time.Millisecond, "the command senders closed", func() (bool, error) {
		m, err := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
		if err != nil {
			return false, err
		}
		c := m.Get("pibridge_ws_clients")
		for ; lastClients > c; lastClients-- {
			floodCloses = append(floodCloses, time.Since(floodStart))
		}
		return c <= 1, nil
	})
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	lat.mu.Lock()
	duringFlood := lat.got
	lat.on = false
	lat.mu.Unlock()
	floodLen := time.Since(floodStart)
	stopAttack()
	flooders.Wait()
	sampler.Wait()
	fd, df := dist(floodCloses), dist(duringFlood)

	// Afterwards the fds go back down.
	var fdEnd int
	fdErr := poll(ctx, 10*time.Second, 100*time.Millisecond, "the fd count back to its baseline", func() (bool, error) {
		c, err := harness.FDCount(dm.PID)
		fdEnd = c
		return err == nil && c <= fd0+4, err
	})
	met1, _ := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
	code, herr := healthz(ctx, dm.HTTPURL, 2*time.Second)

	var lorisOpen int
	var lc []time.Duration
	for _, d := range lorisClosed {
		if d == 0 {
			lorisOpen++
		} else {
			lc = append(lc, d)
		}
	}
	ld, wd := dist(lc), dist(wsCloses)
	b, d := dist(before), dist(during)
	slowClosed := met1.Get("pibridge_ws_slow_clients_closed_total") - met0.Get("pibridge_ws_slow_clients_closed_total")
	p99Limit := 50 * time.Millisecond

	t := harness.Table{Title: fmt.Sprintf("fault 3: %d slowloris HTTP clients and %d WebSocket clients that never read, sim sensor at 100 readings/s", n, n)}
	t.Rows = append(t.Rows,
		harness.R("slowloris connected / closed by the daemon", fmt.Sprintf("%d / %d", n-len(lorisErr), len(lc)), fmt.Sprint(n), harness.Verdict(len(lorisErr) == 0 && lorisOpen == 0)),
		harness.R("slowloris connect → closed, p50", ms(ld.Q(0.5)), "", ""),
		harness.R("slowloris connect → closed, max", ms(ld.Max()), fmt.Sprintf("≤ %s (ReadHeaderTimeout %s + 1 s)", s.o.readHeaderTimeout+time.Second, s.o.readHeaderTimeout), harness.Verdict(lorisOpen == 0 && ld.Max() <= s.o.readHeaderTimeout+time.Second)),
		harness.R("never-reading WebSockets upgraded / closed by the daemon", fmt.Sprintf("%d / %d", len(deaf), len(wsCloses)), fmt.Sprint(n), harness.Verdict(len(deafErr) == 0 && wsErr == nil)),
		harness.R("never-reading WebSockets: upgrades done → closed, p50", ms(wd.Q(0.5)), "", ""),
		harness.R("never-reading WebSockets: upgrades done → all closed", ms(wsClosedAt), fmt.Sprintf("≤ %s (no pong: read deadline %s, + 2 s)", s.o.pongWait+2*time.Second, s.o.pongWait), harness.Verdict(wsErr == nil && wsClosedAt <= s.o.pongWait+2*time.Second)),
		harness.R(fmt.Sprintf("never-reading WebSockets sending commands non-stop: closed by the daemon, of %d", nf), fmt.Sprint(len(floodCloses)), fmt.Sprint(nf), harness.Verdict(len(floodCloses) == nf && floodErr.Load() == nil && floodWait == nil)),
		harness.R("  … flood start → closed, p50 / max", fmt.Sprintf("%s / %s", ms(fd.Q(0.5)), ms(fd.Max())), fmt.Sprintf("max ≤ %s (write deadline %s + 10 s to fill the sockets)", floodLimit, s.o.writeWait), harness.Verdict(floodWait == nil && fd.Max() <= floodLimit)),
		// The silent clients end either way: as slow once the readings
		// fill their socket (128 KiB send buffer) and their queue, or on
		// the read deadline if they fill more slowly. Both are closes the
		// counter may hold; the command senders must all be in it.
		harness.R("counted as slow (pibridge_ws_slow_clients_closed_total)", fmt.Sprint(slowClosed), fmt.Sprintf("%d to %d (every command sender; silent ones whose queue filled before the read deadline)", nf, nf+n), harness.Verdict(int(slowClosed) >= nf && int(slowClosed) <= nf+n)),
		harness.R("daemon fds: baseline / peak", fmt.Sprintf("%d / %d", fd0, fdPeak), fmt.Sprintf("peak ≤ baseline + %d", 2*n+nf+16), harness.Verdict(fdPeak <= fd0+2*n+nf+16)),
		harness.R("daemon fds after the attack", fmt.Sprint(fdEnd), fmt.Sprintf("≤ baseline + 4 within 10 s"), harness.Verdict(fdErr == nil)),
		harness.R("normal client: reading latency p50 / p99 without the attack", fmt.Sprintf("%s / %s (%d)", ms(b.Q(0.5)), ms(b.Q(0.99)), len(b)), "", ""),
		harness.R("normal client: reading latency p50 / p99 during the attack", fmt.Sprintf("%s / %s (%d)", ms(d.Q(0.5)), ms(d.Q(0.99)), len(d)), "p99 ≤ "+ms(p99Limit), harness.Verdict(len(d) > 0 && d.Q(0.99) <= p99Limit)),
		harness.R("normal client: reading latency p50 / p99 while the command senders flood", fmt.Sprintf("%s / %s (%d)", ms(df.Q(0.5)), ms(df.Q(0.99)), len(df)), "", ""),
		harness.R("/healthz after the attack", fmt.Sprintf("%d %v", code, errString(herr)), "200", harness.Verdict(code == 200)),
	)
	if len(lorisErr) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("slowloris connect errors: %d, first: %v", len(lorisErr), lorisErr[0]))
	}
	if len(deafErr) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("WebSocket upgrade errors: %d, first: %v", len(deafErr), deafErr[0]))
	}
	if wsErr != nil {
		t.Notes = append(t.Notes, wsErr.Error())
	}
	if normal.err != nil {
		t.Notes = append(t.Notes, fmt.Sprintf("the normal client's connection ended: %v", normal.err))
	}
	t.Notes = append(t.Notes,
		fmt.Sprintf("attack window %s, then the command senders' %s; latency = the normal client's wall clock at receipt − the reading's ts (ms, truncated: 0–1 ms high)", attackLen.Round(100*time.Millisecond), floodLen.Round(100*time.Millisecond)),
		"slowloris: `GET /healthz HTTP/1.1`, Host, then one byte of a header a second; closed = the client's read returns EOF/RST",
		fmt.Sprintf("never-reading WebSockets: SO_RCVBUF 4 KiB, upgrade, then no read at all. Their readings coalesce in the mailbox (latest per signal), so no 1008 queue overflow: the daemon's writes block once the kernel buffers are full, and the write deadline (%s) closes them, or, first, the read deadline (%s) when no pong answers the ping. On loopback the daemon's socket send buffer autotunes to megabytes (MSS 64 KiB), so at this rate the read deadline comes first. Closing times from the pibridge_ws_clients gauge, polled every 100 ms", s.o.writeWait, s.o.pongWait),
		fmt.Sprintf("http.max_clients set to %d for this fault (default 256: beyond it upgrades get 503)", n+n/10+16),
		"command senders (after the attack above, measured on their own): SO_RCVBUF 4 KiB, `{\"type\":\"nope\",\"id\":\"<16 KiB>\"}` frames without pause, never a read; each gets an error reply carrying the id, which fills the socket, then the reply queue (256 KiB): the daemon closes them (1008 or the write deadline) and counts them slow; closing times from the pibridge_ws_clients gauge",
	)
	return t, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

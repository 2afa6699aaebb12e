package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// flushShare is the part of the shutdown budget that goes to readings in
// flight and queued; `offline` gets the rest.
const flushShare = 3 // of 4

// flight is one publish awaiting its acknowledgement.
type flight struct {
	tok    paho.Token
	seq    uint64 // the reading's seq
	conn   uint64 // the connection (Client.connects) it was published on
	commit bool   // an outbox reading (not a state re-publish): commit when acknowledged
}

// publisher is the only goroutine that publishes to signal topics, so
// that their retained values always end with the newest reading. It feeds
// paho from the outbox in seq order, at most maxInFlight at a time, and
// commits a reading once the broker has acknowledged it and everything
// before it. A failure resends from the first unconfirmed reading.
//
// A token counts as the broker's PUBACK only if it completed while the
// connection it was published on was still up. On a reconnect paho
// resends what it stored and completes the old tokens at once, before
// the broker has answered (paho #563, messageids.go claimID); the outbox
// must not let those readings go. So a new connection rewinds the window:
// everything not committed is published again after paho's resend, and a
// crash at any moment loses nothing the broker has not confirmed. The
// price is duplicates (same seq) after a reconnect, at most a window's.
type publisher struct {
	c       *Client
	window  []flight
	states  []pibridge.Reading // current states to publish ahead of the outbox
	cursor  uint64             // seq of the last outbox reading handed to paho
	conn    uint64             // the connection (Client.connects) the states were queued for
	scratch []byte
	// stall fires when the head of the window has waited too long on one
	// connection; it is rearmed when the head or the connection changes.
	stall    *time.Timer
	stallFor paho.Token
	// broken is set when a publish failed on the spot (not connected):
	// nothing more is published until the window has been retired up to
	// it and fail has rewound, or a later reading could overtake it.
	broken bool
}

func (p *publisher) run(ctx context.Context) {
	c := p.c
	p.stall = time.NewTimer(c.tm.stall)
	defer p.stall.Stop()
	for {
		if ctx.Err() != nil {
			p.flush()
			return
		}
		select {
		case <-ctx.Done():
			continue
		case <-c.gate.open():
		}
		if n := c.connects.Load(); n != p.conn {
			// A new connection: what was in flight on the old one goes
			// out again (see the type's comment), and the broker may
			// have lost its retained values, so every state goes out
			// again too, ahead of the outbox.
			p.conn = n
			p.rewind()
			p.queueStates()
			p.stallFor = nil
		}
		p.fill()
		if len(p.window) == 0 {
			select {
			case <-ctx.Done():
			case <-c.wake:
			case <-c.statesReq:
				p.queueStates()
			}
			continue
		}
		var wake <-chan struct{}
		if len(p.window) < maxInFlight {
			wake = c.wake
		}
		if head := p.window[0].tok; head != p.stallFor {
			p.stallFor = head
			p.stall.Reset(c.tm.stall)
		}
		select {
		case <-ctx.Done():
		case <-p.window[0].tok.Done():
			switch err := p.window[0].tok.Error(); {
			case err != nil:
				p.fail(ctx, err)
			case !p.live(p.window[0]):
				// Completed by paho's resend on a new connection, not by
				// a PUBACK: the loop sees the new connection and rewinds.
				// (Or a PUBACK just before the loss: sent again, a duplicate.)
			default:
				p.confirm()
			}
		case <-p.stall.C:
			p.stallFor = nil
			p.fail(ctx, fmt.Errorf("no acknowledgement within %s", c.tm.stall))
		case <-wake:
		case <-c.statesReq:
			p.queueStates()
		}
	}
}

// fill hands paho what fits in the window: pending states first, then the
// outbox after the cursor.
func (p *publisher) fill() {
	for !p.broken && len(p.window) < maxInFlight {
		if len(p.states) > 0 {
			r := p.states[0]
			p.states = p.states[1:]
			p.publish(r, false)
			continue
		}
		r, ok := p.c.outbox.Next(p.cursor)
		if !ok {
			return
		}
		p.cursor = r.Seq
		p.publish(r, true)
	}
}

func (p *publisher) publish(r pibridge.Reading, commit bool) {
	topic, ok := p.c.topics.signal[r.Name]
	if !ok { // the core only emits its own signals; keep the window moving
		p.c.log.Error("reading for a signal without a topic dropped", "signal", r.Name)
		p.window = append(p.window, flight{tok: doneToken{}, seq: r.Seq, conn: p.conn, commit: commit})
		return
	}
	p.scratch = r.AppendJSON(p.scratch[:0])
	// paho keeps the payload slice in its store until the PUBACK, even
	// after the token has completed across a reconnect (paho #563), so
	// each publish gets its own copy; the scratch buffer saves the growing.
	payload := bytes.Clone(p.scratch)
	tok := p.c.publish(topic, p.c.qos, true, payload)
	p.window = append(p.window, flight{tok: tok, seq: r.Seq, conn: p.conn, commit: commit})
	select {
	case <-tok.Done():
		p.broken = tok.Error() != nil
	default:
	}
}

// live reports whether f's connection is still the current one and up.
// connectLoop closes the gate before paho's next Connect (where the
// resend completes old tokens) and counts the new connection before it
// opens the gate again: read in this order, an open gate and an
// unchanged count mean that f's token completed on f's connection.
func (p *publisher) live(f flight) bool {
	return p.c.gate.isOpen() && p.c.connects.Load() == f.conn
}

// rewind forgets the window: publishing starts again at the first reading
// not committed. The forgotten tokens are paho's to finish.
func (p *publisher) rewind() {
	clear(p.window)
	p.window = p.window[:0]
	p.cursor = 0
	p.broken = false
	p.states = nil
}

// confirm retires the head of the window, which the broker acknowledged.
func (p *publisher) confirm() {
	f := p.window[0]
	n := copy(p.window, p.window[1:]) // at most maxInFlight: cheaper than a ring
	p.window[n] = flight{}
	p.window = p.window[:n]
	if f.commit {
		p.c.outbox.Commit(f.seq)
		p.c.published.Add(1)
	}
}

// fail forgets the window and resends from the first unconfirmed reading
// after a pause, or after the reconnect if the connection is gone.
// Readings already delivered may arrive twice: subscribers tell them
// apart by seq.
func (p *publisher) fail(ctx context.Context, err error) {
	c := p.c
	from := uint64(0)
	if r, ok := c.outbox.Next(0); ok {
		from = r.Seq
	}
	c.log.Warn("publish failed; resending from the first unconfirmed reading", "err", err, "from_seq", from, "queued", c.outbox.Len())
	p.rewind()
	// State re-publishes may have been lost with the window: queue them again.
	signal(c.statesReq)
	t := time.NewTimer(c.tm.retry)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// queueStates puts every signal's current state ahead of the outbox,
// except the signals that have a reading waiting in the outbox, or still
// waiting for the core's journal goroutine to append it (later while the
// disk stalls): that reading is newer, and will be published after
// anything queued here. So MQTT never carries a seq ahead of an older one
// still queued, nor one the outbox's log does not have.
//
// The snapshot comes first, then the core's first unrecorded seq, then
// the outbox's head: a state older than both is then neither waiting nor
// newer than anything waiting. (Read the other way round, a reading
// emitted, or moved into the outbox, in between would be sent as a state
// ahead of the older readings still queued.)
func (p *publisher) queueStates() {
	state := p.c.core.State()
	head := ^uint64(0)
	if s, ok := p.c.core.Unrecorded(); ok {
		head = s
	}
	if r, ok := p.c.outbox.Next(0); ok {
		head = min(head, r.Seq)
	}
	p.states = p.states[:0]
	for _, r := range state {
		if r.Seq < head {
			p.states = append(p.states, r)
		}
	}
}

// flush runs after ctx ends: it goes on publishing until everything
// appended before the end is acknowledged (the outputs' safe-state
// readings among it), the connection fails, or its share of the shutdown
// budget is spent.
func (p *publisher) flush() {
	c := p.c
	t := time.NewTimer(c.tm.shutdown * flushShare / 4)
	// The last readings (the safe state's) may still wait for the core's
	// journal goroutine, which appends them to the outbox.
	jctx, cancel := context.WithTimeout(context.Background(), c.tm.shutdown*flushShare/8)
	c.core.AwaitJournal(jctx)
	cancel()
	until := c.lastSeq.Load()
	defer t.Stop()
	p.states = nil
	for {
		select {
		case <-c.gate.open():
		default:
			return
		}
		if r, ok := c.outbox.Next(0); !ok || r.Seq > until {
			return // everything appended before the end is acknowledged
		}
		p.fill()
		if len(p.window) == 0 {
			return
		}
		select {
		case <-p.window[0].tok.Done():
			if err := p.window[0].tok.Error(); err != nil {
				c.log.Warn("publish failed while stopping", "err", err, "queued", c.outbox.Len())
				return
			}
			if !p.live(p.window[0]) {
				return // the connection went: not confirmed, kept for the next run
			}
			p.confirm()
		case <-t.C:
			c.log.Warn("stopping before every reading was confirmed", "queued", c.outbox.Len())
			return
		}
	}
}

// doneToken is a token that has already succeeded.
type doneToken struct{}

var closedCh = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

func (doneToken) Wait() bool                     { return true }
func (doneToken) WaitTimeout(time.Duration) bool { return true }
func (doneToken) Done() <-chan struct{}          { return closedCh }
func (doneToken) Error() error                   { return nil }

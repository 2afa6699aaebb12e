package mqtt

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// connectLoop connects, waits for the connection to drop, and connects
// again, pausing between failed attempts (doubling from connectRetry up to
// maxReconnect, with jitter).
//
// It calls paho's Connect itself rather than leaving reconnects to paho:
// on every connection paho first resends the publishes the previous one
// left unacknowledged, and Connect's token completes only after that
// resend, whereas paho's automatic reconnect gives no signal at all. With
// the gate opened on the token, nothing the bridge publishes can overtake
// or duplicate a resent reading (paho v1.5.1 would otherwise resend a
// message published during its resume() a second time, racing on the
// packet's DUP flag, and the token completed by resume() (paho #563) would
// let new readings interleave with the resent ones). pubMu keeps a
// publish that started before the loss out of the Connect.
//
// Waiting for pubMu can take as long as paho's write timeout: a Publish
// that the dying connection's writer never took stays in paho's select
// until that timeout (paho v1.5.1 client.go, the send on c.obound: once
// the connection is lost nothing reads that channel until the next
// Connect). Connecting without waiting would let the next connection's
// writer send that packet while resume() resends it from the store, with
// the same message ID, so timing.pahoWrite is kept short instead.
func (c *Client) connectLoop(ctx context.Context) {
	pause := c.tm.connectRetry
	failing := false
	for ctx.Err() == nil {
		asked := time.Now()
		c.pubMu.Lock()
		if d := time.Since(asked); d > 100*time.Millisecond {
			c.log.Info("waited for a publish stuck on the lost connection", "wait", d.Round(time.Millisecond))
		}
		tok := c.paho.Connect()
		c.connect.Store(&tok) // Run waits for the last attempt to end
		var err error
		select {
		case <-ctx.Done():
		case <-tok.Done(): // one round over the brokers, each bounded by connectTimeout
			err = tok.Error()
		}
		c.pubMu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !failing {
				c.log.Warn("cannot connect; retrying", "broker", c.cfg.brokerSummary(c.embeddedAddr), "err", err)
				failing = true
			} else {
				c.log.Debug("cannot connect; retrying", "err", err, "pause", pause)
			}
			t := time.NewTimer(jitter(pause))
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			pause = min(2*pause, c.tm.maxReconnect)
			continue
		}
		failing, pause = false, c.tm.connectRetry
		c.connects.Add(1) // before the gate opens: the publisher reads it as "a new connection"
		c.gate.set(true)
		// An idle publisher sees the new connection now and re-publishes
		// the states, not at the next reading.
		signal(c.wake)
		broker := ""
		if b := c.broker.Load(); b != nil {
			broker = *b
		}
		c.log.Info("connected", "broker", broker, "queued", c.outbox.Len())
		signal(c.sessions)
		select {
		case <-ctx.Done():
			return // the gate stays open for the last readings and `offline`
		case <-c.lost:
			c.gate.set(false)
		}
	}
}

// jitter spreads d by ±20%, so that bridges restarted together by a power
// cut do not knock on the broker in step.
func jitter(d time.Duration) time.Duration {
	return d * time.Duration(80+rand.IntN(41)) / 100
}

// signal sends on a channel of capacity one without blocking; an event
// already waiting stands for this one too.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// onConnectionLost runs in a goroutine of paho's once the connection is down.
func (c *Client) onConnectionLost(_ paho.Client, err error) {
	c.log.Warn("connection lost; reconnecting", "err", err, "queued", c.outbox.Len())
	signal(c.lost)
}

// onNotification records which broker paho is trying, for the logs. paho
// calls it synchronously from its connecting goroutine: it must be quick.
func (c *Client) onNotification(_ paho.Client, n paho.ConnectionNotification) {
	switch n := n.(type) {
	case paho.ConnectionNotificationBroker:
		s := n.Broker.Redacted()
		c.broker.Store(&s)
	case paho.ConnectionNotificationBrokerFailed:
		c.log.Debug("broker unreachable", "broker", n.Broker.Redacted(), "err", n.Reason)
	}
}

// sessionLoop readies each new connection: it subscribes to the command
// topics and, once the broker has confirmed, publishes online, meta and
// discovery, so that `online` means commands are being listened to. (It
// subscribes here rather than in paho's OnConnect handler, which runs
// while paho is still resending and could not order `online` after the
// SUBACK.) It then reads back what the broker retains for the device,
// for discovery's migrations and to empty the topics of removed signals.
// It also answers Home Assistant's birth message and keeps the sensors'
// availability topics current. The publisher sends the states.
//
// meta says whether the board's clock is synchronised; sessionLoop
// publishes it again when that changes (NTP came, or went).
func (c *Client) sessionLoop(ctx context.Context) {
	var haTimer *time.Timer
	var haDue <-chan time.Time
	avail := time.NewTicker(c.tm.availEvery)
	defer avail.Stop()
	defer func() {
		if haTimer != nil {
			haTimer.Stop()
		}
	}()
	clockTick := time.NewTicker(c.tm.clockCheck)
	defer clockTick.Stop()
	metaSynced, metaOut := false, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-clockTick.C:
			if cs := c.core.ClockState(); metaOut && cs.Synced != metaSynced && c.gate.isOpen() {
				c.log.Info("publishing meta again: the clock's state changed", "clock", cs.String())
				metaSynced = cs.Synced
				c.awaitAll(ctx, []paho.Token{c.publish(c.topics.meta, 1, true, metaJSON(c.device, c.core.Signals(), c.core.RunInfo(), cs))}, "meta")
			}
		case <-c.sessions:
			c.subscribe(ctx)
			cs := c.core.ClockState()
			metaSynced, metaOut = cs.Synced, true
			c.awaitAll(ctx, []paho.Token{
				c.publish(c.topics.status, 1, true, "online"),
				c.publish(c.topics.meta, 1, true, metaJSON(c.device, c.core.Signals(), c.core.RunInfo(), cs)),
			}, "online and meta")
			old, ok := c.collectRetained(ctx)
			if c.haStatus != "" {
				c.discover(ctx, old, ok)
			}
			if ok {
				c.clearRemoved(ctx, old.meta)
			}
			c.publishAvailability(ctx, true)
		case <-avail.C:
			c.publishAvailability(ctx, false)
		case <-c.haOnline:
			if haDue == nil {
				haTimer = time.NewTimer(c.haDelay())
				haDue = haTimer.C
			}
		case <-haDue:
			haDue = nil
			c.log.Info("Home Assistant is online: publishing discovery and states again")
			c.awaitAll(ctx, c.publishDiscovery(), "discovery")
			signal(c.statesReq)
		}
	}
}

// subscribe subscribes to the commands and waits for the broker's answer.
func (c *Client) subscribe(ctx context.Context) {
	// QoS 0 on purpose: the broker then keeps no commands for the bridge
	// while it is away (MQTT 3.1.1 has no message expiry), so a "pump on"
	// sent during an outage cannot move the pump an hour later.
	filters := map[string]byte{c.topics.set: 0, c.topics.pulse: 0, c.topics.setQuantity: 0, c.topics.pulseQuantity: 0}
	if c.haStatus != "" {
		filters[c.haStatus] = 0
	}
	// For collectRetained, which unsubscribes when done.
	for _, f := range c.sweepFilters {
		filters[f] = 0
	}
	c.sweeping.Store(true)
	for _, f := range c.bridgeFilters() {
		if _, ours := filters[f]; !ours {
			filters[f] = 0
		}
	}
	c.checkSubscription(ctx, c.paho.SubscribeMultiple(filters, nil)) // nil: everything goes to onMessage
}

func (c *Client) checkSubscription(ctx context.Context, tok paho.Token) {
	if err := await(ctx, tok, c.tm.writeTimeout); err != nil {
		if ctx.Err() == nil {
			c.log.Error("subscribing to commands failed; commands will not arrive before the next connection", "err", err)
		}
		return
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for filter, code := range st.Result() {
			if code == 0x80 {
				c.log.Error("the broker refused the subscription; commands will not arrive", "filter", filter)
			}
		}
	}
}

// awaitAll waits for the tokens, together bounded by the write timeout,
// and reports whether all succeeded.
func (c *Client) awaitAll(ctx context.Context, toks []paho.Token, what string) bool {
	deadline := time.Now().Add(c.tm.writeTimeout)
	for _, tok := range toks {
		if err := await(ctx, tok, time.Until(deadline)); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("publishing "+what+" failed; it is repeated on the next connection", "err", err)
			}
			return false
		}
	}
	return true
}

// gate is open while the client may publish: connected, and paho's resend
// of the previous connection's messages is over. connectLoop alone sets it.
type gate struct {
	mu sync.Mutex
	up bool
	ch chan struct{} // closed while up
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) set(up bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if up == g.up {
		return
	}
	g.up = up
	if up {
		close(g.ch)
	} else {
		g.ch = make(chan struct{})
	}
}

// open returns a channel that is closed while the gate is open.
func (g *gate) open() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}

func (g *gate) isOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.up
}

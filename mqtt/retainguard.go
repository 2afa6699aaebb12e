package mqtt

import (
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// retainGuard keeps mochi v2.7.9 from storing a retained message while it
// scans the retained index for a new subscription: its scan reads a
// topic node's retained path without the node's lock, which the race
// detector reports and which can tear a string (mochi-mqtt/server#200).
// A retained publish holds the lock from OnPublish to OnRetainMessage
// (nothing but the store between them; should a path skip OnRetainMessage,
// OnPacketProcessed releases it); a subscribe holds it shared from
// its SUBACK having been written (OnPacketSent) to OnPacketProcessed: the
// scan and non-blocking enqueues, never a socket write, so a client that
// does not read cannot stall anyone's publishes. Each client's packets are
// handled one at a time on its own goroutine, so a client marks what it
// holds.
type retainGuard struct {
	mochi.HookBase
	index   sync.RWMutex
	writing sync.Map // *mochi.Client → struct{}: holds index for a retained publish
	reading sync.Map // *mochi.Client → struct{}: holds index shared for a subscribe
	retains bool     // the broker stores retained messages at all
}

// newRetainGuard guards srv's retained index; add it after every other hook.
func newRetainGuard(srv *mochi.Server) *retainGuard {
	return &retainGuard{retains: srv.Options.Capabilities.RetainAvailable != 0}
}

func (g *retainGuard) ID() string { return "retain-guard" }

func (g *retainGuard) Provides(b byte) bool {
	switch b {
	case mochi.OnPublish, mochi.OnRetainMessage, mochi.OnPacketSent, mochi.OnPacketProcessed:
		return true
	}
	return false
}

// OnPublish runs after every other hook has accepted the packet, so the
// retained message it guards is stored next (and OnRetainMessage follows).
func (g *retainGuard) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && g.retains {
		g.index.Lock()
		g.writing.Store(cl, struct{}{})
	}
	return pk, nil
}

// OnRetainMessage also follows a will or a stored message that never went
// through OnPublish: only a client that locked unlocks.
func (g *retainGuard) OnRetainMessage(cl *mochi.Client, _ packets.Packet, _ int64) {
	if _, ok := g.writing.LoadAndDelete(cl); ok {
		g.index.Unlock()
	}
}

// OnPacketSent takes the shared hold once a SUBACK is out: mochi scans the
// retained index for the new filters next. The broker's own inline
// subscriptions write no SUBACK and never come here.
func (g *retainGuard) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Suback {
		g.index.RLock()
		g.reading.Store(cl, struct{}{})
	}
}

func (g *retainGuard) OnPacketProcessed(cl *mochi.Client, pk packets.Packet, _ error) {
	switch pk.FixedHeader.Type {
	case packets.Subscribe:
		if _, ok := g.reading.LoadAndDelete(cl); ok {
			g.index.RUnlock()
		}
	case packets.Publish:
		// Normally released in OnRetainMessage already; this covers a
		// publish a later hook dropped or ignored after OnPublish.
		if _, ok := g.writing.LoadAndDelete(cl); ok {
			g.index.Unlock()
		}
	}
}

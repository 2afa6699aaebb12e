package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"pibridge"
)

// Errors a forwarded command can fail with before the device answers.
var (
	ErrUnknownDevice = errors.New("no such device")
	ErrOffline       = errors.New("device is offline")
	ErrNoAnswer      = errors.New("device did not answer")
	ErrNoBroker      = errors.New("the gateway is not connected to the broker")
)

// pendingCommand waits for the ack of the device it was sent to.
type pendingCommand struct {
	device string
	ch     chan ackJSON
}

// deviceError is a refusal in the device's own words (its ack's error).
type deviceError struct{ msg string }

func (e *deviceError) Error() string { return e.msg }

// command forwards a set (v) or a pulse (d) to the device as MQTT with an
// id of ours and waits for the device's ack for that id, up to
// command_timeout. It is never retried: a lost command is reported, and
// the user decides.
func (g *Gateway) command(ctx context.Context, d *device, name string, op pibridge.Op, v pibridge.Value, dur time.Duration) error {
	d.mu.Lock()
	listed, online := d.listed, d.status == "online"
	i, known := d.index[name]
	var sig pibridge.Signal
	if known {
		sig = d.signals[i]
	}
	d.mu.Unlock()
	switch {
	case !listed:
		return fmt.Errorf("%s: %w", d.id, ErrUnknownDevice)
	case !known:
		return fmt.Errorf("%s: %w", pibridge.Clip(name), pibridge.ErrUnknownSignal)
	case !sig.Kind.Writable():
		return fmt.Errorf("%s: %w: it is a %s", sig.Name, pibridge.ErrNotWritable, sig.Kind)
	case !online:
		return fmt.Errorf("%s: %w", sig.Name, ErrOffline)
	case !g.connected.Load():
		return fmt.Errorf("%s: %w", sig.Name, ErrNoBroker)
	}
	id := g.idBase + itoa(int(g.nextID.Add(1)))
	var payload []byte
	topic := g.prefix + d.id + "/" + sig.Topic()
	if op == pibridge.OpPulse {
		topic += "/pulse"
		// No length: the device's own default for the output (its outputs[].pulse).
		var length string
		if dur > 0 {
			length = dur.String()
		}
		payload, _ = json.Marshal(struct {
			For string `json:"for,omitempty"`
			ID  string `json:"id"`
		}{length, id})
	} else {
		topic += "/set"
		payload = append(payload, `{"value":`...)
		payload = v.AppendJSON(payload)
		payload = append(payload, `,"id":`...)
		payload = pibridge.AppendJSONString(payload, id)
		payload = append(payload, '}')
	}
	ch := make(chan ackJSON, 1)
	g.pmu.Lock()
	g.pending[id] = pendingCommand{device: d.id, ch: ch}
	g.pmu.Unlock()
	defer func() {
		g.pmu.Lock()
		delete(g.pending, id)
		g.pmu.Unlock()
	}()
	start := g.now()
	t := time.NewTimer(g.cfg.CommandTimeout.D())
	defer t.Stop()
	tok := g.paho.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			g.stats.commands[resultError].Add(1)
			return fmt.Errorf("%s: publishing the command: %w", sig.Name, err)
		}
	case <-t.C:
		g.stats.commands[resultTimeout].Add(1)
		return fmt.Errorf("%s: %w", sig.Name, ErrNoAnswer)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case a := <-ch:
		g.stats.observeRTT(g.now().Sub(start))
		if !a.OK {
			g.stats.commands[resultRefused].Add(1)
			msg := a.Error
			if msg == "" {
				msg = sig.Name + ": refused"
			}
			return &deviceError{msg}
		}
		g.stats.commands[resultOK].Add(1)
		return nil
	case <-t.C:
		g.stats.commands[resultTimeout].Add(1)
		return fmt.Errorf("%s: %w", sig.Name, ErrNoAnswer)
	case <-ctx.Done():
		return ctx.Err()
	}
}

const (
	resultOK = iota
	resultRefused
	resultTimeout
	resultError
	nresults
)

var resultNames = [nresults]string{"ok", "refused", "timeout", "error"}

// stats are the gateway's counters for /metrics.
type stats struct {
	messages, readings, junk, dropped, overflow, connects atomic.Uint64
	commands                                              [nresults]atomic.Uint64
	slowClosed                                            atomic.Uint64
	rttCount                                              atomic.Uint64
	rttSumMicros                                          atomic.Uint64
}

func (s *stats) observeRTT(d time.Duration) {
	s.rttCount.Add(1)
	s.rttSumMicros.Add(uint64(d.Microseconds()))
}

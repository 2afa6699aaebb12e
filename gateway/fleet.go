package gateway

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"
)

// fleetFlush is how often a device's "last seen" reaches the fleet page:
// readings arrive thousands of times a second across a fleet, a person
// reads ages in seconds. Status and meta changes go out at once.
const fleetFlush = time.Second

// fleetHub sends the fleet socket's frames: the whole list first, then a
// device frame for each device that changed.
type fleetHub struct {
	g    *Gateway
	wake chan struct{}

	mu      sync.Mutex
	clients map[*conn]struct{}
	dirty   map[*device]bool // value: urgent (status or meta)
	gone    []string
}

func newFleetHub(g *Gateway) *fleetHub {
	return &fleetHub{g: g, wake: make(chan struct{}, 1), clients: map[*conn]struct{}{}, dirty: map[*device]bool{}}
}

func (f *fleetHub) kick() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// changed marks a device for the next frame; urgent ones wake the sender.
func (f *fleetHub) changed(d *device, urgent bool) {
	f.mu.Lock()
	was, had := f.dirty[d]
	f.dirty[d] = was || urgent
	f.mu.Unlock()
	if urgent && !(had && was) {
		f.kick()
	}
}

func (f *fleetHub) removed(id string) {
	f.mu.Lock()
	f.gone = append(f.gone, id)
	f.mu.Unlock()
	f.kick()
}

// join queues the whole list for a new client under the hub's lock, so no
// device frame can come before it.
func (f *fleetHub) join(c *conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.push(f.g.fleetFrame())
	f.clients[c] = struct{}{}
	return true
}

// resync sends every client the whole list again: the broker connection
// came or went, which the list's "mqtt" says.
func (f *fleetHub) resync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.clients) == 0 {
		return
	}
	frame := f.g.fleetFrame()
	for c := range f.clients {
		c.push(frame)
	}
}

func (f *fleetHub) leave(c *conn) {
	f.mu.Lock()
	delete(f.clients, c)
	f.mu.Unlock()
}

func (g *Gateway) fleetFrame() []byte {
	mqtt := "disconnected"
	if g.Connected() {
		mqtt = "connected"
	}
	b, _ := json.Marshal(struct {
		Type    string       `json:"type"`
		Name    string       `json:"name"`
		MQTT    string       `json:"mqtt"`
		Devices []DeviceInfo `json:"devices"`
	}{"fleet", g.cfg.Name, mqtt, g.Devices()})
	return b
}

func (f *fleetHub) run(ctx context.Context) {
	t := time.NewTicker(fleetFlush)
	defer t.Stop()
	for {
		urgentOnly := true
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-t.C:
			urgentOnly = false
		}
		f.flush(urgentOnly)
	}
}

func (f *fleetHub) flush(urgentOnly bool) {
	f.mu.Lock()
	var batch []*device
	for d, urgent := range f.dirty {
		if urgent || !urgentOnly {
			batch = append(batch, d)
			delete(f.dirty, d)
		}
	}
	gone := f.gone
	f.gone = nil
	if len(f.clients) == 0 {
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	frames := make([][]byte, 0, len(batch)+len(gone))
	for _, d := range batch {
		d.mu.Lock()
		listed, v := d.listed, d.viewLocked()
		d.mu.Unlock()
		if !listed {
			continue
		}
		b, _ := json.Marshal(struct {
			Type string `json:"type"`
			DeviceInfo
		}{"device", v})
		frames = append(frames, b)
	}
	for _, id := range gone {
		b, _ := json.Marshal(struct {
			Type    string `json:"type"`
			ID      string `json:"id"`
			Removed bool   `json:"removed"`
		}{"device", id, true})
		frames = append(frames, b)
	}
	f.mu.Lock()
	for c := range f.clients {
		for _, fr := range frames {
			c.push(fr)
		}
	}
	f.mu.Unlock()
}

func sortDevices(list []DeviceInfo) {
	slices.SortFunc(list, func(a, b DeviceInfo) int { return strings.Compare(a.ID, b.ID) })
}

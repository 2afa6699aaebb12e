package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"pibridge"
)

// device is one board the gateway follows, built from its retained topics.
// Its mutex guards every field below it; holders never do I/O (pushes to
// browsers are non-blocking queue appends).
type device struct {
	id string

	mu       sync.Mutex
	listed   bool   // its retained meta exists: the device is shown
	desc     []byte // the meta's inside, `"device":{…},"signals":[…]…`, for hello and /api/state
	info     pibridge.Device
	signals  []pibridge.Signal
	index    map[string]int // signal name → signals index
	status   string         // online, offline, or "" when unknown
	lastSeen time.Time      // any message from the device
	lastRead time.Time      // its last reading's receipt
	state    map[string]pibridge.Reading
	history  map[string]*pibridge.History
	clients  map[*conn]struct{}
}

// DeviceInfo is a device as /api/devices and /fleet/ws show it.
type DeviceInfo struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Version     string `json:"version"`
	Status      string `json:"status"`
	Online      bool   `json:"online"`
	Signals     int    `json:"signals"`
	LastSeen    string `json:"last_seen,omitempty"`
	LastReading string `json:"last_reading,omitempty"`
}

func (d *device) viewLocked() DeviceInfo {
	v := DeviceInfo{ID: d.id, Name: d.info.Name, Version: d.info.Version, Status: d.status, Online: d.status == "online", Signals: len(d.signals)}
	if v.Status == "" {
		v.Status = "unknown"
	}
	if !d.lastSeen.IsZero() {
		v.LastSeen = d.lastSeen.UTC().Format(pibridge.TimeFormat)
	}
	if !d.lastRead.IsZero() {
		v.LastReading = d.lastRead.UTC().Format(pibridge.TimeFormat)
	}
	return v
}

// metaJSON is the retained P/D/meta payload: the hello without state.
type metaJSON struct {
	Device  pibridge.Device `json:"device"`
	Signals []struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
		Unit string `json:"unit"`
	} `json:"signals"`
}

// parseMeta checks a meta payload and returns what the gateway needs of
// it, and its inside (without the outer braces) for the hello.
func parseMeta(id string, payload []byte) (pibridge.Device, []pibridge.Signal, []byte, string) {
	var m metaJSON
	if err := json.Unmarshal(payload, &m); err != nil {
		return pibridge.Device{}, nil, nil, "not JSON: " + err.Error()
	}
	if m.Device.ID != id {
		return pibridge.Device{}, nil, nil, "device.id " + pibridge.Clip(m.Device.ID) + " differs from the topic's"
	}
	signals := make([]pibridge.Signal, 0, len(m.Signals))
	for _, s := range m.Signals {
		k, ok := parseKind(s.Kind)
		if !ok || validSignal(s.Name) != nil {
			return pibridge.Device{}, nil, nil, "signal " + pibridge.Clip(s.Name) + " of kind " + pibridge.Clip(s.Kind) + " is not valid"
		}
		signals = append(signals, pibridge.Signal{Name: s.Name, Kind: k, Unit: s.Unit})
	}
	inner := bytes.TrimSpace(payload)
	inner = bytes.TrimSpace(inner[1 : len(inner)-1]) // an object: Unmarshal has checked
	return m.Device, signals, append([]byte(nil), inner...), ""
}

// parseKind reads a kind as Kind.String writes it.
func parseKind(s string) (pibridge.Kind, bool) {
	for k := pibridge.KindInput; k <= pibridge.KindSensor; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// validSignal accepts `name` and `sensor.quantity`.
func validSignal(name string) error {
	base, q, two := strings.Cut(name, ".")
	if err := pibridge.ValidName(base, 32); err != nil {
		return err
	}
	if two {
		return pibridge.ValidName(q, 32)
	}
	return nil
}

// readingJSON is the payload of P/D/<signal>.
type readingJSON struct {
	Value pibridge.Value `json:"value"`
	Unit  string         `json:"unit"`
	TS    string         `json:"ts"`
	Seq   uint64         `json:"seq"`
}

func parseReading(name string, payload []byte) (pibridge.Reading, bool) {
	var rj readingJSON
	if err := json.Unmarshal(payload, &rj); err != nil || rj.Value.IsZero() {
		return pibridge.Reading{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, rj.TS)
	if err != nil {
		return pibridge.Reading{}, false
	}
	return pibridge.Reading{Name: name, Value: rj.Value, Unit: rj.Unit, TS: ts.UTC(), Seq: rj.Seq}, true
}

// ackJSON is the payload of P/D/ack.
type ackJSON struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// appendStateLocked appends {"<name>":{reading},…} in signal order.
func (d *device) appendStateLocked(b []byte) []byte {
	b = append(b, '{')
	first := true
	for _, s := range d.signals {
		r, ok := d.state[s.Name]
		if !ok {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = pibridge.AppendStateEntry(b, s.Name, r)
	}
	return append(b, '}')
}

// helloLocked is the first frame of /d/<id>/ws; readOnly tells the panel
// to disable its controls, as a bridge's hello does for the read token.
func (d *device) helloLocked(readOnly bool) []byte {
	b := make([]byte, 0, len(d.desc)+64+len(d.state)*96)
	b = pibridge.AppendHelloStart(b, readOnly)
	b = append(b, d.desc...)
	b = append(b, `,"state":`...)
	b = d.appendStateLocked(b)
	return append(b, '}')
}

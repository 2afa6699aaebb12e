package mqtt

import (
	"fmt"
	"strings"

	pibridge "pibridge"
)

// topics are the device's MQTT topics (README: MQTT topics), built once at start.
type topics struct {
	base   string // P/D
	status string // P/D/status: online/offline, LWT
	meta   string // P/D/meta
	ack    string // P/D/ack
	set    string // P/D/+/set
	pulse  string // P/D/+/pulse
	// A sensor's quantity has a two-level topic (air.temperature →
	// P/D/air/temperature): subscribed too, only so that a command sent
	// there is refused with an ack instead of vanishing. Nothing with a
	// dot in its name is writable.
	setQuantity   string // P/D/+/+/set
	pulseQuantity string // P/D/+/+/pulse
	signal        map[string]string
	// available is each sensor's availability topic (README "Home
	// Assistant"): only sensors can go stale while the bridge runs.
	available map[string]string
}

func newTopics(prefix, device string, signals []pibridge.Signal) (*topics, error) {
	base := prefix + "/" + device
	t := &topics{
		base:          base,
		status:        base + "/status",
		meta:          base + "/meta",
		ack:           base + "/ack",
		set:           base + "/+/set",
		pulse:         base + "/+/pulse",
		setQuantity:   base + "/+/+/set",
		pulseQuantity: base + "/+/+/pulse",
		signal:        make(map[string]string, len(signals)),
		available:     make(map[string]string),
	}
	if err := ValidateTopic(t.status); err != nil {
		return nil, fmt.Errorf("topic %w", err)
	}
	for _, s := range signals {
		topic := base + "/" + s.Topic()
		if err := ValidateTopic(topic); err != nil {
			return nil, fmt.Errorf("signal %s: topic %w", s.Name, err)
		}
		t.signal[s.Name] = topic
		if s.Kind == pibridge.KindSensor {
			t.available[s.Name] = availableTopic(base, s)
		}
	}
	owner := make(map[string]string, len(t.signal))
	for name, topic := range t.signal {
		owner[topic] = name
	}
	for name, topic := range t.available {
		if other, taken := owner[topic]; taken {
			return nil, fmt.Errorf("signal %s: its topic %s is the availability topic of signal %s", other, topic, name)
		}
	}
	return t, nil
}

// command splits P/D/<name>/set and P/D/<name>/pulse; a two-level
// P/D/<sensor>/<quantity>/… names the signal <sensor>.<quantity>.
func (t *topics) command(topic string) (name string, op pibridge.Op, ok bool) {
	rest, found := strings.CutPrefix(topic, t.base+"/")
	if !found {
		return "", 0, false
	}
	if name, found = strings.CutSuffix(rest, "/set"); found {
		op = pibridge.OpSet
	} else if name, found = strings.CutSuffix(rest, "/pulse"); found {
		op = pibridge.OpPulse
	}
	if !found {
		return "", 0, false
	}
	sensor, quantity, deep := strings.Cut(name, "/")
	if sensor == "" || deep && (quantity == "" || strings.Contains(quantity, "/")) {
		return "", 0, false
	}
	if deep {
		name = sensor + "." + quantity
	}
	return name, op, true
}

package mqtt

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// sensorEvery is the longest a working sensor is assumed to stay silent:
// expire_after is three times it. pibridge.Signal does not say how often a
// sensor reads (interval, or max_interval when min_delta thins readings
// out), so this is a conservative guess: a dead sensor shows unavailable
// in Home Assistant within 15 minutes, and only a sensor thinned to less
// than one reading in 5 minutes is marked unavailable wrongly.
const sensorEvery = 5 * time.Minute

// expireAfter is the sensor's expire_after in seconds.
func expireAfter(pibridge.Signal) int { return int(3 * sensorEvery / time.Second) }

// haEntity is one Home Assistant MQTT discovery config.
type haEntity struct {
	Name                string   `json:"name"`
	UniqueID            string   `json:"unique_id"`
	StateTopic          string   `json:"state_topic"`
	ValueTemplate       string   `json:"value_template"`
	CommandTopic        string   `json:"command_topic,omitempty"`
	PayloadOn           string   `json:"payload_on,omitempty"`
	PayloadOff          string   `json:"payload_off,omitempty"`
	StateOn             string   `json:"state_on,omitempty"`
	StateOff            string   `json:"state_off,omitempty"`
	Min                 *float64 `json:"min,omitempty"`
	Max                 *float64 `json:"max,omitempty"`
	Step                float64  `json:"step,omitempty"`
	Mode                string   `json:"mode,omitempty"`
	DeviceClass         string   `json:"device_class,omitempty"`
	UnitOfMeasurement   string   `json:"unit_of_measurement,omitempty"`
	StateClass          string   `json:"state_class,omitempty"`
	ExpireAfter         int      `json:"expire_after,omitempty"`
	AvailabilityTopic   string   `json:"availability_topic"`
	PayloadAvailable    string   `json:"payload_available"`
	PayloadNotAvailable string   `json:"payload_not_available"`
	QoS                 byte     `json:"qos"`
	Device              haDevice `json:"device"`
	Origin              haOrigin `json:"origin"`
}

type haDevice struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Model        string   `json:"model"`
	Manufacturer string   `json:"manufacturer"`
	SWVersion    string   `json:"sw_version,omitempty"`
}

type haOrigin struct {
	Name      string `json:"name"`
	SWVersion string `json:"sw_version,omitempty"`
}

type haConfig struct {
	topic   string
	payload []byte
}

// discoveryConfigs returns one retained config per signal (SPEC §4):
// inputs binary_sensor, outputs switch, pwm number, sensors sensor.
func (c *Client) discoveryConfigs() []haConfig {
	prefix := c.cfg.HomeAssistant.Prefix
	dev := haDevice{
		Identifiers:  []string{"pibridge_" + c.device.ID},
		Name:         c.device.Name,
		Model:        "pibridge",
		Manufacturer: "pibridge",
		SWVersion:    c.device.Version,
	}
	if dev.Name == "" {
		dev.Name = c.device.ID
	}
	origin := haOrigin{Name: "pibridge", SWVersion: c.device.Version}
	zero, one := 0.0, 1.0
	seen := make(map[string]string)
	var out []haConfig
	for _, s := range c.core.Signals() {
		// Object ids allow [a-zA-Z0-9_-]: "air.temperature" is "air_temperature".
		object := strings.ReplaceAll(s.Name, ".", "_")
		if other, dup := seen[object]; dup {
			c.log.Warn("Home Assistant object id taken by another signal; no discovery for this one",
				"signal", s.Name, "other", other, "object_id", object)
			continue
		}
		seen[object] = s.Name
		e := haEntity{
			Name:                s.Name,
			UniqueID:            c.uniquePrefix() + object,
			StateTopic:          c.topics.signal[s.Name],
			ValueTemplate:       "{{ value_json.value }}",
			AvailabilityTopic:   c.topics.status,
			PayloadAvailable:    "online",
			PayloadNotAvailable: "offline",
			QoS:                 c.qos,
			Device:              dev,
			Origin:              origin,
		}
		var component string
		switch s.Kind {
		case pibridge.KindInput:
			component = "binary_sensor"
			e.ValueTemplate = "{{ 'ON' if value_json.value else 'OFF' }}"
		case pibridge.KindOutput:
			component = "switch"
			e.CommandTopic = c.topics.base + "/" + s.Name + "/set"
			e.PayloadOn, e.PayloadOff = "on", "off"
			e.StateOn, e.StateOff = "on", "off"
			e.ValueTemplate = "{{ 'on' if value_json.value else 'off' }}"
		case pibridge.KindPWM:
			component = "number"
			e.CommandTopic = c.topics.base + "/" + s.Name + "/set"
			e.Min, e.Max, e.Step, e.Mode = &zero, &one, 0.01, "slider"
		case pibridge.KindSensor:
			component = "sensor"
			e.DeviceClass = s.DeviceClass
			e.UnitOfMeasurement = s.Unit
			e.StateClass = "measurement"
			e.ExpireAfter = expireAfter(s)
		default:
			continue
		}
		payload, err := json.Marshal(e)
		if err != nil { // cannot happen: strings and numbers only
			c.log.Error("encoding discovery config", "signal", s.Name, "err", err)
			continue
		}
		topic := prefix + "/" + component + "/" + c.device.ID + "/" + object + "/config"
		if err := ValidateTopic(topic); err != nil { // cannot happen: prefix and names are validated
			c.log.Error("discovery topic invalid; no discovery for this signal", "signal", s.Name, "err", err)
			continue
		}
		out = append(out, haConfig{topic: topic, payload: payload})
	}
	return out
}

// publishDiscovery publishes the discovery configs, retained, when
// discovery is on, and returns their tokens.
func (c *Client) publishDiscovery() []paho.Token {
	if c.haStatus == "" {
		return nil
	}
	var toks []paho.Token
	for _, m := range c.discovery {
		toks = append(toks, c.publish(m.topic, 1, true, m.payload))
	}
	return toks
}

// haDelay is the pause before answering Home Assistant's birth message:
// random, as Zigbee2MQTT does, so that many devices restarted with Home
// Assistant do not all publish in the same instant.
func (c *Client) haDelay() time.Duration {
	lo, hi := c.tm.haDelayMin, c.tm.haDelayMax
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// uniquePrefix starts the unique_id of every entity of this device.
func (c *Client) uniquePrefix() string { return "pibridge_" + c.device.ID + "_" }

// sweepFilter matches every discovery config under this device's node id.
func (c *Client) sweepFilter() string {
	return c.cfg.HomeAssistant.Prefix + "/+/" + c.device.ID + "/+/config"
}

// maxSweepPayload bounds a config copied out of paho's handler; ours are
// about 700 bytes.
const maxSweepPayload = 8 << 10

// toSweep hands a discovery config seen during a sweep to sessionLoop. It
// runs in paho's handler: it never blocks.
func (c *Client) toSweep(m paho.Message) {
	in := inbound{topic: m.Topic(), retained: m.Retained()}
	if p := m.Payload(); len(p) > maxSweepPayload {
		in.tooLong = true
	} else {
		in.payload = append([]byte(nil), p...)
	}
	select {
	case c.sweep <- in:
	default:
		c.sweepLost.Store(true)
	}
}

// sweepDiscovery empties the retained configs of entities this device
// published once and no longer has (a signal removed or renamed, or of
// another kind now), so that Home Assistant drops them. The broker is the
// memory: subscribed to <prefix>/+/<device>/+/config, the bridge receives
// every retained config under its node id, then the live copies of the
// configs it has just published; once the last of those is back, the
// retained ones are all in. A config is only emptied if its unique_id is
// one of ours: another program's entity under the same node id stays.
func (c *Client) sweepDiscovery(ctx context.Context) {
	defer func() {
		c.sweeping.Store(false)
		if !slicesContains(c.bridgeFilters(), c.sweepFilter()) {
			if err := await(ctx, c.paho.Unsubscribe(c.sweepFilter()), c.tm.writeTimeout); err != nil && ctx.Err() == nil {
				c.log.Debug("unsubscribing from discovery configs", "err", err)
			}
		}
		for {
			select {
			case <-c.sweep:
			default:
				return
			}
		}
	}()
	if len(c.discovery) == 0 {
		return
	}
	want := make(map[string]bool, len(c.discovery))
	for _, d := range c.discovery {
		want[d.topic] = true
	}
	last := c.discovery[len(c.discovery)-1].topic
	var stale []string
	t := time.NewTimer(c.tm.writeTimeout)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.log.Warn("could not check Home Assistant for entities no longer configured; trying on the next connection")
			return
		case in := <-c.sweep:
			switch {
			case !in.retained:
				done = in.topic == last
			case !want[in.topic] && !in.tooLong && len(in.payload) > 0 && c.ours(in.payload):
				stale = append(stale, in.topic)
			}
		}
	}
	if c.sweepLost.Swap(false) {
		c.log.Warn("too many discovery configs at once; some removed entities may remain until the next connection")
	}
	var toks []paho.Token
	for _, topic := range stale {
		toks = append(toks, c.publish(topic, 1, true, []byte{}))
	}
	if len(stale) > 0 {
		c.log.Info("removing Home Assistant entities that are no longer configured", "entities", stale)
		c.awaitAll(ctx, toks, "the removal of old entities")
	}
}

// ours reports whether a retained discovery config is one this device made.
func (c *Client) ours(payload []byte) bool {
	var e struct {
		UniqueID string `json:"unique_id"`
	}
	return json.Unmarshal(payload, &e) == nil && strings.HasPrefix(e.UniqueID, c.uniquePrefix())
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

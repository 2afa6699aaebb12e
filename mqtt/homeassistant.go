package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// haEntity is one Home Assistant entity: a value of `cmps` in the device
// config (with `p`), or a whole per-entity config (with device and origin).
type haEntity struct {
	Platform          string    `json:"p,omitempty"`
	Name              string    `json:"name"`
	UniqueID          string    `json:"unique_id"`
	StateTopic        string    `json:"state_topic,omitempty"`    // none for a button
	ValueTemplate     string    `json:"value_template,omitempty"` // none for a button
	CommandTopic      string    `json:"command_topic,omitempty"`
	PayloadOn         string    `json:"payload_on,omitempty"`
	PayloadOff        string    `json:"payload_off,omitempty"`
	PayloadPress      string    `json:"payload_press,omitempty"`
	StateOn           string    `json:"state_on,omitempty"`
	StateOff          string    `json:"state_off,omitempty"`
	Min               *float64  `json:"min,omitempty"`
	Max               *float64  `json:"max,omitempty"`
	Step              float64   `json:"step,omitempty"`
	Mode              string    `json:"mode,omitempty"`
	DeviceClass       string    `json:"device_class,omitempty"`
	UnitOfMeasurement string    `json:"unit_of_measurement,omitempty"`
	StateClass        string    `json:"state_class,omitempty"`
	Availability      []haAvail `json:"availability"`
	AvailabilityMode  string    `json:"availability_mode,omitempty"`
	QoS               byte      `json:"qos"`
	Device            *haDevice `json:"device,omitempty"`
	Origin            *haOrigin `json:"origin,omitempty"`
}

// haAvail is one entry of an availability list; Home Assistant's default
// payloads are ours: online and offline.
type haAvail struct {
	Topic string `json:"topic"`
}

type haDevice struct {
	Identifiers      []string `json:"identifiers"`
	Name             string   `json:"name"`
	Manufacturer     string   `json:"manufacturer"`
	Model            string   `json:"model"`
	SWVersion        string   `json:"sw_version,omitempty"`
	HWVersion        string   `json:"hw_version,omitempty"`
	SerialNumber     string   `json:"serial_number,omitempty"`
	ConfigurationURL string   `json:"configuration_url,omitempty"`
}

type haOrigin struct {
	Name       string `json:"name"`
	SWVersion  string `json:"sw_version,omitempty"`
	SupportURL string `json:"support_url,omitempty"`
}

// haDeviceConfig is the device-based discovery payload (Home Assistant
// 2024.11 and later). Components are keyed by object id; a value is a
// *haEntity or, for a removed component, an haGone.
type haDeviceConfig struct {
	Device     haDevice       `json:"dev"`
	Origin     haOrigin       `json:"o"`
	Components map[string]any `json:"cmps"`
}

// haGone is a removed component: Home Assistant deletes a component whose
// entry is reduced to its platform.
type haGone struct {
	Platform string `json:"p"`
}

// haConfig is one retained discovery message.
type haConfig struct {
	topic   string
	payload []byte
}

// haItem is one signal's entity, built once.
type haItem struct {
	object    string // object id and component key: "air_temperature"
	component string // platform: sensor, binary_sensor, switch, number, button
	entity    haEntity
}

// migrateMarker is what Home Assistant takes, on a discovery topic, as
// "this entity is moving to another discovery topic: keep it".
var migrateMarker = []byte(`{"migrate_discovery": true}`)

// haItems returns one entity per signal: inputs binary_sensor, outputs
// switch (and a button when it has a default pulse), pwm number, sensors
// sensor. A sensor's availability needs the
// bridge online and the sensor fresh (availability mode all).
func (c *Client) haItems() []haItem {
	zero, one := 0.0, 1.0
	seen := make(map[string]string)
	var out []haItem
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
			Name:          s.Name,
			UniqueID:      c.uniquePrefix() + object,
			StateTopic:    c.topics.signal[s.Name],
			ValueTemplate: "{{ value_json.value }}",
			Availability:  []haAvail{{Topic: c.topics.status}},
			QoS:           c.qos,
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
			e.Availability = append(e.Availability, haAvail{Topic: c.topics.available[s.Name]})
			e.AvailabilityMode = "all"
		default:
			continue
		}
		out = append(out, haItem{object: object, component: component, entity: e})
		if s.Kind == pibridge.KindOutput && s.Pulse > 0 {
			// An output with a default pulse (a door bell, a gate) gets a
			// button that pulses it for that long.
			pulse := object + "_pulse"
			if other, dup := seen[pulse]; dup {
				c.log.Warn("Home Assistant object id taken by another signal; no pulse button for this one",
					"signal", s.Name, "other", other, "object_id", pulse)
				continue
			}
			seen[pulse] = s.Name
			out = append(out, haItem{object: pulse, component: "button", entity: haEntity{
				Name:         s.Name + " pulse",
				UniqueID:     c.uniquePrefix() + pulse,
				CommandTopic: c.topics.base + "/" + s.Name + "/pulse",
				PayloadPress: s.Pulse.String(),
				Availability: []haAvail{{Topic: c.topics.status}},
				QoS:          c.qos,
			}})
		}
	}
	return out
}

func (c *Client) haDevice() haDevice {
	d := haDevice{
		Identifiers:      []string{"pibridge_" + c.device.ID},
		Name:             c.device.Name,
		Manufacturer:     "pibridge",
		Model:            "pibridge",
		SWVersion:        c.device.Version,
		HWVersion:        c.host.model,
		SerialNumber:     c.host.serial,
		ConfigurationURL: c.configurationURL(),
	}
	if d.Name == "" {
		d.Name = c.device.ID
	}
	return d
}

func (c *Client) haOrigin() haOrigin {
	return haOrigin{Name: "pibridge", SWVersion: c.device.Version, SupportURL: c.configurationURL()}
}

// configurationURL is the device's link: configured, else the panel.
func (c *Client) configurationURL() string {
	if u := c.cfg.HomeAssistant.ConfigurationURL; u != "" || c.panelURL == nil {
		return u
	}
	return c.panelURL()
}

// entityTopic is a per-entity discovery topic.
func (c *Client) entityTopic(component, object string) string {
	return c.cfg.HomeAssistant.Prefix + "/" + component + "/" + c.device.ID + "/" + object + "/config"
}

// deviceTopic is the device discovery topic.
func (c *Client) deviceTopic() string {
	return c.cfg.HomeAssistant.Prefix + "/device/" + c.device.ID + "/config"
}

// perEntityConfigs returns one retained config per entity, each with the
// device and origin, for Home Assistant before 2024.11.
func (c *Client) perEntityConfigs() []haConfig {
	dev, origin := c.haDevice(), c.haOrigin()
	out := make([]haConfig, 0, len(c.haEntities))
	for _, it := range c.haEntities {
		e := it.entity
		e.Device, e.Origin = &dev, &origin
		payload, err := json.Marshal(e)
		if err != nil { // cannot happen: strings and numbers only
			c.log.Error("encoding discovery config", "signal", e.Name, "err", err)
			continue
		}
		out = append(out, haConfig{topic: c.entityTopic(it.component, it.object), payload: payload})
	}
	return out
}

// deviceConfig returns the device config; gone lists components a
// previous config had, each with its platform, for Home Assistant to
// delete.
func (c *Client) deviceConfig(gone map[string]string) haConfig {
	cfg := haDeviceConfig{Device: c.haDevice(), Origin: c.haOrigin(), Components: make(map[string]any, len(c.haEntities)+len(gone))}
	for _, it := range c.haEntities {
		e := it.entity
		e.Platform = it.component
		cfg.Components[it.object] = &e
	}
	for id, platform := range gone {
		if _, live := cfg.Components[id]; !live {
			cfg.Components[id] = haGone{Platform: platform}
		}
	}
	payload, err := json.Marshal(cfg) // map keys sorted: the same signals give the same bytes
	if err != nil {                   // cannot happen: strings and numbers only
		c.log.Error("encoding the device discovery config", "err", err)
	}
	return haConfig{topic: c.deviceTopic(), payload: payload}
}

// retainedConfigs are the discovery configs the broker held for this node
// id when the connection started: the memory of what earlier runs (and
// earlier versions) published.
type retainedConfigs struct {
	entity map[string][]byte // per-entity topic → payload
	device []byte            // the device config, nil if none
	meta   []byte            // the previous run's meta, nil if none
}

// discoveryPlan returns the discovery messages of a new connection, in
// stages: each stage is published and acknowledged before the next.
//
// Device mode (the default): `{"migrate_discovery":true}` on every
// per-entity config of ours whose entity lives on in the device config
// (Home Assistant then keeps the entity, its id and the user's settings,
// and lets the device config take it over), then the device config, with
// the components an earlier device config had and this one has not
// reduced to their platform so that Home Assistant deletes them, then
// every per-entity config of ours emptied.
//
// Per-entity mode: the same backwards (a device config of ours is marked
// for migration, the per-entity configs published, the device config
// emptied), and per-entity configs of ours no longer configured emptied.
func (c *Client) discoveryPlan(old retainedConfigs) (plan [][]haConfig, current []haConfig) {
	var mark, clear []haConfig
	oldDevice := c.ownDeviceConfig(old.device)
	if c.cfg.HomeAssistant.PerEntity {
		current = c.perEntityConfigs()
		want := make(map[string]bool, len(current))
		for _, m := range current {
			want[m.topic] = true
		}
		if oldDevice != nil {
			mark = append(mark, haConfig{topic: c.deviceTopic(), payload: migrateMarker})
			clear = append(clear, haConfig{topic: c.deviceTopic(), payload: []byte{}})
		}
		for _, topic := range sortedKeys(old.entity) {
			if !want[topic] && c.ownEntityConfig(old.entity[topic]) {
				clear = append(clear, haConfig{topic: topic, payload: []byte{}})
			}
		}
	} else {
		live := make(map[string]string, len(c.haEntities)) // per-entity topic → unique_id
		for _, it := range c.haEntities {
			live[c.entityTopic(it.component, it.object)] = it.entity.UniqueID
		}
		for _, topic := range sortedKeys(old.entity) {
			p := old.entity[topic]
			if !c.ownEntityConfig(p) {
				continue
			}
			// Migrated only onto the same platform and unique_id: a signal
			// that changed kind is a new entity, and the old one goes.
			if uid, ok := live[topic]; ok && uniqueID(p) == uid {
				mark = append(mark, haConfig{topic: topic, payload: migrateMarker})
			}
			clear = append(clear, haConfig{topic: topic, payload: []byte{}})
		}
		gone := map[string]string{}
		if oldDevice != nil {
			for id, comp := range oldDevice.Components {
				if comp.Platform != "" && comp.UniqueID != "" { // an entry already reduced has been told
					gone[id] = comp.Platform
				}
			}
		}
		current = []haConfig{c.deviceConfig(gone)}
	}
	for _, stage := range [][]haConfig{mark, current, clear} {
		if len(stage) > 0 {
			plan = append(plan, stage)
		}
	}
	return plan, current
}

// oldDeviceConfig is what the bridge reads back of a retained device config.
type oldDeviceConfig struct {
	Device struct {
		Identifiers []string `json:"identifiers"`
	} `json:"dev"`
	Components map[string]struct {
		Platform string `json:"p"`
		UniqueID string `json:"unique_id"`
	} `json:"cmps"`
}

// ownDeviceConfig decodes a retained device config if this device made it.
func (c *Client) ownDeviceConfig(p []byte) *oldDeviceConfig {
	if len(p) == 0 {
		return nil
	}
	var d oldDeviceConfig
	if json.Unmarshal(p, &d) != nil || !slices.Contains(d.Device.Identifiers, "pibridge_"+c.device.ID) {
		return nil
	}
	return &d
}

// ownEntityConfig reports whether a retained per-entity config is one
// this device made, or a migration marker this device left under its
// node id when interrupted.
func (c *Client) ownEntityConfig(p []byte) bool {
	if bytes.Equal(bytes.ReplaceAll(p, []byte(" "), nil), []byte(`{"migrate_discovery":true}`)) {
		return true
	}
	return strings.HasPrefix(uniqueID(p), c.uniquePrefix())
}

func uniqueID(p []byte) string {
	var e struct {
		UniqueID string `json:"unique_id"`
	}
	if json.Unmarshal(p, &e) != nil {
		return ""
	}
	return e.UniqueID
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// publishDiscovery publishes the current discovery configs again (Home
// Assistant restarted) and returns their tokens.
func (c *Client) publishDiscovery() []paho.Token {
	var toks []paho.Token
	for _, m := range c.haCurrent {
		toks = append(toks, c.publish(m.topic, 1, true, m.payload))
	}
	return toks
}

// discover runs the discovery plan of a new connection: it reads back what
// the broker retains under this node id, then publishes stage by stage.
func (c *Client) discover(ctx context.Context, old retainedConfigs, ok bool) {
	if !ok {
		old = retainedConfigs{}
	}
	plan, current := c.discoveryPlan(old)
	c.haCurrent = current
	if len(plan) > 1 && bytes.Equal(plan[0][0].payload, migrateMarker) {
		c.log.Info("moving Home Assistant entities to another discovery form; their ids and settings stay",
			"per_entity", c.cfg.HomeAssistant.PerEntity, "configs", len(plan[0]))
	}
	for _, stage := range plan {
		var toks []paho.Token
		for _, m := range stage {
			toks = append(toks, c.publish(m.topic, 1, true, m.payload))
		}
		if !c.awaitAll(ctx, toks, "discovery") {
			return
		}
	}
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

// sweepFilters are subscribed for collectRetained: meta, whose retained
// copy is what the previous run published and whose live copy marks the
// end of the retained messages, and with discovery on every per-entity
// config under this node id and the device config.
func (c *Client) readBackFilters() []string {
	if c.haStatus == "" {
		return []string{c.topics.meta}
	}
	return []string{c.cfg.HomeAssistant.Prefix + "/+/" + c.device.ID + "/+/config", c.deviceTopic(), c.topics.meta}
}

func (c *Client) inSweep(topic string) bool {
	for _, f := range c.sweepFilters {
		if pibridge.TopicMatches(f, topic) {
			return true
		}
	}
	return false
}

// maxSweepPayload bounds a config copied out of paho's handler: a device
// config is about 450 bytes a signal.
const maxSweepPayload = 256 << 10

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

// collectRetained returns the previous run's meta and the discovery
// configs the broker retains under this node id. Subscribed before meta was published, the bridge receives
// every retained config, then the live copy of its own meta: brokers send
// a subscription's retained messages before anything published after it.
// ok is false when that copy did not come back in time.
func (c *Client) collectRetained(ctx context.Context) (old retainedConfigs, ok bool) {
	defer func() {
		c.sweeping.Store(false)
		var drop []string
		for _, f := range c.sweepFilters {
			if !slices.Contains(c.bridgeFilters(), f) {
				drop = append(drop, f)
			}
		}
		if len(drop) > 0 {
			if err := await(ctx, c.paho.Unsubscribe(drop...), c.tm.writeTimeout); err != nil && ctx.Err() == nil {
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
	if !c.sweeping.Load() {
		return old, false
	}
	old.entity = map[string][]byte{}
	t := time.NewTimer(c.tm.writeTimeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return old, false
		case <-t.C:
			c.log.Warn("could not read back what the broker retains for this device; publishing without migration or removals")
			return old, false
		case in := <-c.sweep:
			switch {
			case !in.retained:
				if in.topic == c.topics.meta {
					if c.sweepLost.Swap(false) {
						c.log.Warn("too many discovery configs at once; some removed entities may remain until the next connection")
					}
					return old, true
				}
			case in.tooLong || len(in.payload) == 0:
			case in.topic == c.topics.meta:
				old.meta = in.payload
			case in.topic == c.deviceTopic():
				old.device = in.payload
			default:
				old.entity[in.topic] = in.payload
			}
		}
	}
}

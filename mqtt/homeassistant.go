package mqtt

import (
	"encoding/json"
	"strings"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

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
			UniqueID:            "pibridge_" + c.device.ID + "_" + object,
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
		default:
			continue
		}
		payload, err := json.Marshal(e)
		if err != nil { // cannot happen: strings and numbers only
			c.log.Error("encoding discovery config", "signal", s.Name, "err", err)
			continue
		}
		out = append(out, haConfig{
			topic:   prefix + "/" + component + "/" + c.device.ID + "/" + object + "/config",
			payload: payload,
		})
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

package gateway

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"pibridge"
)

// The section's defaults (Defaults).
const (
	DefaultName           = "pibridge fleet"
	DefaultTopicPrefix    = "pibridge"
	DefaultHistory        = time.Hour
	DefaultCommandTimeout = 5 * time.Second
	DefaultMaxDevices     = 10000
	// The http: section is the bridge's, decoded over its defaults; these
	// are the same, so a gateway built in code behaves as one from a file.
	DefaultMaxClients = 256
	DefaultListen     = "127.0.0.1:8080"

	maxHistory        = 24 * time.Hour
	maxCommandTimeout = time.Minute
)

// Config is the gateway: section of the configuration file, decoded over
// Defaults. HTTP and MQTT are not part of the section: the
// wiring fills them from the file's http: and mqtt: sections, which a
// gateway shares with a bridge (README "Many boards").
type Config struct {
	Name           string            `yaml:"name"`
	TopicPrefix    string            `yaml:"topic_prefix"`
	History        pibridge.Duration `yaml:"history"`
	CommandTimeout pibridge.Duration `yaml:"command_timeout"`
	// MaxDevices bounds the device table: meta topics beyond it are
	// ignored and counted, so a flood of junk retained topics cannot
	// exhaust memory.
	MaxDevices int `yaml:"max_devices"`

	HTTP HTTPConfig `yaml:"-"`
	MQTT MQTTConfig `yaml:"-"`
}

// HTTPConfig is what the gateway takes from the http: section.
type HTTPConfig struct {
	Listen         string
	Token          string // "none" turns authentication off
	TokenFile      string
	ReadToken      string
	AllowedOrigins []string
	AllowedHosts   []string
	MaxClients     int
	CertFile       string
	KeyFile        string
}

// MQTTConfig is what the gateway takes from the mqtt: section.
type MQTTConfig struct {
	// Brokers are tried in order: the nodes of the fleet's cluster.
	Brokers      []string
	ClientID     string // default pibridge-gateway-<host>-<random>
	Username     string
	PasswordFile string
}

// Validate returns every problem of the section at once, each with its
// field path ("gateway.history"). It does no I/O. HTTP and MQTT are the
// http: and mqtt: sections' to check, with their own rules.
func (c Config) Validate() error {
	var p pibridge.Problems
	switch {
	case c.Name == "":
		p.Addf("gateway.name", "must not be empty")
	case len(c.Name) > 128:
		p.Addf("gateway.name", "longer than 128 characters")
	}
	if err := validPrefix(c.TopicPrefix); err != nil {
		p.Addf("gateway.topic_prefix", "%q: %v", c.TopicPrefix, err)
	}
	if h := c.History.D(); h < time.Minute || h > maxHistory {
		p.Addf("gateway.history", "%s: must be from 1m to %s", h, maxHistory)
	}
	if t := c.CommandTimeout.D(); t < 10*time.Millisecond || t > maxCommandTimeout {
		p.Addf("gateway.command_timeout", "%s: must be from 10ms to %s", t, maxCommandTimeout)
	}
	switch {
	case c.MaxDevices < 0:
		p.Addf("gateway.max_devices", "%d: must not be negative", c.MaxDevices)
	case c.MaxDevices == 0:
		p.Addf("gateway.max_devices", "0: must be at least 1")
	}
	return p.Err()
}

// validPrefix applies the topic rules of README "MQTT topics" to a prefix.
func validPrefix(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 256:
		return errors.New("longer than 256 characters")
	case strings.ContainsAny(s, "+#\x00"):
		return errors.New("must not contain +, # or NUL")
	case strings.HasPrefix(s, "$"):
		return errors.New("must not start with $")
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//"):
		return errors.New("must not start or end with / or hold an empty level")
	}
	return nil
}

// Defaults returns the section as it is before the file is decoded over
// it: a key the file leaves out keeps its default, a key it sets is
// validated as written. A Config built in code starts from it too, for
// New takes its Config as it is. TopicPrefix is left to Derive.
func Defaults() Config {
	return Config{
		Name:           DefaultName,
		History:        pibridge.Duration(DefaultHistory),
		CommandTimeout: pibridge.Duration(DefaultCommandTimeout),
		MaxDevices:     DefaultMaxDevices,
		HTTP:           HTTPConfig{Listen: DefaultListen, MaxClients: DefaultMaxClients},
	}
}

// Derive fills in what depends on another section, the one place such
// defaults live: an empty topic_prefix is mqtt.topic_prefix (the fleet's
// devices publish under it). The wiring calls it once, before Validate.
func (c *Config) Derive(mqttTopicPrefix string) {
	if c.TopicPrefix == "" {
		c.TopicPrefix = mqttTopicPrefix
	}
}

// loopbackListen reports whether a listen address takes connections from
// this machine only.
func loopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func itoa(n int) string { return strconv.Itoa(n) }

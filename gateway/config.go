package gateway

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"pibridge"
)

// Defaults applied by New.
const (
	DefaultName           = "pibridge fleet"
	DefaultTopicPrefix    = "pibridge"
	DefaultHistory        = time.Hour
	DefaultCommandTimeout = 5 * time.Second
	DefaultMaxDevices     = 10000
	DefaultMaxClients     = 1024
	DefaultListen         = "127.0.0.1:8080"

	maxHistory        = 24 * time.Hour
	maxCommandTimeout = time.Minute
)

// Config is the gateway: section of the configuration file. The zero
// value is the default. HTTP and MQTT are not part of the section: the
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
	if len(c.Name) > 128 {
		p.Addf("gateway.name", "longer than 128 characters")
	}
	if c.TopicPrefix != "" {
		if err := validPrefix(c.TopicPrefix); err != nil {
			p.Addf("gateway.topic_prefix", "%q: %v", c.TopicPrefix, err)
		}
	}
	if h := c.History.D(); h != 0 && (h < time.Minute || h > maxHistory) {
		p.Addf("gateway.history", "%s: must be from 1m to %s", h, maxHistory)
	}
	if t := c.CommandTimeout.D(); t != 0 && (t < 10*time.Millisecond || t > maxCommandTimeout) {
		p.Addf("gateway.command_timeout", "%s: must be from 10ms to %s", t, maxCommandTimeout)
	}
	if c.MaxDevices < 0 {
		p.Addf("gateway.max_devices", "%d: must not be negative", c.MaxDevices)
	}
	return p.Err()
}

// validPrefix applies the topic rules of README "MQTT topics" to a prefix.
func validPrefix(s string) error {
	switch {
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

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = DefaultTopicPrefix
	}
	if c.History == 0 {
		c.History = pibridge.Duration(DefaultHistory)
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = pibridge.Duration(DefaultCommandTimeout)
	}
	if c.MaxDevices == 0 {
		c.MaxDevices = DefaultMaxDevices
	}
	if c.HTTP.MaxClients == 0 {
		c.HTTP.MaxClients = DefaultMaxClients
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultListen
	}
	return c
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

package mqtt

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	pibridge "pibridge"
)

// Embedded is the broker address that means the broker inside this process.
const Embedded = "embedded"

// The section's defaults (Defaults).
const (
	DefaultBroker         = "tcp://localhost:1883"
	DefaultEmbeddedListen = "127.0.0.1:1883"
	DefaultTopicPrefix    = "pibridge"
	DefaultQoS            = 1
	DefaultQueueMax       = 100000
	DefaultHAPrefix       = "homeassistant"
	DefaultHAStatusTopic  = "homeassistant/status"
	DefaultHomiePrefix    = "homie"

	// MaxQueueMax bounds queue_max while the outbox lives in memory
	// (about 100 bytes a reading).
	MaxQueueMax = 1000000
	// maxPrefixLen keeps P/D/<signal>/set well inside every broker's limits.
	maxPrefixLen = 256
	maxClientID  = 256
)

// Config is the `mqtt:` section of the configuration file.
type Config struct {
	// Broker is one URL or an ordered fallback list; "embedded" is the
	// broker inside this process.
	Broker         Brokers `yaml:"broker"`
	EmbeddedListen string  `yaml:"embedded_listen"`
	// EmbeddedUsersFile lists the embedded broker's users, one
	// "user:password" a line; beyond loopback without it, a password is
	// generated in state_dir (README "Home Assistant").
	EmbeddedUsersFile string             `yaml:"embedded_users_file"`
	ClientID          string             `yaml:"client_id"`
	Username          string             `yaml:"username"`
	PasswordFile      string             `yaml:"password_file"`
	TLS               pibridge.ClientTLS `yaml:"tls"`
	TopicPrefix       string             `yaml:"topic_prefix"`
	QoS               int                `yaml:"qos"`
	QueueMax          int                `yaml:"queue_max"`
	HomeAssistant     HomeAssistant      `yaml:"homeassistant"`
	Homie             Homie              `yaml:"homie"`
	// BridgeAllow are the topic filters browsers may subscribe and publish
	// to through the WebSocket.
	BridgeAllow []string `yaml:"bridge_allow"`

	// DeviceID is device.id, from another section: the bridge's own
	// topics, which bridge_allow must stay clear of, are under it. Derive
	// sets it.
	DeviceID string `yaml:"-"`
}

// HomeAssistant configures MQTT discovery (README "Home Assistant").
type HomeAssistant struct {
	Discovery bool   `yaml:"discovery"`
	Prefix    string `yaml:"prefix"`
	// StatusTopic is where Home Assistant announces itself (its birth
	// message): its own setting, not derived from the discovery prefix.
	StatusTopic string `yaml:"status_topic"`
	// PerEntity publishes one config per entity, for Home Assistant
	// before 2024.11, instead of one device config.
	PerEntity bool `yaml:"per_entity"`
	// ConfigurationURL is the device's link in Home Assistant; default
	// the panel's address.
	ConfigurationURL string `yaml:"configuration_url"`
}

// Homie turns on the Homie v5 convention (README "Homie").
type Homie struct {
	Enabled bool `yaml:"enabled"`
	// Prefix is the Homie domain: topics are <prefix>/5/<device>/….
	Prefix string `yaml:"prefix"`
}

// Brokers is the broker list. In YAML it is one string or a list of strings.
type Brokers []string

// UnmarshalYAML accepts `broker: tcp://a:1883` and `broker: [tcp://a:1883, embedded]`.
func (b *Brokers) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*b = nil
			return nil
		}
		*b = Brokers{n.Value}
		return nil
	case yaml.SequenceNode:
		list := make(Brokers, len(n.Content))
		for i, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("item %d (line %d): want a URL", i, c.Line)
			}
			list[i] = c.Value
		}
		*b = list
		return nil
	}
	return errors.New("want a URL or a list of URLs")
}

// Defaults returns the section as it is before the file is decoded over
// it: a key the file leaves out keeps its default here, and a key it sets
// is validated as written (qos: 0 and discovery: false are choices).
func Defaults() Config {
	return Config{
		Broker:         Brokers{DefaultBroker},
		EmbeddedListen: DefaultEmbeddedListen,
		TopicPrefix:    DefaultTopicPrefix,
		QoS:            DefaultQoS,
		QueueMax:       DefaultQueueMax,
		HomeAssistant:  HomeAssistant{Discovery: true, Prefix: DefaultHAPrefix, StatusTopic: DefaultHAStatusTopic},
		Homie:          Homie{Prefix: DefaultHomiePrefix},
	}
}

// Derive fills in what depends on device.id, another section: the one
// place such defaults live. DeviceID is set, and an empty client_id
// becomes "pibridge-<device.id>". The wiring calls it once, after
// decoding and before Validate; New takes the result as it is.
func (c *Config) Derive(deviceID string) {
	c.DeviceID = deviceID
	if c.ClientID == "" {
		c.ClientID = "pibridge-" + deviceID
	}
}

// UsesEmbedded reports whether one of the brokers is the embedded one.
func (c *Config) UsesEmbedded() bool {
	for _, b := range c.Broker {
		if b == Embedded {
			return true
		}
	}
	return false
}

// BrokerSummary is the broker list for people: the -check table, logs.
func (c *Config) BrokerSummary() string { return c.brokerSummary("") }

// brokerSummary is BrokerSummary with the embedded broker's real address,
// when it is known (Options.EmbeddedAddr).
func (c *Config) brokerSummary(embeddedAddr string) string {
	out := make([]string, len(c.Broker))
	for i, b := range c.Broker {
		if b == Embedded {
			b = fmt.Sprintf("embedded (%s)", c.embeddedDialAddr(embeddedAddr))
		}
		out[i] = b
	}
	return strings.Join(out, ", ")
}

// embeddedDialAddr is the host:port the client dials for "embedded": addr,
// the real address, when known, else embedded_listen; a wildcard host
// is replaced by loopback.
func (c *Config) embeddedDialAddr(addr string) string {
	if addr == "" {
		addr = c.EmbeddedListen
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// brokerURLs returns the URLs paho dials, in order, with embeddedAddr as
// in brokerSummary. Validate has accepted them.
func (c *Config) brokerURLs(embeddedAddr string) []string {
	out := make([]string, 0, len(c.Broker))
	for _, b := range c.Broker {
		if b == Embedded {
			out = append(out, "tcp://"+c.embeddedDialAddr(embeddedAddr))
			continue
		}
		u, err := url.Parse(b)
		if err != nil {
			out = append(out, b)
			continue
		}
		// paho dials tcp and ssl URLs as host:port; supply MQTT's ports.
		if u.Port() == "" {
			switch u.Scheme {
			case "tcp":
				u.Host = net.JoinHostPort(u.Hostname(), "1883")
			case "ssl":
				u.Host = net.JoinHostPort(u.Hostname(), "8883")
			}
		}
		out = append(out, u.String())
	}
	return out
}

func (c *Config) qos() byte { return byte(c.QoS) }

func (c *Config) discovery() bool { return c.HomeAssistant.Discovery }

// Validate reports every problem of the section at once, each with its
// field path relative to `mqtt:`. Call it after Derive. It does no I/O:
// CheckFiles reads the files.
func (c *Config) Validate() error {
	var p pibridge.Problems
	c.validateBrokers(&p)
	switch {
	case c.ClientID == "":
		p.Addf("client_id", "must not be empty")
	case len(c.ClientID) > maxClientID:
		p.Addf("client_id", "must be at most %d bytes", maxClientID)
	case !utf8.ValidString(c.ClientID) || strings.ContainsRune(c.ClientID, 0):
		p.Addf("client_id", "%q: must be UTF-8 without NUL", c.ClientID)
	}
	if c.PasswordFile != "" {
		if c.Username == "" {
			p.Addf("password_file", "set, but username is empty (MQTT sends a password only with a user name)")
		}
	}
	p.Add("tls", c.TLS.Validate())
	if err := validatePrefix(c.TopicPrefix); err != nil {
		p.Addf("topic_prefix", "%v", err)
	}
	if c.QoS < 0 || c.QoS > 2 {
		p.Addf("qos", "%d: must be 0, 1 or 2", c.QoS)
	}
	switch {
	case c.QueueMax < 1:
		p.Addf("queue_max", "%d: must be at least 1", c.QueueMax)
	case c.QueueMax > MaxQueueMax:
		p.Addf("queue_max", "%d: must be at most %d", c.QueueMax, MaxQueueMax)
	}
	if c.discovery() {
		if err := validatePrefix(c.HomeAssistant.Prefix); err != nil {
			p.Addf("homeassistant.prefix", "%v", err)
		}
		if err := ValidateTopic(c.HomeAssistant.StatusTopic); err != nil {
			p.Addf("homeassistant.status_topic", "%v", err)
		}
		if u := c.HomeAssistant.ConfigurationURL; u != "" {
			if pu, err := url.Parse(u); err != nil || pu.Scheme == "" || pu.Host == "" {
				p.Addf("homeassistant.configuration_url", "%q: want an absolute URL such as http://pi.local:8080/", u)
			}
		}
	}
	if c.Homie.Enabled && !homieIDOK(c.Homie.Prefix) {
		p.Addf("homie.prefix", "%q: must be one topic level of a-z, 0-9 and - (Homie's ID format)", c.Homie.Prefix)
	}
	for i, f := range c.BridgeAllow {
		path := fmt.Sprintf("bridge_allow[%d]", i)
		if err := pibridge.CheckFilter(f); err != nil {
			p.Addf(path, "%v", err)
			continue
		}
		// Browsers must not write what clients take for the bridge's own
		// truth (status, readings, discovery), nor read its acks.
		for _, own := range c.ownFilters() {
			if pibridge.FiltersOverlap(f, own) {
				p.Addf(path, "%q overlaps the bridge's own topics %s", f, own)
				break
			}
		}
	}
	return p.Err()
}

func (c *Config) validateBrokers(p *pibridge.Problems) {
	if len(c.Broker) == 0 {
		p.Addf("broker", "must name at least one broker (tcp://host:1883 or embedded)")
		return
	}
	seen := make(map[string]bool, len(c.Broker))
	embedded := false
	for i, b := range c.Broker {
		path := "broker"
		if len(c.Broker) > 1 {
			path = fmt.Sprintf("broker[%d]", i)
		}
		if seen[b] {
			p.Addf(path, "%q: listed twice", b)
			continue
		}
		seen[b] = true
		if b == Embedded {
			embedded = true
			continue
		}
		if err := brokerProblem(b); err != nil {
			p.Addf(path, "%q: %v", b, err)
		}
	}
	if embedded {
		if err := listenProblem(c.EmbeddedListen); err != nil {
			p.Addf("embedded_listen", "%q: %v", c.EmbeddedListen, err)
		}
		// The bridge's client has one identity for every broker it lists:
		// an internal one must not go to another broker, so it is the
		// configured one.
		if c.EmbeddedNeedsAuth() && len(c.Broker) > 1 && (c.Username == "" || c.PasswordFile == "") {
			p.Addf("username", "the embedded broker asks for credentials and another broker is listed: set username and password_file, the bridge's identity on both")
		}
	} else if c.EmbeddedUsersFile != "" {
		p.Addf("embedded_users_file", "set, but the embedded broker is not used")
	}
}

func brokerProblem(b string) error {
	u, err := url.Parse(b)
	if err != nil || u.Opaque != "" {
		return errors.New("not a URL (want e.g. tcp://localhost:1883)")
	}
	switch u.Scheme {
	case "tcp", "ssl", "ws", "wss":
	default:
		return errors.New("scheme must be tcp, ssl, ws, wss or embedded")
	}
	if u.Hostname() == "" {
		return errors.New("missing host")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return errors.New("port must be a number from 1 to 65535")
		}
	}
	if (u.Scheme == "tcp" || u.Scheme == "ssl") && (u.Path != "" && u.Path != "/" || u.RawQuery != "") {
		return errors.New("tcp and ssl URLs take no path or query")
	}
	return nil
}

func listenProblem(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port such as 127.0.0.1:1883")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

// CheckFiles reports the files the section names that the bridge will
// need at start but cannot read, each with its field path: the step of
// their own that -check and the start both run after Validate.
func (c *Config) CheckFiles() error {
	var p pibridge.Problems
	if c.PasswordFile != "" {
		p.Add("password_file", pibridge.CheckFile(c.PasswordFile))
	}
	if c.UsesEmbedded() && c.EmbeddedUsersFile != "" {
		p.Add("embedded_users_file", pibridge.CheckFile(c.EmbeddedUsersFile))
	}
	p.Add("tls", c.TLS.CheckFiles())
	return p.Err()
}

// ValidateTopic checks a topic name the bridge publishes to: not
// empty, valid UTF-8, no NUL, no wildcards, no leading $, at most 65535 bytes.
// mosquitto disconnects a client that publishes to a wildcard topic, and
// paho's resend after reconnect would turn that into a reconnect loop.
func ValidateTopic(t string) error {
	if err := pibridge.CheckTopicName(t); err != nil {
		return err
	}
	if t[0] == '$' {
		return fmt.Errorf("%q: must not start with $", pibridge.Clip(t))
	}
	return nil
}

// validatePrefix checks topic_prefix and homeassistant.prefix: a topic
// name, at most 256 bytes, without empty levels.
func validatePrefix(p string) error {
	if err := ValidateTopic(p); err != nil {
		return err
	}
	if len(p) > maxPrefixLen {
		return fmt.Errorf("must be at most %d bytes", maxPrefixLen)
	}
	for _, level := range strings.Split(p, "/") {
		if level == "" {
			return fmt.Errorf("%q: must not have empty levels (no leading, trailing or double /)", p)
		}
	}
	return nil
}

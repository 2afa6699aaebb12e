package mqtt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"pibridge"
	"pibridge/internal/strictyaml"
)

func TestConfigYAML(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       Brokers
	}{
		{"one string", "broker: tcp://a:1883", Brokers{"tcp://a:1883"}},
		{"a list", "broker: [tcp://a:1883, embedded]", Brokers{"tcp://a:1883", "embedded"}},
		{"block list", "broker:\n  - ssl://a:8883\n  - ws://b/mqtt", Brokers{"ssl://a:8883", "ws://b/mqtt"}},
		{"null", "broker:", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			if err := strictyaml.Unmarshal([]byte(tt.yaml), &c); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Broker, tt.want) {
				t.Errorf("broker = %q, want %q", c.Broker, tt.want)
			}
		})
	}

	var c Config
	err := strictyaml.Unmarshal([]byte("broker: {a: b}"), &c)
	var fe *pibridge.FieldError
	if !errors.As(err, &fe) || fe.Line != 1 || fe.Error() != "broker: want a URL or a list of URLs" {
		t.Errorf("mapping as broker: err = %v", err)
	}

	// Every key of README's Configuration, decoded strictly.
	full := `
broker: tcp://localhost:1883
embedded_listen: "127.0.0.1:1883"
client_id: ""
username: ""
password_file: ""
tls: {ca_file: "", cert_file: "", key_file: ""}
topic_prefix: pibridge
qos: 0
queue_max: 100000
homeassistant: {discovery: false, prefix: homeassistant}
bridge_allow: ["home/#"]
`
	c = Defaults()
	if err := strictyaml.Unmarshal([]byte(full), &c); err != nil {
		t.Fatal(err)
	}
	c.Derive("greenhouse")
	if c.QoS != 0 || c.HomeAssistant.Discovery || c.ClientID != "pibridge-greenhouse" || c.BridgeAllow[0] != "home/#" {
		t.Errorf("decoded %+v: qos 0 and discovery false must survive decoding over Defaults", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// What the text leaves out keeps its default.
	c = Defaults()
	if err := strictyaml.Unmarshal([]byte("homeassistant: {per_entity: true}\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.QoS != DefaultQoS || !c.HomeAssistant.Discovery || c.HomeAssistant.Prefix != DefaultHAPrefix || !c.HomeAssistant.PerEntity {
		t.Errorf("decoded %+v: the defaults the text leaves out are lost", c)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Defaults()
	c.Derive("dev1")
	want := Config{
		Broker:         Brokers{"tcp://localhost:1883"},
		EmbeddedListen: "127.0.0.1:1883",
		ClientID:       "pibridge-dev1",
		TopicPrefix:    "pibridge",
		QoS:            1,
		QueueMax:       100000,
		HomeAssistant:  HomeAssistant{Discovery: true, Prefix: "homeassistant", StatusTopic: "homeassistant/status"},
		Homie:          Homie{Prefix: "homie"},
		DeviceID:       "dev1",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got  %+v\n want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"embedded and a fallback", func(c *Config) { c.Broker = Brokers{"embedded", "tcp://10.0.0.2", "wss://h/mqtt"} }, nil},
		{"bad brokers", func(c *Config) {
			c.Broker = Brokers{"tcp://a:1883", "ftp://x", "a:1883", "tcp://:1883", "tcp://a:0", "ssl://a:8883/x", "tcp://a:1883", "tcp://a:x"}
		}, []string{
			`broker[1]: "ftp://x": scheme must be tcp, ssl, ws, wss or embedded`,
			`broker[2]: "a:1883": not a URL (want e.g. tcp://localhost:1883)`,
			`broker[3]: "tcp://:1883": missing host`,
			`broker[4]: "tcp://a:0": port must be a number from 1 to 65535`,
			`broker[5]: "ssl://a:8883/x": tcp and ssl URLs take no path or query`,
			`broker[6]: "tcp://a:1883": listed twice`,
			`broker[7]: "tcp://a:x": not a URL (want e.g. tcp://localhost:1883)`,
		}},
		{"one bad broker", func(c *Config) { c.Broker = Brokers{"mqtt://a"} },
			[]string{`broker: "mqtt://a": scheme must be tcp, ssl, ws, wss or embedded`}},
		{"no broker", func(c *Config) { c.Broker = Brokers{} },
			[]string{`broker: must name at least one broker (tcp://host:1883 or embedded)`}},
		{"embedded_listen", func(c *Config) { c.Broker = Brokers{"embedded"}; c.EmbeddedListen = "1883" },
			[]string{`embedded_listen: "1883": want host:port such as 127.0.0.1:1883`}},
		{"embedded_listen unused", func(c *Config) { c.EmbeddedListen = "1883" }, nil},
		{"qos", func(c *Config) { c.QoS = 3 }, []string{`qos: 3: must be 0, 1 or 2`}},
		{"qos 0", func(c *Config) { c.QoS = 0 }, nil},
		{"queue_max", func(c *Config) { c.QueueMax = -1 }, []string{`queue_max: -1: must be at least 1`}},
		{"queue_max too big", func(c *Config) { c.QueueMax = 2000000 }, []string{`queue_max: 2000000: must be at most 1000000`}},
		{"prefix wildcard", func(c *Config) { c.TopicPrefix = "home/+" }, []string{`topic_prefix: "home/+": must not contain + or #`}},
		{"prefix hash", func(c *Config) { c.TopicPrefix = "#" }, []string{`topic_prefix: "#": must not contain + or #`}},
		{"prefix dollar", func(c *Config) { c.TopicPrefix = "$SYS" }, []string{`topic_prefix: "$SYS": must not start with $`}},
		{"prefix NUL", func(c *Config) { c.TopicPrefix = "a\x00b" }, []string{`topic_prefix: "a\x00b": must not contain NUL`}},
		{"prefix empty level", func(c *Config) { c.TopicPrefix = "home/" }, []string{`topic_prefix: "home/": must not have empty levels (no leading, trailing or double /)`}},
		{"prefix long", func(c *Config) { c.TopicPrefix = strings.Repeat("a", 257) }, []string{`topic_prefix: must be at most 256 bytes`}},
		{"prefix nested", func(c *Config) { c.TopicPrefix = "site/greenhouse" }, nil},
		{"prefix empty", func(c *Config) { c.TopicPrefix = "" }, []string{`topic_prefix: must not be empty`}},
		{"ha prefix", func(c *Config) { c.HomeAssistant.Prefix = "ha/#" }, []string{`homeassistant.prefix: "ha/#": must not contain + or #`}},
		{"ha status topic", func(c *Config) { c.HomeAssistant.StatusTopic = "ha/+/status" }, []string{`homeassistant.status_topic: "ha/+/status": must not contain + or #`}},
		{"ha configuration url", func(c *Config) { c.HomeAssistant.ConfigurationURL = "pi.local:8080" }, []string{`homeassistant.configuration_url: "pi.local:8080": want an absolute URL such as http://pi.local:8080/`}},
		{"homie prefix", func(c *Config) { c.Homie = Homie{Enabled: true, Prefix: "Homie/x"} }, []string{`homie.prefix: "Homie/x": must be one topic level of a-z, 0-9 and - (Homie's ID format)`}},
		{"homie prefix, homie off", func(c *Config) { c.Homie.Prefix = "Homie/x" }, nil},
		{"ha prefix, discovery off", func(c *Config) { c.HomeAssistant.Prefix = "ha/#"; c.HomeAssistant.Discovery = false }, nil},
		{"bridge_allow", func(c *Config) { c.BridgeAllow = []string{"home/+/temp", "#", "a/#/b", "a/b+", "", "$SYS/#"} }, []string{
			`bridge_allow[1]: "#" overlaps the bridge's own topics pibridge/dev1/#`,
			`bridge_allow[2]: "a/#/b": # must be alone in the last level`,
			`bridge_allow[3]: "a/b+": + must fill a whole level`,
			`bridge_allow[4]: must not be empty`,
		}},
		{"bridge_allow over the bridge's own topics", func(c *Config) {
			c.BridgeAllow = []string{"pibridge/other/#", "+/dev1/#", "pibridge/+/status", "pibridge/dev1/pump/set", "pibridge/dev1", "homeassistant/switch/#", "+/+/x/config", "pibridge/+", "homeassistant"}
		}, []string{
			`bridge_allow[1]: "+/dev1/#" overlaps the bridge's own topics pibridge/dev1/#`,
			`bridge_allow[2]: "pibridge/+/status" overlaps the bridge's own topics pibridge/dev1/#`,
			`bridge_allow[3]: "pibridge/dev1/pump/set" overlaps the bridge's own topics pibridge/dev1/#`,
			`bridge_allow[4]: "pibridge/dev1" overlaps the bridge's own topics pibridge/dev1/#`,
			`bridge_allow[5]: "homeassistant/switch/#" overlaps the bridge's own topics homeassistant/#`,
			`bridge_allow[6]: "+/+/x/config" overlaps the bridge's own topics pibridge/dev1/#`,
			`bridge_allow[7]: "pibridge/+" overlaps the bridge's own topics pibridge/dev1/#`,
			`bridge_allow[8]: "homeassistant" overlaps the bridge's own topics homeassistant/#`,
		}},
		{"bridge_allow on Home Assistant's topics, discovery off", func(c *Config) {
			c.HomeAssistant.Discovery = false
			c.BridgeAllow = []string{"homeassistant/#"}
		}, nil},
		{"embedded_users_file without the embedded broker", func(c *Config) { c.EmbeddedUsersFile = pw }, []string{
			`embedded_users_file: set, but the embedded broker is not used`,
		}},
		{"embedded_users_file missing", func(c *Config) { c.Broker = Brokers{"embedded"}; c.EmbeddedUsersFile = pw + ".nope" }, []string{
			fmt.Sprintf(`embedded_users_file: %q: no such file`, pw+".nope"),
		}},
		{"embedded beyond loopback beside another broker", func(c *Config) {
			c.Broker = Brokers{"embedded", "tcp://nas:1883"}
			c.EmbeddedListen = "0.0.0.0:1883"
		}, []string{
			`username: the embedded broker asks for credentials and another broker is listed: set username and password_file, the bridge's identity on both`,
		}},
		{"embedded beyond loopback beside another broker, with a user", func(c *Config) {
			c.Broker = Brokers{"embedded", "tcp://nas:1883"}
			c.EmbeddedListen = "0.0.0.0:1883"
			c.Username, c.PasswordFile = "bridge", pw
		}, nil},
		{"client_id", func(c *Config) { c.ClientID = "" }, []string{`client_id: must not be empty`}},
		{"password without user", func(c *Config) { c.PasswordFile = pw }, []string{
			`password_file: set, but username is empty (MQTT sends a password only with a user name)`,
		}},
		{"password file", func(c *Config) { c.Username = "u"; c.PasswordFile = pw }, nil},
		{"missing files", func(c *Config) {
			c.Username = "u"
			c.PasswordFile = filepath.Join(dir, "nope")
			c.TLS = pibridge.ClientTLS{CAFile: dir, CertFile: filepath.Join(dir, "cert.pem")}
		}, []string{
			`tls.key_file: must be set with tls.cert_file`, // Validate's problems, then CheckFiles'
			`password_file: "` + dir + `/nope": no such file`,
			`tls.ca_file: "` + dir + `": is a directory`,
			`tls.cert_file: "` + dir + `/cert.pem": no such file`,
		}},
		{"several at once", func(c *Config) { c.QoS = -1; c.QueueMax = -5; c.Broker = Brokers{"embedded", "embedded"} }, []string{
			`broker[1]: "embedded": listed twice`,
			`qos: -1: must be 0, 1 or 2`,
			`queue_max: -5: must be at least 1`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			c.Derive("dev1")
			tt.edit(&c)
			err := errors.Join(c.Validate(), c.CheckFiles())
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Validate:\n got  %q\n want %q", got, tt.want)
			}
		})
	}
}

func TestValidateTopic(t *testing.T) {
	tests := []struct{ topic, err string }{
		{"pibridge/dev1/air/temperature", ""},
		{"a", ""},
		{"/leading/slash", ""},
		{"", "must not be empty"},
		{"a/+/b", `"a/+/b": must not contain + or #`},
		{"a/#", `"a/#": must not contain + or #`},
		{"$SYS/x", `"$SYS/x": must not start with $`},
		{"a\x00", `"a\x00": must not contain NUL`},
		{"a\xff", `"a\xff": must be valid UTF-8`},
		{strings.Repeat("a", 65536), "must be at most 65535 bytes"},
	}
	for _, tt := range tests {
		err := ValidateTopic(tt.topic)
		if got := errString(err); got != tt.err {
			t.Errorf("ValidateTopic(%.20q) = %q, want %q", tt.topic, got, tt.err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestBrokerURLs(t *testing.T) {
	c := Config{Broker: Brokers{"tcp://a", "ssl://b", "tcp://c:1884", "ws://d/mqtt", "embedded"}, EmbeddedListen: "0.0.0.0:1883"}
	want := []string{"tcp://a:1883", "ssl://b:8883", "tcp://c:1884", "ws://d/mqtt", "tcp://127.0.0.1:1883"}
	if got := c.brokerURLs(""); !reflect.DeepEqual(got, want) {
		t.Errorf("brokerURLs = %q, want %q", got, want)
	}
	if got, want := c.BrokerSummary(), "tcp://a, ssl://b, tcp://c:1884, ws://d/mqtt, embedded (127.0.0.1:1883)"; got != want {
		t.Errorf("BrokerSummary = %q, want %q", got, want)
	}
	if got := c.brokerURLs("127.0.0.1:40000")[4]; got != "tcp://127.0.0.1:40000" {
		t.Errorf("with the embedded broker's real address: %q", got)
	}
	if !c.UsesEmbedded() {
		t.Error("UsesEmbedded = false")
	}
}

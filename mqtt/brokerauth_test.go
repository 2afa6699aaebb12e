package mqtt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// authBroker starts the embedded broker with credentials and ACLs as the
// bridge wires it for dev1, one user "ha", and returns its address and the
// bridge's own password.
func authBroker(t *testing.T) (addr, bridgePW string) {
	t.Helper()
	cfg := Defaults()
	cfg.Derive("dev1")
	bridgePW = pibridge.RandomText()
	b, err := NewAuthBroker("127.0.0.1:0", testLogger(t), cfg.EmbeddedAuth(map[string]string{"ha": "s3cret"}, bridgePW))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.Addr(), bridgePW
}

func as(user, pw string) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) { o.SetUsername(user).SetPassword(pw) }
}

// tryConnect connects a client and returns the connect error.
func tryConnect(t *testing.T, addr string, edit func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("try-" + pibridge.RandomText()[:8]).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	edit(o)
	c := paho.NewClient(o)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-time.After(waitLong):
		t.Fatal("connect: no answer")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(100) })
	}
	return c, tok.Error()
}

func TestEmbeddedBrokerRefusesWithoutCredentials(t *testing.T) {
	addr, bridgePW := authBroker(t)
	for _, tc := range []struct {
		name string
		edit func(*paho.ClientOptions)
		ok   bool
	}{
		{"anonymous", func(*paho.ClientOptions) {}, false},
		{"wrong password", as("ha", "guess"), false},
		{"unknown user", as("root", "s3cret"), false},
		{"the bridge's user, wrong password", as(EmbeddedBridgeUser, "s3cret"), false},
		{"a user taking the bridge's client id", func(o *paho.ClientOptions) { as("ha", "s3cret")(o); o.SetClientID("pibridge-dev1") }, false},
		{"a user with a will on the bridge's status", func(o *paho.ClientOptions) {
			as("ha", "s3cret")(o)
			o.SetWill(base+"/status", "online", 1, true)
		}, false},
		{"a user", as("ha", "s3cret"), true},
		{"a user with a will of its own", func(o *paho.ClientOptions) { as("ha", "s3cret")(o); o.SetWill("ha/status", "offline", 1, true) }, true},
		{"the bridge", as(EmbeddedBridgeUser, bridgePW), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryConnect(t, addr, tc.edit)
			if (err == nil) != tc.ok {
				t.Errorf("connect error %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// A user commands the bridge and reads everything, but cannot write the
// bridge's own topics: its status, readings and discovery stay the
// bridge's, retained values included.
func TestEmbeddedBrokerACL(t *testing.T) {
	addr, bridgePW := authBroker(t)
	core, act := newCore(t)
	runClient(t, newTestClientOpts(t, core, "tcp://"+addr, func(c *Config) {
		c.HomeAssistant.Discovery = true
	}, func(o *Options) { o.EmbeddedPassword = bridgePW }))
	w := watchWith(t, addr, as("ha", "s3cret"), base+"/#", "homeassistant/#")
	waitOnline(w)

	w.publish(base+"/pump/set", `{"value":"on","id":"u1"}`, false)
	if got := waitAck(w, "u1"); got != `{"id":"u1","name":"pump","ok":true}` {
		t.Errorf("a user's command: ack %s", got)
	}
	w.publish(base+"/pump/pulse", `{"for":"1s","id":"u2"}`, false)
	if got := waitAck(w, "u2"); !strings.Contains(got, `"ok":true`) {
		t.Errorf("a user's pulse: ack %s", got)
	}
	w.publish("homeassistant/status", "offline", false) // Home Assistant's birth topic is open
	w.publish("lab/x", "hi", true)                      // and so is everything not the bridge's

	// Forgeries, at QoS 0 (dropped) and QoS 1 (mochi disconnects an MQTT
	// 3.1.1 client for it), each from a fresh connection.
	forged := []struct{ topic, payload string }{
		{base + "/status", "offline"},
		{base + "/pump", `{"value":false,"ts":"2020-01-01T00:00:00Z","seq":1}`},
		{base + "/meta", "{}"},
		{base + "/ack", `{"id":"u9","name":"pump","ok":true}`},
		{base + "/air/temperature/set", "1"},
		{"homeassistant/switch/dev1/pump/config", ""},
	}
	for _, f := range forged {
		for _, qos := range []byte{0, 1} {
			c, err := tryConnect(t, addr, as("ha", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			tok := c.Publish(f.topic, qos, true, f.payload)
			select {
			case <-tok.Done():
			case <-time.After(2 * time.Second): // refused at QoS 1: the connection ends instead
			}
			c.Disconnect(50)
		}
	}
	w.sync()
	for _, m := range w.all() {
		for _, f := range forged {
			if m.Topic == f.topic && m.Payload == f.payload {
				t.Errorf("a forged message got through: %s %q", m.Topic, m.Payload)
			}
		}
	}
	// A new subscriber sees the bridge's retained values, not forgeries.
	w2 := watchWith(t, addr, as("ha", "s3cret"), base+"/status", base+"/pump")
	ms := w2.waitFor("retained status and pump", func(ms []msg) bool { return len(ms) >= 2 })
	for _, m := range ms {
		switch {
		case m.Topic == base+"/status" && m.Payload != "online":
			t.Errorf("retained status %q, want the bridge's online", m.Payload)
		case m.Topic == base+"/pump" && strings.Contains(m.Payload, "2020-01-01"):
			t.Errorf("retained pump reading is the forged one: %s", m.Payload)
		}
	}
	if got := strings.Join(act.Calls(), ", "); got != "set pump true, pulse pump 1s" {
		t.Errorf("actuator calls %q, want the user's two commands only", got)
	}
}

// Without BrokerAuth the broker stays on loopback.
func TestEmbeddedBrokerBeyondLoopbackNeedsAuth(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0"} {
		if _, err := NewBroker(listen, testLogger(t)); err == nil || !strings.Contains(err.Error(), "beyond loopback") {
			t.Errorf("NewBroker(%q) = %v, want an error saying beyond loopback", listen, err)
		}
	}
	for _, tc := range []struct {
		listen, users string
		want          bool
	}{
		{"127.0.0.1:1883", "", false},
		{"localhost:1883", "", false},
		{"[::1]:1883", "", false},
		{"127.0.0.1:1883", "users", true},
		{"0.0.0.0:1883", "", true},
		{":1883", "", true},
		{"192.168.1.5:1883", "", true},
	} {
		c := Config{Broker: Brokers{Embedded}, EmbeddedListen: tc.listen, EmbeddedUsersFile: tc.users}
		if got := c.EmbeddedNeedsAuth(); got != tc.want {
			t.Errorf("EmbeddedNeedsAuth(%q, users %q) = %v, want %v", tc.listen, tc.users, got, tc.want)
		}
	}
}

func TestEmbeddedPasswordFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	pw, created, err := LoadOrCreateEmbeddedPassword(dir)
	if err != nil || !created || len(pw) < 40 {
		t.Fatalf("first start: %q, created %v, err %v", pw, created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, EmbeddedPasswordFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v, mode %v; want 0600", err, fi.Mode())
	}
	again, created, err := LoadOrCreateEmbeddedPassword(dir)
	if err != nil || created || again != pw {
		t.Errorf("second start: %q, created %v, err %v; want the same password, not created", again, created, err)
	}
}

func TestLoadEmbeddedUsers(t *testing.T) {
	for _, tc := range []struct {
		name, text, err string
		users           int
	}{
		{"two users", "# Home Assistant\nha:s3cret\n\nnodered:pa:ss:word\r\n", "", 2},
		{"no colon", "ha s3cret\n", "line 1: want user:password", 0},
		{"empty password", "ha:\n", "line 1: the user name and the password must not be empty", 0},
		{"reserved", "ok:x\n$bridge:x\n", `line 2: user "$bridge": names starting with $ are reserved`, 0},
		{"twice", "ha:x\nha:y\n", `line 2: user "ha" is listed twice`, 0},
		{"empty", "# nobody\n", "lists no user", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			os.WriteFile(path, []byte(tc.text), 0o600)
			users, err := LoadEmbeddedUsers(path)
			switch {
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("err %v, want one containing %q", err, tc.err)
			case len(users) != tc.users:
				t.Errorf("%d users, want %d", len(users), tc.users)
			}
			if tc.users == 2 && users["nodered"] != "pa:ss:word" {
				t.Errorf("nodered's password %q, want pa:ss:word (only the first colon splits)", users["nodered"])
			}
		})
	}
}

// Who may publish where, as the bridge configures its broker: users
// command and announce Home Assistant on its own status topic; only the
// bridge writes its state, discovery and Homie trees.
func TestEmbeddedAuthPublishRules(t *testing.T) {
	cfg := Defaults()
	cfg.HomeAssistant.Prefix = "ha-custom"
	cfg.HomeAssistant.StatusTopic = "ha-custom/birth"
	cfg.Homie.Enabled = true
	cfg.Derive("green_house")
	a := cfg.EmbeddedAuth(map[string]string{"ha": "pw"}, "bridge-pw")
	hook, err := authHook("0.0.0.0:1883", &a, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := hook.(*aclHook)
	for _, tt := range []struct {
		user, topic string
		want        bool
	}{
		{"ha", "pibridge/green_house/pump/set", true},
		{"ha", "pibridge/green_house/pump/pulse", true},
		{"ha", "ha-custom/birth", true},
		{"ha", "ha-custom/status", false},
		{"ha", "lab/anything", true},
		{"ha", "homie/5/green-house/outputs/pump/set", true},
		{"ha", "pibridge/green_house/status", false},
		{"ha", "pibridge/green_house/pump", false},
		{"ha", "ha-custom/device/green_house/config", false},
		{"ha", "homie/5/green-house/$state", false},
		{"ha", "homie/5/green-house/outputs/pump", false},
		{"ha", "homie/5/green-house/outputs/pump/$target", false},
		{a.BridgeUser, "homie/5/green-house/$state", true},
		{a.BridgeUser, "pibridge/green_house/status", true},
	} {
		if got := h.mayPublish(tt.user, tt.topic); got != tt.want {
			t.Errorf("%s publishes %s: %v, want %v", tt.user, tt.topic, got, tt.want)
		}
	}
}

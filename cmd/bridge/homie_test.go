package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"pibridge/internal/harness"
	"pibridge/internal/testkit"
)

// homieController is a Homie v5 controller written from the convention's
// text alone: it discovers devices on +/5/+/$state, reads each device's
// $description with its own types and checks, and sets properties
// through /set. It knows nothing of the bridge.
type homieController struct {
	t      *testing.T
	client paho.Client
	mu     sync.Mutex
	topics map[string]string // retained view: topic → last payload
	change chan struct{}
}

// Homie's topic ID format: lowercase letters, digits and hyphens.
var homieIDRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// What the convention's description document says, as this controller
// reads it.
type homieDoc struct {
	Homie   string `json:"homie"`
	Version *int64 `json:"version"`
	Name    string `json:"name"`
	Nodes   map[string]struct {
		Name       string `json:"name"`
		Properties map[string]struct {
			Name     string `json:"name"`
			Datatype string `json:"datatype"`
			Format   string `json:"format"`
			Settable bool   `json:"settable"`
			Retained *bool  `json:"retained"`
			Unit     string `json:"unit"`
		} `json:"properties"`
	} `json:"nodes"`
}

// homieRef is one property found in a description.
type homieRef struct {
	device, node, prop string
	datatype, unit     string
	settable           bool
}

func (r homieRef) topic(domain string) string {
	return domain + "/5/" + r.device + "/" + r.node + "/" + r.prop
}

func newHomieController(t *testing.T, addr string) *homieController {
	t.Helper()
	hc := &homieController{t: t, topics: map[string]string{}, change: make(chan struct{}, 1)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("homie-controller-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	hc.client = paho.NewClient(opts)
	if tok := hc.client.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("controller connect: %v", tok.Error())
	}
	t.Cleanup(func() { hc.client.Disconnect(100) })
	// Auto-discovery, as the convention prescribes, then everything of
	// the domain for the values.
	hc.subscribe("+/5/+/$state")
	hc.subscribe("homie/5/#")
	return hc
}

func (hc *homieController) subscribe(filter string) {
	tok := hc.client.Subscribe(filter, 2, func(_ paho.Client, m paho.Message) {
		hc.mu.Lock()
		hc.topics[m.Topic()] = string(m.Payload())
		hc.mu.Unlock()
		select {
		case hc.change <- struct{}{}:
		default:
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		hc.t.Fatalf("controller subscribe %s: %v", filter, tok.Error())
	}
}

func (hc *homieController) get(topic string) string {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.topics[topic]
}

// waitFor waits until cond holds over what the controller has seen.
func (hc *homieController) waitFor(what string, cond func() bool) {
	hc.t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-hc.change:
		case <-deadline.C:
			hc.mu.Lock()
			defer hc.mu.Unlock()
			hc.t.Fatalf("timed out waiting for %s; seen: %v", what, hc.topics)
		}
	}
}

// devices lists the device IDs whose $state is ready.
func (hc *homieController) readyDevices(domain string) []string {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	var out []string
	for topic, p := range hc.topics {
		parts := strings.Split(topic, "/")
		if len(parts) == 4 && parts[0] == domain && parts[1] == "5" && parts[3] == "$state" && p == "ready" {
			out = append(out, parts[2])
		}
	}
	return out
}

// describe parses and checks a device's description as the convention
// asks of a controller: version 5.x, an integer version, valid IDs, a
// known datatype for each property.
func (hc *homieController) describe(domain, device string) []homieRef {
	hc.t.Helper()
	raw := hc.get(domain + "/5/" + device + "/$description")
	var doc homieDoc
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		hc.t.Fatalf("$description is not JSON: %v\n%s", err, raw)
	}
	if !strings.HasPrefix(doc.Homie, "5.") {
		hc.t.Fatalf("$description homie = %q, want 5.x", doc.Homie)
	}
	if doc.Version == nil {
		hc.t.Fatalf("$description has no version")
	}
	known := map[string]bool{"integer": true, "float": true, "boolean": true, "string": true, "enum": true,
		"color": true, "datetime": true, "duration": true, "json": true}
	var refs []homieRef
	for nodeID, node := range doc.Nodes {
		if !homieIDRE.MatchString(nodeID) {
			hc.t.Errorf("node ID %q is not a Homie ID", nodeID)
		}
		for propID, p := range node.Properties {
			if !homieIDRE.MatchString(propID) {
				hc.t.Errorf("property ID %q is not a Homie ID", propID)
			}
			if !known[p.Datatype] {
				hc.t.Errorf("%s/%s: unknown datatype %q", nodeID, propID, p.Datatype)
			}
			refs = append(refs, homieRef{device: device, node: nodeID, prop: propID, datatype: p.Datatype, unit: p.Unit, settable: p.Settable})
		}
	}
	return refs
}

// set publishes a value to a property's set topic, non-retained as the
// convention requires of controllers.
func (hc *homieController) set(domain string, r homieRef, payload string) {
	hc.t.Helper()
	tok := hc.client.Publish(r.topic(domain)+"/set", 2, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		hc.t.Fatalf("set %s: %v", r.topic(domain), tok.Error())
	}
}

// TestHomieController runs the real bridge binary against mosquitto with
// Homie on. A controller that knows only the convention finds the device,
// turns an output on through /set, sees $target and the value, and sees
// the device `lost` once the bridge is killed with SIGKILL.
func TestHomieController(t *testing.T) {
	m := testkit.RunMosquitto(t, testkit.MosquittoOptions{})
	spec := harness.DaemonSpec{Bin: hostBridge(t), Procs: 2, Scratch: t.TempDir()}
	cfg := fmt.Sprintf(`device: {id: homie_pi, name: "Homie Pi"}
board: sim
mqtt:
  broker: "tcp://%s"
  homie: {enabled: true}
outputs:
  - {name: led, pin: GPIO22, initial: off, safe: off}
inputs:
  - {name: button, pin: GPIO17, pull: up}
sensors:
  - {name: air, type: bme280, i2c_bus: "1", address: 0x76, interval: 1s}
`, m.Addr)
	hc := newHomieController(t, m.Addr)
	d, err := spec.Start(context.Background(), "homie", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Kill() })

	hc.waitFor("a ready device", func() bool { return len(hc.readyDevices("homie")) == 1 })
	dev := hc.readyDevices("homie")[0]
	if dev != "homie-pi" {
		t.Errorf("device ID %q, want homie-pi (_ becomes -)", dev)
	}
	refs := hc.describe("homie", dev)
	var out *homieRef
	for i, r := range refs {
		if r.settable && r.datatype == "boolean" {
			out = &refs[i]
		}
		if r.node == "air" && r.prop == "temperature" && (r.datatype != "float" || r.unit != "°C" || r.settable) {
			t.Errorf("air/temperature described as %+v", r)
		}
	}
	if out == nil || out.node != "outputs" || out.prop != "led" {
		t.Fatalf("no settable boolean outputs/led in %+v", refs)
	}
	hc.waitFor("led's initial value", func() bool { return hc.get(out.topic("homie")) == "false" })

	hc.set("homie", *out, "true")
	hc.waitFor("led's target and value true", func() bool {
		return hc.get(out.topic("homie")+"/$target") == "true" && hc.get(out.topic("homie")) == "true"
	})
	// A payload Homie does not allow for a boolean is refused, not guessed.
	hc.set("homie", *out, "on")
	hc.waitFor("the refusal in $log/warn", func() bool { return strings.Contains(hc.get("homie/5/"+dev+"/$log/warn"), "led") })
	if v := hc.get(out.topic("homie")); v != "true" {
		t.Errorf("led %q after a refused set, want true", v)
	}

	d.Kill()
	hc.waitFor("the device lost", func() bool { return hc.get("homie/5/"+dev+"/$state") == "lost" })
}

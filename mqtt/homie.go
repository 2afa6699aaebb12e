package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// The Homie v5 convention (README "Homie") runs on a connection of its
// own: MQTT allows one last will per connection, the bridge's is
// P/D/status = offline, and Homie requires `lost` on $state as the will.
// Values are state, not history: the latest per signal is published,
// without the outbox.

// homieQoS is what the convention recommends for everything retained.
const homieQoS = 2

// homieProp is one signal as a Homie property.
type homieProp struct {
	signal   pibridge.Signal
	node     string
	prop     string
	topic    string // <prefix>/5/<device>/<node>/<prop>
	settable bool
}

// homie is the Homie side of a Client.
type homie struct {
	c        *Client
	paho     paho.Client
	base     string // <prefix>/5/<device>
	props    []homieProp
	index    map[string]int // signal name → props index
	sets     map[string]int // set topic → props index
	desc     []byte         // $description, built by run: its version is kept in stateDir
	stateDir string

	connected chan struct{} // paho connected: announce
	wake      chan struct{} // a reading is pending
	setCh     chan inbound  // /set messages from paho's handler
	up        atomic.Bool   // announced on the current connection

	mu      sync.Mutex
	pending map[int]pibridge.Reading // latest reading per property, not yet published
	target  map[int]string           // $target last published, per settable property; loop's
}

// homieIDOK reports whether s is a Homie topic ID: [a-z0-9-]+.
func homieIDOK(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// homieID maps a name of ours ([a-z0-9_-]) to a Homie ID.
func homieID(s string) string { return strings.ReplaceAll(s, "_", "-") }

// homieNames places a signal: a sensor quantity "air.temperature" is node
// "air", property "temperature"; any other signal is a property of the
// node of its kind (inputs, outputs, pwm, sensors).
func homieNames(s pibridge.Signal) (node, prop string) {
	if sensor, quantity, ok := strings.Cut(s.Name, "."); ok {
		return homieID(sensor), homieID(quantity)
	}
	switch s.Kind {
	case pibridge.KindInput:
		node = "inputs"
	case pibridge.KindOutput:
		node = "outputs"
	case pibridge.KindPWM:
		node = "pwm"
	default:
		node = "sensors"
	}
	return node, homieID(s.Name)
}

var homieNodeNames = map[string]string{"inputs": "Inputs", "outputs": "Outputs", "pwm": "PWM", "sensors": "Sensors"}

// homieProps maps the signals, and refuses two that land on one property.
func homieProps(base string, signals []pibridge.Signal) ([]homieProp, error) {
	owner := map[string]string{}
	var out []homieProp
	var problems []error
	for _, s := range signals {
		node, prop := homieNames(s)
		if !homieIDOK(node) || !homieIDOK(prop) {
			problems = append(problems, fmt.Errorf("signal %s: %s/%s is not a Homie ID ([a-z0-9-])", s.Name, node, prop))
			continue
		}
		key := node + "/" + prop
		if other, taken := owner[key]; taken {
			problems = append(problems, fmt.Errorf("signals %s and %s both map to Homie node %q property %q; rename one", other, s.Name, node, prop))
			continue
		}
		owner[key] = s.Name
		out = append(out, homieProp{signal: s, node: node, prop: prop, topic: base + "/" + key, settable: s.Kind.Writable()})
	}
	return out, errors.Join(problems...)
}

type homieDescription struct {
	Homie   string               `json:"homie"`
	Version int64                `json:"version"`
	Name    string               `json:"name"`
	Nodes   map[string]homieNode `json:"nodes"`
}

type homieNode struct {
	Name       string                   `json:"name"`
	Properties map[string]homieProperty `json:"properties"`
}

type homieProperty struct {
	Name     string `json:"name"`
	Datatype string `json:"datatype"`
	Format   string `json:"format,omitempty"`
	Settable bool   `json:"settable,omitempty"`
	Unit     string `json:"unit,omitempty"`
}

// homieDescribe builds $description from the same signal table as meta.
// The version grows whenever the document changes: stateDir remembers
// the last one; without it, the start time (in ms) stands in.
func homieDescribe(d pibridge.Device, props []homieProp, stateDir string, now time.Time) ([]byte, error) {
	desc := homieDescription{Homie: "5.0", Name: d.Name, Nodes: map[string]homieNode{}}
	if desc.Name == "" {
		desc.Name = d.ID
	}
	for _, p := range props {
		n, ok := desc.Nodes[p.node]
		if !ok {
			n = homieNode{Name: homieNodeNames[p.node], Properties: map[string]homieProperty{}}
			if n.Name == "" {
				n.Name, _, _ = strings.Cut(p.signal.Name, ".")
			}
		}
		hp := homieProperty{Name: p.signal.Name, Settable: p.settable, Unit: p.signal.Unit}
		switch p.signal.Kind {
		case pibridge.KindInput, pibridge.KindOutput:
			hp.Datatype = "boolean"
		case pibridge.KindPWM:
			hp.Datatype, hp.Format = "float", "0:1"
		default:
			hp.Datatype = "float"
		}
		n.Properties[p.prop] = hp
		desc.Nodes[p.node] = n
	}
	body, err := json.Marshal(desc)
	if err != nil {
		return nil, err
	}
	desc.Version = homieVersion(body, stateDir, now)
	return json.Marshal(desc)
}

// homieVersion returns the description's version: the remembered one if
// the document is unchanged, else one more (never less than before).
func homieVersion(body []byte, stateDir string, now time.Time) int64 {
	h := fnv.New64a()
	h.Write(body)
	sum := strconv.FormatUint(h.Sum64(), 16)
	if stateDir == "" {
		return now.UnixMilli()
	}
	path := filepath.Join(stateDir, "homie-description.json")
	var saved struct {
		Hash    string `json:"hash"`
		Version int64  `json:"version"`
	}
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &saved) == nil && saved.Hash == sum {
		return saved.Version
	}
	saved.Hash, saved.Version = sum, saved.Version+1
	if b, err := json.Marshal(saved); err == nil {
		tmp := path + ".tmp"
		if os.WriteFile(tmp, b, 0o640) == nil {
			os.Rename(tmp, path)
		}
	}
	return saved.Version
}

// newHomie prepares the Homie connection; run connects.
func newHomie(c *Client, stateDir string) (*homie, error) {
	devID := homieID(c.device.ID)
	if !homieIDOK(devID) {
		return nil, fmt.Errorf("homie: device id %q is not a Homie ID ([a-z0-9-])", c.device.ID)
	}
	h := &homie{
		c:         c,
		base:      c.cfg.Homie.Prefix + "/5/" + devID,
		index:     map[string]int{},
		sets:      map[string]int{},
		connected: make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),
		setCh:     make(chan inbound, inboxSize),
		pending:   map[int]pibridge.Reading{},
		target:    map[int]string{},
	}
	var err error
	if h.props, err = homieProps(h.base, c.core.Signals()); err != nil {
		return nil, fmt.Errorf("homie: %w", err)
	}
	for i, p := range h.props {
		h.index[p.signal.Name] = i
		if p.settable {
			h.sets[p.topic+"/set"] = i
		}
	}
	h.stateDir = stateDir
	opts, err := c.pahoOptions()
	if err != nil {
		return nil, err
	}
	opts.SetClientID(c.cfg.ClientID+"-homie").
		// Nothing to resume: every connection announces everything again,
		// and a set sent while the bridge was away must not arrive late.
		SetCleanSession(true).
		SetStore(paho.NewMemoryStore()).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(c.tm.connectRetry).
		SetMaxReconnectInterval(c.tm.maxReconnect).
		SetWill(h.base+"/$state", "lost", 1, true).
		SetDefaultPublishHandler(h.onMessage).
		SetOnConnectHandler(func(paho.Client) { signal(h.connected) }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			h.up.Store(false)
			c.log.Warn("homie: connection lost; reconnecting", "err", err)
		}).
		SetConnectionNotificationHandler(func(paho.Client, paho.ConnectionNotification) {})
	h.paho = paho.NewClient(opts)
	return h, nil
}

// homieSub receives readings with the core's lock held: it records the
// latest per property and nudges the loop.
type homieSub struct{ h *homie }

func (s homieSub) Deliver(r pibridge.Reading) {
	i, ok := s.h.index[r.Name]
	if !ok {
		return
	}
	s.h.mu.Lock()
	s.h.pending[i] = r
	s.h.mu.Unlock()
	signal(s.h.wake)
}

// onMessage is paho's handler: it copies a /set into the loop's channel.
func (h *homie) onMessage(_ paho.Client, m paho.Message) {
	in := copyInbound(m)
	select {
	case h.setCh <- in:
	default:
		if n := h.c.commandsDropped.Add(1); n%100 == 1 {
			h.c.log.Warn("homie: command queue full; message dropped", "topic", pibridge.Clip(in.topic), "dropped", n)
		}
	}
}

// run connects and serves until ctx ends, then publishes `disconnected`.
func (h *homie) run(ctx context.Context) {
	desc, err := homieDescribe(h.c.device, h.props, h.stateDir, time.Now())
	if err != nil {
		h.c.log.Error("homie: cannot describe the device", "err", err)
		return
	}
	h.desc = desc
	_, cancel := h.c.core.Subscribe(homieSub{h})
	defer cancel()
	h.paho.Connect() // with connect retry, paho keeps trying; OnConnect says when
	defer func() {
		if h.up.Load() {
			tok := h.paho.Publish(h.base+"/$state", homieQoS, true, "disconnected")
			if err := await(context.Background(), tok, h.c.tm.shutdown/4); err != nil {
				h.c.log.Warn("homie: disconnected not confirmed", "err", err)
			}
		}
		h.paho.Disconnect(100)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.connected:
			h.announce(ctx)
		case <-h.wake:
			if h.up.Load() {
				h.publishPending(ctx)
			}
		case in := <-h.setCh:
			h.handleSet(ctx, in)
		}
	}
}

// announce is a connection's Homie life cycle: init, the description,
// every value, the /set subscriptions, then ready.
func (h *homie) announce(ctx context.Context) {
	h.up.Store(false)
	toks := []paho.Token{
		h.paho.Publish(h.base+"/$state", homieQoS, true, "init"),
		h.paho.Publish(h.base+"/$description", homieQoS, true, h.desc),
	}
	h.mu.Lock()
	clear(h.pending)
	h.mu.Unlock()
	clear(h.target)
	for _, r := range h.c.core.State() {
		toks = h.appendValue(toks, r)
	}
	if !h.c.awaitAll(ctx, toks, "homie description and values") {
		return
	}
	if len(h.sets) > 0 {
		filters := make(map[string]byte, len(h.sets))
		for topic := range h.sets {
			filters[topic] = 1
		}
		if err := await(ctx, h.paho.SubscribeMultiple(filters, nil), h.c.tm.writeTimeout); err != nil {
			h.c.log.Warn("homie: subscribing to /set failed; retrying on the next connection", "err", err)
			return
		}
	}
	if !h.c.awaitAll(ctx, []paho.Token{h.paho.Publish(h.base+"/$state", homieQoS, true, "ready")}, "homie ready") {
		return
	}
	h.up.Store(true)
	h.c.log.Info("homie: ready", "device", h.base)
	h.publishPending(ctx) // readings that came during the announcement
}

func (h *homie) publishPending(ctx context.Context) {
	h.mu.Lock()
	rs := make([]pibridge.Reading, 0, len(h.pending))
	for i := range h.props {
		if r, ok := h.pending[i]; ok {
			rs = append(rs, r)
		}
	}
	clear(h.pending)
	h.mu.Unlock()
	var toks []paho.Token
	for _, r := range rs {
		toks = h.appendValue(toks, r)
	}
	h.c.awaitAll(ctx, toks, "homie values")
}

// homieValue formats a value as Homie's boolean or float payload; ok is
// false for what has no Homie form (NaN, infinities).
func homieValue(v pibridge.Value) (string, bool) {
	switch {
	case v.IsBool():
		return strconv.FormatBool(v.Bool()), true
	case v.IsNumber() && !math.IsNaN(v.Float()) && !math.IsInf(v.Float(), 0):
		// 'f': Homie floats allow no '+', which an exponent would bring.
		return strconv.FormatFloat(v.Float(), 'f', -1, 64), true
	}
	return "", false
}

// appendValue publishes a reading on its property, after its $target
// for a settable property unless the target already says the same
// (Homie: a device that uses $target updates it before every value).
func (h *homie) appendValue(toks []paho.Token, r pibridge.Reading) []paho.Token {
	i, ok := h.index[r.Name]
	if !ok {
		return toks
	}
	p := h.props[i]
	s, ok := homieValue(r.Value)
	if !ok {
		return toks
	}
	if p.settable {
		if t, seen := h.target[i]; !seen || !sameValue(t, s) {
			toks = append(toks, h.paho.Publish(p.topic+"/$target", homieQoS, true, s))
			h.target[i] = s
		}
	}
	return append(toks, h.paho.Publish(p.topic, homieQoS, true, s))
}

// sameValue compares two Homie payloads as values: "0.50" is "0.5".
func sameValue(a, b string) bool {
	if a == b {
		return true
	}
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	return err1 == nil && err2 == nil && x == y
}

// parseHomie reads a /set payload as the property's datatype, strictly:
// Homie booleans are "true" and "false", floats plain decimal numbers.
func parseHomie(p homieProp, payload []byte) (pibridge.Value, error) {
	s := string(payload)
	if p.signal.Kind == pibridge.KindOutput {
		switch s {
		case "true":
			return pibridge.Bool(true), nil
		case "false":
			return pibridge.Bool(false), nil
		}
		return pibridge.Value{}, fmt.Errorf("%w %q: a Homie boolean is true or false", pibridge.ErrBadValue, pibridge.Clip(s))
	}
	ok := s != "" && s != "-" && strings.Trim(s, "0123456789-.eE") == "" && strings.Count(s, ".") <= 1
	f, err := strconv.ParseFloat(s, 64)
	if !ok || err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return pibridge.Value{}, fmt.Errorf("%w %q: a Homie float is a plain decimal number", pibridge.ErrBadValue, pibridge.Clip(s))
	}
	return pibridge.Number(f), nil
}

// handleSet takes a /set into the command path every door shares: the
// core's validation, interlocks and refusals. Accepted, the exact payload
// goes to $target before the new value; refused, a warning goes to
// $log/warn and the answer to P/D/ack, as for a refused MQTT command.
func (h *homie) handleSet(ctx context.Context, in inbound) {
	i, ok := h.sets[in.topic]
	if !ok {
		return
	}
	p := h.props[i]
	h.c.commands.Add(1)
	cmd := pibridge.Command{Name: p.signal.Name, Op: pibridge.OpSet, Source: "homie"}
	var err error
	switch {
	case in.retained:
		err = fmt.Errorf("%s: %w: publish /set without the retain flag", p.signal.Name, pibridge.ErrRetained)
		h.c.core.Refused(cmd, err)
	case in.tooLong:
		err = fmt.Errorf("%s: %w: payload over %d bytes", p.signal.Name, pibridge.ErrBadValue, maxCommandPayload)
		h.c.core.Refused(cmd, err)
	default:
		if cmd.Value, err = parseHomie(p, in.payload); err != nil {
			err = fmt.Errorf("%s: %w", p.signal.Name, err)
			h.c.core.Refused(cmd, err)
		} else {
			_, err = h.c.core.Execute(ctx, cmd)
		}
	}
	if err != nil {
		h.c.log.Info("homie: command refused", "signal", p.signal.Name, "err", err)
		if h.up.Load() {
			h.c.awaitAll(ctx, []paho.Token{h.paho.Publish(h.base+"/$log/warn", 0, false, err.Error())}, "homie log")
		}
		h.c.ack(ctx, "", p.signal.Name, err)
		return
	}
	if h.up.Load() {
		// The reading the command caused is pending: the target goes first.
		h.target[i] = string(in.payload)
		h.c.awaitAll(ctx, []paho.Token{h.paho.Publish(p.topic+"/$target", homieQoS, true, in.payload)}, "homie target")
		h.publishPending(ctx)
	}
}

// ValidateSignals checks what the section asks of the signal table: with
// Homie on, a device ID in Homie's format and no two signals on one Homie
// property. -check and the start both run it.
func (c *Config) ValidateSignals(deviceID string, signals []pibridge.Signal) error {
	if !c.Homie.Enabled {
		return nil
	}
	var p pibridge.Problems
	if !homieIDOK(homieID(deviceID)) {
		p.Addf("homie", "device id %q is not a Homie ID ([a-z0-9-])", deviceID)
	}
	if _, err := homieProps("", signals); err != nil {
		p.Add("homie", err)
	}
	return p.Err()
}

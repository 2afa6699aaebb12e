package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

func TestMetaJSON(t *testing.T) {
	got := string(metaJSON(pibridge.Device{ID: "d"}, testSignals[2:5], pibridge.RunInfo{FirstSeq: 1, Clean: true}, pibridge.ClockState{Synced: true, Known: true}))
	want := `{"device":{"id":"d","name":"","version":""},"signals":[{"name":"stuck","kind":"output","writable":true},` +
		`{"name":"fan","kind":"pwm","writable":true,"min":0,"max":1},` +
		`{"name":"air.temperature","kind":"sensor","unit":"°C","writable":false}],` +
		`"run":{"first_seq":1,"previous_last_seq":0,"clean":true},"clock":{"synced":true}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	meta := metaJSON(pibridge.Device{ID: "d", Name: `say "hi"`, Version: "1"}, testSignals[:1], pibridge.RunInfo{FirstSeq: 4098, PreviousLastSeq: 1609}, pibridge.ClockState{Known: true})
	if want := `{"device":{"id":"d","name":"say \"hi\"","version":"1"},"signals":[{"name":"door","kind":"input","writable":false}],` +
		`"run":{"first_seq":4098,"previous_last_seq":1609,"clean":false},"clock":{"synced":false}}`; string(meta) != want {
		t.Errorf("meta %s\nwant %s", meta, want)
	}
	if !json.Valid(meta) {
		t.Error("meta is not JSON")
	}
}

func TestAckJSON(t *testing.T) {
	tests := []struct {
		id, name string
		err      error
		want     string
	}{
		{"c1", "pump", nil, `{"id":"c1","name":"pump","ok":true}`},
		{"", "pump", errors.New(`pump: bad value "x"`), `{"name":"pump","ok":false,"error":"pump: bad value \"x\""}`},
		{"c\n2", "fan", errors.New("e"), `{"id":"c\u000a2","name":"fan","ok":false,"error":"e"}`},
	}
	for _, tt := range tests {
		if got := string(ackJSON(tt.id, tt.name, tt.err)); got != tt.want {
			t.Errorf("ackJSON(%q, %q, %v) = %s, want %s", tt.id, tt.name, tt.err, got, tt.want)
		}
	}
}

func TestTopicsCommand(t *testing.T) {
	tp, err := newTopics("pibridge", "dev1", testSignals)
	if err != nil {
		t.Fatal(err)
	}
	if got := tp.signal["air.temperature"]; got != "pibridge/dev1/air/temperature" {
		t.Errorf("signal topic %q", got)
	}
	tests := []struct {
		topic string
		name  string
		op    pibridge.Op
		ok    bool
	}{
		{"pibridge/dev1/pump/set", "pump", pibridge.OpSet, true},
		{"pibridge/dev1/pump/pulse", "pump", pibridge.OpPulse, true},
		{"pibridge/dev1/pump", "", 0, false},
		{"pibridge/dev1/air/temperature/set", "air.temperature", pibridge.OpSet, true},
		{"pibridge/dev1/air/temperature/pulse", "air.temperature", pibridge.OpPulse, true},
		{"pibridge/dev1/a/b/c/set", "", 0, false},
		{"pibridge/dev1/air//set", "", 0, false},
		{"pibridge/dev2/pump/set", "", 0, false},
		{"pibridge/dev1//set", "", 0, false},
		{"homeassistant/status", "", 0, false},
	}
	for _, tt := range tests {
		name, op, ok := tp.command(tt.topic)
		if name != tt.name || op != tt.op || ok != tt.ok {
			t.Errorf("command(%q) = %q, %v, %v; want %q, %v, %v", tt.topic, name, op, ok, tt.name, tt.op, tt.ok)
		}
	}
	if _, err := newTopics("pibridge", "dev1", []pibridge.Signal{{Name: "a+b"}}); err == nil {
		t.Error("a signal with + in its topic was accepted")
	}
}

func TestBroker(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil)) // Info: mochi's chatter must not show
	b, err := NewBroker("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(b.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr() = %q, want the bound port", b.Addr())
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	w := watch(t, b.Addr(), "x/#")
	w.publish("x/y", "hello", false)
	w.waitFor("the message back", func(ms []msg) bool { return len(ms) == 1 && ms[0].Payload == "hello" })

	if _, err := NewBroker(b.Addr(), log); err == nil || !strings.Contains(err.Error(), "listen on "+b.Addr()) {
		t.Errorf("second broker on a busy port: err = %v", err)
	}
	w.client.Disconnect(100)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.Dial("tcp", b.Addr()); err == nil {
		c.Close()
		t.Error("still listening after Close")
	}
	if logs.Len() != 0 {
		t.Errorf("mochi logged at Info or above:\n%s", logs.String())
	}
}

func TestQuietHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(quietHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})})
	log.Info("attached listener")
	log.Warn("", "error", "EOF")
	log.Warn("client store quota reached")
	log.Error("failed to load clients")
	got := buf.String()
	for _, want := range []string{"level=WARN msg=\"client store quota reached\"", "level=ERROR msg=\"failed to load clients\""} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 2 {
		t.Errorf("%d lines, want 2:\n%s", n, got)
	}
}

func TestNewErrors(t *testing.T) {
	core, _ := newCore(t)
	if _, err := New(Options{}); err == nil || err.Error() != "mqtt: Options.Core is nil" {
		t.Errorf("no core: %v", err)
	}
	bad := testConfig(core, "ftp://x")
	bad.QoS = 7
	_, err := New(Options{Core: core, Config: bad})
	if want := "mqtt.broker: \"ftp://x\": scheme must be tcp, ssl, ws, wss or embedded\nmqtt.qos: 7: must be 0, 1 or 2"; err == nil || err.Error() != want {
		t.Errorf("bad config: %v\nwant %s", err, want)
	}
	c, err := New(Options{Core: core, Config: testConfig(core, "tcp://127.0.0.1:1")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Errorf("Run with a done context: %v", err)
	}
	if err := c.Run(ctx); err == nil {
		t.Error("second Run did not fail")
	}
}

func TestEmbeddedKeyword(t *testing.T) {
	b, err := NewBroker("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() }) // after the client has stopped
	core, _ := newCore(t)
	w := watch(t, b.Addr(), base+"/status")
	// An unreachable broker first: paho falls back to the next in the list.
	runClient(t, newTestClientOpts(t, core, "tcp://"+freeAddr(t), func(c *Config) {
		c.Broker = append(c.Broker, Embedded)
		c.EmbeddedListen = "127.0.0.1:0"
	}, func(o *Options) { o.EmbeddedAddr = b.Addr() }))
	waitOnline(w)
}

// TestBrokerCloseUnderChurn closes the broker while clients come and go,
// which deadlocks mochi's own listener Close (mochi-mqtt/server#488).
func TestBrokerCloseUnderChurn(t *testing.T) {
	for round := 0; round < 5; round++ {
		b, err := NewBroker("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					opts := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).
						SetClientID(fmt.Sprintf("churn-%d-%d-%d", round, i, n)).SetConnectTimeout(time.Second)
					c := paho.NewClient(opts)
					tok := c.Connect()
					select {
					case <-tok.Done():
					case <-time.After(2 * time.Second):
					}
					c.Disconnect(0)
				}
			}()
		}
		time.Sleep(50 * time.Millisecond) // let the churn get going; not synchronisation
		closed := make(chan error, 1)
		go func() { closed <- b.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Logf("round %d: %v", round, err)
			}
		case <-time.After(closeTimeout + time.Second):
			t.Fatalf("round %d: Close hung", round)
		}
		close(stop)
		wg.Wait()
	}
}

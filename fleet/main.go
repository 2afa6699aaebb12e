// Command fleet runs the gateway mode on a real broker cluster and prints
// one Markdown table per step (README "Many boards"):
//
//  1. 3 NATS nodes on loopback (JetStream and the MQTT listener on each,
//     clustered), N bridge processes (sim boards, spread over the nodes
//     through their broker lists) and 2 gateways: time until both list
//     every device online;
//  2. commands through gateway A over the device WebSocket: every ack,
//     every pin moved (the device's own /api/state), round trip p50/p99;
//  3. one NATS node SIGKILLed: time until every bridge and both gateways
//     are back; an independent subscriber counts seq holes per device;
//  4. 5 bridges SIGKILLed: offline in both gateways within the keepalive
//     bound; restarted: online again;
//  5. gateway A SIGKILLed: browsers on B unaffected, a browser of A
//     reconnects to B.
//
// Not part of `make test`: `make fleet`, or
//
//	go run ./fleet -bridge bin/bridge -bridges 50
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

func main() { harness.Main("fleet", run) }

type options struct {
	bridge    string
	bridges   int
	perDevice int
	killed    int
	keepAlive time.Duration // the bridges' MQTT keepalive (mqtt/client.go)
	keep      bool
	scale     int
	scaleFor  time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bridge, "bridge", "bin/bridge", "the bridge binary (bridges and gateways)")
	fs.IntVar(&o.bridges, "bridges", 50, "bridge processes")
	fs.IntVar(&o.perDevice, "commands", 10, "commands per device through gateway A")
	fs.IntVar(&o.killed, "kill-bridges", 5, "bridges SIGKILLed in step 4")
	fs.DurationVar(&o.keepAlive, "keepalive", 30*time.Second, "the bridges' MQTT keepalive, for step 4's bound (1.5 × keepalive)")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory (configs, logs)")
	fs.IntVar(&o.scale, "scale", 0, "run only the scale step: one gateway following this many simulated devices (9 signals, 1 reading/s each)")
	fs.DurationVar(&o.scaleFor, "scale-for", 20*time.Second, "scale step: the measurement window")
	if err := fs.Parse(args); err != nil {
		return err
	}
	_, scratch, cleanup, err := harness.Setup(o.bridge, "fleet", args, o.keep, stdout)
	if err != nil {
		return err
	}
	defer cleanup()
	f := &fleetRun{o: o, out: stdout, scratch: scratch}
	defer f.stop()
	steps := []func(context.Context) error{f.start, f.commands, f.killNode, f.killBridges, f.killGateway}
	if o.scale > 0 {
		steps = []func(context.Context) error{f.scaleStep}
	}
	failed := false
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	for _, t := range f.tables {
		for _, r := range t.Rows {
			if r.Verdict == "missed" {
				failed = true
			}
		}
	}
	if failed {
		return errors.New("a target was missed (see the tables)")
	}
	return nil
}

type fleetRun struct {
	o       options
	out     io.Writer
	scratch string
	nodes   []*natsNode
	spec    harness.DaemonSpec
	ids     []string
	bridges map[string]*harness.Daemon
	gws     [2]*harness.Daemon
	watcher *seqWatcher
	tables  []harness.Table
	mu      sync.Mutex
}

func (f *fleetRun) print(t harness.Table) {
	f.tables = append(f.tables, t)
	t.Print(f.out)
}

func (f *fleetRun) brokerList(first int) string {
	var urls []string
	for k := range f.nodes {
		urls = append(urls, "tcp://"+f.nodes[(first+k)%len(f.nodes)].MQTT)
	}
	return "[" + strings.Join(urls, ", ") + "]"
}

func (f *fleetRun) bridgeConfig(i int) string {
	id := f.ids[i]
	return fmt.Sprintf(`device: {id: %s, name: "Bench %s"}
board: sim
mqtt: {broker: %s, homeassistant: {discovery: false}}
outputs:
  - {name: led, pin: GPIO22}
sensors:
  - {name: t1, type: sim, interval: 250ms}
`, id, id, f.brokerList(i%len(f.nodes)))
}

func (f *fleetRun) gatewayConfig(first int) string {
	return fmt.Sprintf("gateway: {name: \"Bench fleet\"}\nhttp: {token: none}\nmqtt: {broker: %s}\n", f.brokerList(first))
}

// start is step 1.
func (f *fleetRun) start(ctx context.Context) error {
	var err error
	f.nodes, err = startCluster(f.scratch, 3)
	if err != nil {
		return err
	}
	f.spec = harness.DaemonSpec{Bin: f.o.bridge, Procs: 1, Scratch: f.scratch}
	f.bridges = map[string]*harness.Daemon{}
	for i := range f.o.bridges {
		f.ids = append(f.ids, fmt.Sprintf("bench-%02d", i+1))
	}
	f.watcher, err = watchSeqs(f.nodes[2].MQTT)
	if err != nil {
		return err
	}
	for g := range f.gws {
		if f.gws[g], err = f.spec.Start(ctx, fmt.Sprintf("gateway-%c", 'a'+g), f.gatewayConfig(g)); err != nil {
			return fmt.Errorf("gateway %c: %w", 'A'+g, err)
		}
	}
	t0 := time.Now()
	for i, id := range f.ids {
		d, err := f.spec.Start(ctx, id, f.bridgeConfig(i))
		if err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		f.bridges[id] = d
	}
	last := time.Now()
	var at [2]time.Duration
	var wg sync.WaitGroup
	for g, gw := range f.gws {
		wg.Go(func() { at[g] = elapsed(last, f.awaitStatus(ctx, gw, f.ids, true, 60*time.Second)) })
	}
	wg.Wait()
	t := harness.Table{Title: fmt.Sprintf("Fleet start: %d bridges, 3 NATS nodes, 2 gateways", f.o.bridges)}
	t.Rows = append(t.Rows,
		harness.Row{What: "bridges started (sequentially, each until /healthz)", Value: fmt.Sprintf("%.1f s", last.Sub(t0).Seconds()), Target: "—", Verdict: ""},
		harness.Row{What: "gateway A lists all online, after the last bridge start", Value: dur(at[0]), Target: "≤ 10 s", Verdict: harness.Verdict(at[0] >= 0 && at[0] <= 10*time.Second)},
		harness.Row{What: "gateway B lists all online, after the last bridge start", Value: dur(at[1]), Target: "≤ 10 s", Verdict: harness.Verdict(at[1] >= 0 && at[1] <= 10*time.Second)},
	)
	t.Notes = append(t.Notes, fmt.Sprintf("bridge i's broker list starts at node i mod 3; gateway A's at n1, B's at n2; nats-server %s", natsVersion()))
	f.print(t)
	return nil
}

// elapsed is done − from, or -1 when done is zero (never).
func elapsed(from, done time.Time) time.Duration {
	if done.IsZero() {
		return -1
	}
	return done.Sub(from)
}

func dur(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

type apiDevice struct {
	ID     string `json:"id"`
	Online bool   `json:"online"`
}

func devices(gw *harness.Daemon) (map[string]bool, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(gw.HTTPURL + "/api/devices")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list struct{ Devices []apiDevice }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, d := range list.Devices {
		out[d.ID] = d.Online
	}
	return out, nil
}

// awaitStatus polls gw until every id has the given online state and
// returns when it saw that, or the zero time after within.
func (f *fleetRun) awaitStatus(ctx context.Context, gw *harness.Daemon, ids []string, online bool, within time.Duration) time.Time {
	t0 := time.Now()
	for time.Since(t0) < within && ctx.Err() == nil {
		if got, err := devices(gw); err == nil {
			ok := true
			for _, id := range ids {
				if st, listed := got[id]; !listed || st != online {
					ok = false
					break
				}
			}
			if ok {
				return time.Now()
			}
		}
		time.Sleep(50 * time.Millisecond) // polling the gateway's API
	}
	return time.Time{}
}

// commands is step 2: every device through gateway A, one WebSocket per
// device, commands one after the other per device and all devices at once.
func (f *fleetRun) commands(ctx context.Context) error {
	var (
		mu      sync.Mutex
		rtts    harness.Dist
		acks    atomic.Int64
		moved   atomic.Int64
		failure []string
		wg      sync.WaitGroup
	)
	fail := func(s string) {
		mu.Lock()
		if len(failure) < 5 {
			failure = append(failure, s)
		}
		mu.Unlock()
	}
	start := time.Now()
	for _, id := range f.ids {
		wg.Go(func() {
			conn, _, err := websocket.DefaultDialer.Dial("ws://"+f.gws[0].HTTPAddr+"/d/"+id+"/ws", nil)
			if err != nil {
				fail(id + ": dial: " + err.Error())
				return
			}
			defer conn.Close()
			var hello map[string]any
			if err := conn.ReadJSON(&hello); err != nil {
				fail(id + ": hello: " + err.Error())
				return
			}
			for k := range f.o.perDevice {
				want := k%2 == 0
				cid := fmt.Sprintf("%s-%d", id, k)
				t0 := time.Now()
				conn.WriteJSON(map[string]any{"type": "set", "id": cid, "name": "led", "value": want})
				conn.SetReadDeadline(time.Now().Add(15 * time.Second))
				for {
					var fr struct {
						Type, ID, Error string
						OK              bool
					}
					if err := conn.ReadJSON(&fr); err != nil {
						fail(cid + ": " + err.Error())
						return
					}
					if fr.Type != "ack" || fr.ID != cid {
						continue
					}
					rtt := time.Since(t0)
					if !fr.OK {
						fail(cid + ": " + fr.Error)
						break
					}
					acks.Add(1)
					mu.Lock()
					rtts = append(rtts, rtt)
					mu.Unlock()
					break
				}
				if v, err := pinState(f.bridges[id], "led"); err == nil && v == fmt.Sprint(want) {
					moved.Add(1)
				} else {
					fail(fmt.Sprintf("%s: led is %s (%v) on the device; want %v", cid, v, err, want))
				}
			}
		})
	}
	wg.Wait()
	total := time.Since(start)
	slices.Sort(rtts)
	n := int64(len(f.ids) * f.o.perDevice)
	t := harness.Table{Title: fmt.Sprintf("Commands through gateway A: %d devices × %d", len(f.ids), f.o.perDevice)}
	t.Rows = append(t.Rows,
		harness.Row{What: "acks ok in the browser protocol", Value: fmt.Sprintf("%d / %d", acks.Load(), n), Target: "all", Verdict: harness.Verdict(acks.Load() == n)},
		harness.Row{What: "pins moved (the device's own /api/state)", Value: fmt.Sprintf("%d / %d", moved.Load(), n), Target: "all", Verdict: harness.Verdict(moved.Load() == n)},
		harness.Row{What: "round trip p50 (browser → gateway → NATS → bridge → ack)", Value: ms(rtts.Q(0.5)), Target: "—"},
		harness.Row{What: "round trip p99", Value: ms(rtts.Q(0.99)), Target: "—"},
		harness.Row{What: "round trip max", Value: ms(rtts.Q(1)), Target: "—"},
		harness.Row{What: "wall time, all devices at once", Value: fmt.Sprintf("%.2f s", total.Seconds()), Target: "—"},
	)
	t.Notes = failure
	f.print(t)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func pinState(d *harness.Daemon, name string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(d.HTTPURL + "/api/state")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var st struct {
		State map[string]struct{ Value json.RawMessage }
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return "", err
	}
	return string(st.State[name].Value), nil
}

// health is /healthz and one counter of /metrics.
func connState(ctx context.Context, d *harness.Daemon) (connected bool, connects float64) {
	m, err := harness.Scrape(ctx, d.HTTPURL+"/metrics")
	if err != nil {
		return false, 0
	}
	return m.Get("pibridge_mqtt_connected") == 1, m.Get("pibridge_mqtt_connects_total")
}

// killNode is step 3.
func (f *fleetRun) killNode(ctx context.Context) error {
	victim := f.nodes[0]
	all := append([]*harness.Daemon{}, f.gws[0], f.gws[1])
	names := []string{"gateway A", "gateway B"}
	for _, id := range f.ids {
		all = append(all, f.bridges[id])
		names = append(names, id)
	}
	before := make([]float64, len(all))
	onVictim := make([]bool, len(all))
	for i, d := range all {
		_, before[i] = connState(ctx, d)
		// Gateway A and bridge i with i mod 3 == 0 list the victim first.
		onVictim[i] = i == 0 || i >= 2 && (i-2)%3 == 0
	}
	f.watcher.mark()
	victim.kill()
	back := make([]time.Duration, len(all))
	for i := range back {
		back[i] = -1
	}
	// Each daemon is polled by its own goroutine, so that one slow
	// /metrics does not delay the others' figures.
	var wg sync.WaitGroup
	for i, d := range all {
		wg.Go(func() {
			for t0 := time.Now(); time.Since(t0) < 60*time.Second; time.Sleep(50 * time.Millisecond) {
				up, n := connState(ctx, d)
				if up && (!onVictim[i] || n > before[i]) {
					back[i] = time.Since(victim.killedAt)
					return
				}
			}
		})
	}
	wg.Wait()
	var worstBridge, worstGW time.Duration
	missing := 0
	for i, b := range back {
		if b < 0 {
			missing++
			continue
		}
		if i < 2 {
			worstGW = max(worstGW, b)
		} else {
			worstBridge = max(worstBridge, b)
		}
	}
	var listed [2]time.Duration
	for g, gw := range f.gws {
		listed[g] = elapsed(victim.killedAt, f.awaitStatus(ctx, gw, f.ids, true, 30*time.Second))
	}
	// Count holes from the mark (just before the kill) once every device
	// has published 8 more readings than the subscriber had seen when all
	// were back: what was in flight during the failover has arrived.
	recovered := f.watcher.newest()
	caughtUp := time.Duration(-1)
	for t0 := time.Now(); time.Since(t0) < 30*time.Second; time.Sleep(50 * time.Millisecond) {
		now, all := f.watcher.newest(), true
		for _, id := range f.ids {
			if now[id] < recovered[id]+8 {
				all = false
				break
			}
		}
		if all {
			caughtUp = time.Since(victim.killedAt)
			break
		}
	}
	holes, devs, dups, readings := f.watcher.holes()
	t := harness.Table{Title: "One NATS node SIGKILLed (n1: gateway A's and a third of the bridges' first broker)"}
	t.Rows = append(t.Rows,
		harness.Row{What: "every bridge connected again (slowest)", Value: dur(worstBridge), Target: "≤ 15 s", Verdict: harness.Verdict(missing == 0 && worstBridge <= 15*time.Second)},
		harness.Row{What: "both gateways connected again (slowest)", Value: dur(worstGW), Target: "≤ 15 s", Verdict: harness.Verdict(back[0] >= 0 && back[1] >= 0 && worstGW <= 15*time.Second)},
		harness.Row{What: "gateway A lists all online again", Value: dur(listed[0]), Target: "≤ 15 s", Verdict: harness.Verdict(listed[0] >= 0 && listed[0] <= 15*time.Second)},
		harness.Row{What: "gateway B lists all online again", Value: dur(listed[1]), Target: "≤ 15 s", Verdict: harness.Verdict(listed[1] >= 0 && listed[1] <= 15*time.Second)},
		harness.Row{What: fmt.Sprintf("seq holes, independent subscriber on n3 (%d devices, %d readings)", devs, readings), Value: fmt.Sprint(holes), Target: "0", Verdict: harness.Verdict(holes == 0 && devs == len(f.ids))},
		harness.Row{What: "readings seen twice (QoS 1 redelivery, republished states)", Value: fmt.Sprint(dups), Target: "—"},
		harness.Row{What: "subscriber caught up (8 more readings from every device)", Value: dur(caughtUp), Target: "—"},
	)
	if missing > 0 {
		var who []string
		for i, b := range back {
			if b < 0 {
				who = append(who, names[i])
			}
		}
		t.Notes = append(t.Notes, "not back: "+strings.Join(who, ", "))
	}
	f.print(t)
	return nil
}

// killBridges is step 4.
func (f *fleetRun) killBridges(ctx context.Context) error {
	victims := f.ids[:min(f.o.killed, len(f.ids))]
	for _, id := range victims {
		f.bridges[id].Kill()
	}
	killed := time.Now()
	bound := f.o.keepAlive * 3 / 2
	var off [2]time.Duration
	var wg sync.WaitGroup
	for g, gw := range f.gws {
		wg.Go(func() { off[g] = elapsed(killed, f.awaitStatus(ctx, gw, victims, false, bound+15*time.Second)) })
	}
	wg.Wait()
	restarted := time.Now()
	for _, id := range victims {
		i := slices.Index(f.ids, id)
		d, err := f.spec.Start(ctx, id, f.bridgeConfig(i))
		if err != nil {
			return fmt.Errorf("restarting %s: %w", id, err)
		}
		f.bridges[id] = d
	}
	last := time.Now()
	var on [2]time.Duration
	for g, gw := range f.gws {
		wg.Go(func() { on[g] = elapsed(last, f.awaitStatus(ctx, gw, victims, true, 30*time.Second)) })
	}
	wg.Wait()
	t := harness.Table{Title: fmt.Sprintf("%d bridges SIGKILLed, then restarted", len(victims))}
	t.Rows = append(t.Rows,
		harness.Row{What: "offline in gateway A (the broker fires the will)", Value: dur(off[0]), Target: fmt.Sprintf("≤ %s (1.5 × keepalive)", bound), Verdict: harness.Verdict(off[0] >= 0 && off[0] <= bound+time.Second)},
		harness.Row{What: "offline in gateway B", Value: dur(off[1]), Target: fmt.Sprintf("≤ %s", bound), Verdict: harness.Verdict(off[1] >= 0 && off[1] <= bound+time.Second)},
		harness.Row{What: "online in gateway A after the restart (from the last start)", Value: dur(on[0]), Target: "≤ 10 s", Verdict: harness.Verdict(on[0] >= 0 && on[0] <= 10*time.Second)},
		harness.Row{What: "online in gateway B after the restart", Value: dur(on[1]), Target: "≤ 10 s", Verdict: harness.Verdict(on[1] >= 0 && on[1] <= 10*time.Second)},
		harness.Row{What: "restarting the bridges took (each until /healthz)", Value: fmt.Sprintf("%.2f s", last.Sub(restarted).Seconds()), Target: "—"},
	)
	f.print(t)
	return nil
}

// killGateway is step 5.
func (f *fleetRun) killGateway(ctx context.Context) error {
	type watched struct {
		conn   *websocket.Conn
		frames atomic.Int64
		err    atomic.Value
	}
	watch := func(url string) (*watched, error) {
		conn, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			return nil, err
		}
		w := &watched{conn: conn}
		go func() {
			for {
				conn.SetReadDeadline(time.Now().Add(time.Minute))
				if _, _, err := conn.ReadMessage(); err != nil {
					w.err.Store(err)
					return
				}
				w.frames.Add(1)
			}
		}()
		return w, nil
	}
	var onB []*watched
	for _, path := range []string{"/fleet/ws", "/d/" + f.ids[len(f.ids)-1] + "/ws", "/d/" + f.ids[len(f.ids)/2] + "/ws"} {
		w, err := watch("ws://" + f.gws[1].HTTPAddr + path)
		if err != nil {
			return err
		}
		defer w.conn.Close()
		onB = append(onB, w)
	}
	onA, err := watch("ws://" + f.gws[0].HTTPAddr + "/d/" + f.ids[len(f.ids)-1] + "/ws")
	if err != nil {
		return err
	}
	defer onA.conn.Close()
	time.Sleep(time.Second) // a second of frames before the kill
	counts := make([]int64, len(onB))
	for i, w := range onB {
		counts[i] = w.frames.Load()
	}
	f.gws[0].Kill()
	killed := time.Now()
	// The browser on A sees its socket drop and reconnects to B.
	for onA.err.Load() == nil && time.Since(killed) < 5*time.Second {
		time.Sleep(5 * time.Millisecond) // polling the reader's state
	}
	reconnect := time.Duration(-1)
	if conn, _, err := websocket.DefaultDialer.Dial("ws://"+f.gws[1].HTTPAddr+"/d/"+f.ids[len(f.ids)-1]+"/ws", nil); err == nil {
		var hello struct{ Type string }
		if conn.ReadJSON(&hello) == nil && hello.Type == "hello" {
			reconnect = time.Since(killed)
		}
		conn.Close()
	}
	time.Sleep(5 * time.Second) // five seconds of B's frames after the kill
	unaffected := true
	var got []string
	for i, w := range onB {
		n := w.frames.Load() - counts[i]
		got = append(got, fmt.Sprint(n))
		if w.err.Load() != nil || n == 0 {
			unaffected = false
		}
	}
	t := harness.Table{Title: "Gateway A SIGKILLed"}
	t.Rows = append(t.Rows,
		harness.Row{What: "browsers on B (fleet + 2 devices): still open, frames in the next 5 s", Value: strings.Join(got, ", "), Target: "open, > 0", Verdict: harness.Verdict(unaffected)},
		harness.Row{What: "a browser of A: socket dropped, hello from B", Value: dur(reconnect), Target: "≤ 1 s", Verdict: harness.Verdict(reconnect >= 0 && reconnect <= time.Second)},
	)
	f.print(t)
	return nil
}

func (f *fleetRun) stop() {
	var wg sync.WaitGroup
	for _, d := range f.bridges {
		wg.Go(func() { d.Stop() })
	}
	for _, g := range f.gws {
		if g != nil {
			wg.Go(func() { g.Stop() })
		}
	}
	wg.Wait()
	if f.watcher != nil {
		f.watcher.close()
	}
	stopCluster(f.nodes)
}

func natsVersion() string {
	out, err := exec.Command("nats-server", "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(strings.TrimPrefix(string(out), "nats-server: "))
}

// seqWatcher is the independent subscriber: a persistent session on one
// node, every reading of every device, seq by device.
type seqWatcher struct {
	c    paho.Client
	mu   sync.Mutex
	seqs map[string][]uint64
	from map[string]uint64 // per device: the newest seq at mark
	dups int
}

func watchSeqs(broker string) (*seqWatcher, error) {
	w := &seqWatcher{seqs: map[string][]uint64{}}
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("fleet-seq-watcher").
		SetCleanSession(false).SetAutoReconnect(true).SetOrderMatters(true).
		SetOnConnectHandler(func(c paho.Client) {
			c.SubscribeMultiple(map[string]byte{"pibridge/+/+": 1, "pibridge/+/+/+": 1}, w.onMessage)
		})
	w.c = paho.NewClient(opts)
	tok := w.c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("seq watcher: %v", tok.Error())
	}
	return w, nil
}

func (w *seqWatcher) onMessage(_ paho.Client, m paho.Message) {
	parts := strings.Split(m.Topic(), "/")
	switch parts[len(parts)-1] {
	case "meta", "status", "ack", "set", "pulse":
		return
	}
	var r struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(m.Payload(), &r) != nil || r.Seq == 0 {
		return
	}
	w.mu.Lock()
	w.seqs[parts[1]] = append(w.seqs[parts[1]], r.Seq)
	w.mu.Unlock()
}

// mark records each device's newest seq: holes are counted after it.
func (w *seqWatcher) mark() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.from = map[string]uint64{}
	for id, s := range w.seqs {
		w.from[id] = slices.Max(s)
	}
}

// newest is each device's highest seq seen.
func (w *seqWatcher) newest() map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]uint64, len(w.seqs))
	for id, s := range w.seqs {
		out[id] = slices.Max(s)
	}
	return out
}

// holes counts the seqs missing between each device's mark and the newest
// seq seen.
func (w *seqWatcher) holes() (holes, devices, dups, readings int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, s := range w.seqs {
		from, ok := w.from[id]
		if !ok {
			continue
		}
		devices++
		seen := map[uint64]bool{}
		top := from
		for _, q := range s {
			if q < from {
				continue
			}
			if seen[q] {
				dups++
			}
			seen[q] = true
			top = max(top, q)
			readings++
		}
		for q := from; q <= top; q++ {
			if !seen[q] {
				holes++
			}
		}
	}
	return
}

func (w *seqWatcher) close() { w.c.Disconnect(100) }

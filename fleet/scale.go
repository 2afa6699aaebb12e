package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/chromedp"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

// simFleet is the light simulator of the scale step: a few MQTT
// connections publishing, for many devices, what a bridge publishes —
// retained meta and status, and a reading per signal per second.
type simFleet struct {
	clients   []paho.Client
	devices   int
	signals   int
	published atomic.Int64
	failed    atomic.Int64
	wg        sync.WaitGroup
}

const simConns = 20

func simID(i int) string { return fmt.Sprintf("sim-%04d", i+1) }

func startSimFleet(broker string, devices, signals int) (*simFleet, error) {
	s := &simFleet{devices: devices, signals: signals}
	for c := range simConns {
		cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("simfleet-%d", c)).
			SetConnectTimeout(10 * time.Second).SetWriteTimeout(10 * time.Second))
		tok := cl.Connect()
		if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("simulator connection %d: %v", c, tok.Error())
		}
		s.clients = append(s.clients, cl)
	}
	var sigs []string
	for k := range signals {
		sigs = append(sigs, fmt.Sprintf(`{"name":"s%d","kind":"sensor","unit":"°C","writable":false}`, k))
	}
	meta := strings.Join(sigs, ",")
	var toks []paho.Token
	for i := range devices {
		cl := s.clients[i%simConns]
		id := simID(i)
		toks = append(toks,
			cl.Publish("pibridge/"+id+"/meta", 1, true, fmt.Sprintf(`{"device":{"id":%q,"name":"Simulated %s","version":"sim"},"signals":[%s],"run":{"first_seq":1,"previous_last_seq":0,"clean":true}}`, id, id, meta)),
			cl.Publish("pibridge/"+id+"/status", 1, true, "online"))
	}
	for _, t := range toks {
		if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
			return nil, fmt.Errorf("simulator meta: %v", t.Error())
		}
	}
	return s, nil
}

// run publishes one reading per signal per device per second, each
// connection's devices spread over the second, until ctx ends.
func (s *simFleet) run(ctx context.Context) {
	for c, cl := range s.clients {
		s.wg.Go(func() {
			var mine []int
			for i := c; i < s.devices; i += simConns {
				mine = append(mine, i)
			}
			seq := make([]uint64, len(mine))
			if len(mine) == 0 {
				return
			}
			t := time.NewTicker(time.Second / time.Duration(len(mine)))
			defer t.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				j := n % len(mine)
				id := simID(mine[j])
				ts := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
				for k := range s.signals {
					seq[j]++
					v := 20 + float64((n+k)%100)/10
					p := `{"value":` + strconv.FormatFloat(v, 'f', 2, 64) + `,"unit":"°C","ts":"` + ts + `","seq":` + strconv.FormatUint(seq[j], 10) + `}`
					tok := cl.Publish("pibridge/"+id+"/s"+strconv.Itoa(k), 0, true, p)
					if tok.Error() != nil {
						s.failed.Add(1)
					}
					s.published.Add(1)
				}
			}
		})
	}
}

func (s *simFleet) stop() {
	s.wg.Wait()
	for _, cl := range s.clients {
		cl.Disconnect(50)
	}
}

// scaleStep is the scale run: one gateway following o.scale simulated
// devices of 9 signals at 1 reading/s each.
func (f *fleetRun) scaleStep(ctx context.Context) error {
	var err error
	f.nodes, err = startCluster(f.scratch, 1)
	if err != nil {
		return err
	}
	f.spec = harness.DaemonSpec{Bin: f.o.bridge, Procs: 2, Scratch: f.scratch}
	gw, err := f.spec.Start(ctx, "gateway-scale", fmt.Sprintf("gateway: {name: \"Scale\"}\nhttp: {token: none}\nmqtt: {broker: [tcp://%s]}\n", f.nodes[0].MQTT))
	if err != nil {
		return err
	}
	f.gws[0] = gw
	idle, _ := harness.ReadMemory(gw.PID)
	sim, err := startSimFleet(f.nodes[0].MQTT, f.o.scale, 9)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(ctx)
	defer func() { stopSim(); sim.stop() }()
	sim.run(simCtx)
	var ids []string
	for i := range f.o.scale {
		ids = append(ids, simID(i))
	}
	t0 := time.Now()
	listed := elapsed(t0, f.awaitStatus(ctx, gw, ids, true, 60*time.Second))

	// A browser's view of one device: frames per second over the window.
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+gw.HTTPAddr+"/d/"+simID(f.o.scale/2)+"/ws", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	var frames atomic.Int64
	go func() {
		for {
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
			frames.Add(1)
		}
	}()
	time.Sleep(3 * time.Second) // warm-up: the rings and maps reach their size
	cpu0, _ := harness.CPUTime(gw.PID)
	m0, _ := harness.Scrape(ctx, gw.HTTPURL+"/metrics")
	f0, p0, w0 := frames.Load(), sim.published.Load(), time.Now()
	time.Sleep(f.o.scaleFor) // the measurement window
	cpu1, _ := harness.CPUTime(gw.PID)
	m1, _ := harness.Scrape(ctx, gw.HTTPURL+"/metrics")
	f1, p1, wall := frames.Load(), sim.published.Load(), time.Since(w0)
	mem, _ := harness.ReadMemory(gw.PID)
	fcp, rows, browserErr := fleetFirstPaint(ctx, gw.HTTPURL+"/", f.o.scale)

	rate := func(a, b float64) string { return fmt.Sprintf("%.0f /s", (b-a)/wall.Seconds()) }
	t := harness.Table{Title: fmt.Sprintf("Scale: one gateway following %d simulated devices × 9 signals at 1 reading/s", f.o.scale)}
	t.Rows = append(t.Rows,
		harness.Row{What: "all listed online, after the simulator's retained meta was acknowledged", Value: dur(listed), Target: "—"},
		harness.Row{What: "readings published by the simulator", Value: rate(float64(p0), float64(p1)), Target: "—"},
		harness.Row{What: "readings applied by the gateway", Value: rate(m0.Get("pibridge_gateway_readings_total"), m1.Get("pibridge_gateway_readings_total")), Target: "—"},
		harness.Row{What: "messages dropped by the gateway (ingest queue full)", Value: fmt.Sprint(m1.Get("pibridge_gateway_dropped_total")), Target: "0", Verdict: harness.Verdict(m1.Get("pibridge_gateway_dropped_total") == 0)},
		harness.Row{What: "gateway CPU (of one core)", Value: fmt.Sprintf("%.1f %%", 100*(cpu1-cpu0).Seconds()/wall.Seconds()), Target: "—"},
		harness.Row{What: "gateway RSS (idle → following the fleet)", Value: harness.MiB(idle.RSS) + " → " + harness.MiB(mem.RSS), Target: "—"},
		harness.Row{What: "frames/s to a browser viewing one device", Value: fmt.Sprintf("%.1f", float64(f1-f0)/wall.Seconds()), Target: "9 (its readings)", Verdict: harness.Verdict(float64(f1-f0)/wall.Seconds() > 8)},
		harness.Row{What: "fleet page first contentful paint, Chromium", Value: ms(fcp), Target: "—"},
		harness.Row{What: fmt.Sprintf("fleet page with all %d rows, Chromium", f.o.scale), Value: ms(rows), Target: "—"},
	)
	t.Notes = append(t.Notes, fmt.Sprintf("simulator: %d MQTT connections, readings retained at QoS 0; one NATS node; %.0f s window; gateway GOMAXPROCS=2 on 2 shared cores with NATS, the simulator and Chromium", simConns, wall.Seconds()))
	if browserErr != nil {
		t.Notes = append(t.Notes, "Chromium: "+browserErr.Error())
	}
	f.print(t)
	return nil
}

// fleetFirstPaint loads the fleet page in a fresh headless Chromium and
// returns its first contentful paint and the time until n rows are in the
// table, both from the navigation's start.
func fleetFirstPaint(ctx context.Context, url string, n int) (fcp, rows time.Duration, err error) {
	dir, err := os.MkdirTemp("", "fleet-chromium-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	alloc, cancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath("/usr/bin/chromium"), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(dir),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true))
	defer cancel()
	bctx, cancelB := chromedp.NewContext(alloc)
	defer cancelB()
	tctx, cancelT := context.WithTimeout(bctx, 60*time.Second)
	defer cancelT()
	// Warm the browser up so that its own start is not counted.
	if err := chromedp.Do(tctx, chromedp.Navigate("about:blank")); err != nil {
		return 0, 0, err
	}
	if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
		return 0, 0, err
	}
	rowsMs, err := chromedp.Run(tctx, chromedp.Evaluate[float64](fmt.Sprintf(`new Promise(r => { const t = () => document.querySelectorAll('#devices tbody tr').length >= %d ? r(performance.now()) : requestAnimationFrame(t); t(); })`, n), chromedp.EvalAwaitPromise))
	if err != nil {
		return 0, 0, err
	}
	fcpMs, err := chromedp.Run(tctx, chromedp.Evaluate[float64](`(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: -1}).startTime`))
	return time.Duration(fcpMs * 1e6), time.Duration(rowsMs * 1e6), err
}

package main

// Peers: the programs the bridge is measured against in the same run, on
// the same machine, pinned to the same core — Node-RED (mqtt in →
// websocket out), mosquitto's WebSocket listener and mochi-mqtt's. Each
// runs as its own process so that its memory and CPU time are its own.

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"pibridge/internal/harness"
)

const (
	peerNodeRED   = "nodered"
	peerMosquitto = "mosquitto"
	peerMochi     = "mochi"
	// peerMosquittoBridged is mosquitto's WebSocket listener behind a
	// broker, fed over a mosquitto bridge connection: the topology the
	// bridge's passthrough has (one broker hop more than mosquitto-ws).
	peerMosquittoBridged = "mosquitto-bridged"
	// peerEmbedded is the bridge itself with its embedded broker: the
	// publishers and the command scenario's subscriber connect to it, so
	// that its path has the broker hops mosquitto-ws has (the bench gives it
	// a free port, PIBRIDGE_MQTT_EMBEDDED_LISTEN).
	peerEmbedded = "pibridge-embedded"
	// nodeREDVersion is what `make bench` installs; the bench checks it.
	nodeREDVersion = "4.1.8"
)

// peerOptions are the flags of scenarios 3–6.
type peerOptions struct {
	peers      []string
	nodeRED    string // directory holding node_modules/node-red
	latSamples int
	latRate    int
	fanRates   []int
	fanClients []int
	fanMax     int
	fanWindow  time.Duration
	fanRepeat  int
	fanEach    bool // fanout: the publisher writes each message on its own
	slowRate   int
	slowWindow time.Duration
	idleConns  []int
	baseline   string // another bridge binary measured beside -bridge
	idleFilter string // idleconns: what each idle connection subscribes to; "" none
	cmdSamples int
	cmdRate    int
}

func registerPeerFlags(fs *flag.FlagSet) func() (peerOptions, error) {
	var (
		o                                   peerOptions
		peers, rates, clients, idle, fanMax string
	)
	fs.StringVar(&peers, "peers", "nodered,mosquitto,mochi", "peers measured beside the bridge in scenarios mqttws, fanout, idleconns (\"none\" for none); mosquitto-bridged (mosquitto-ws fed through a second broker, the bridge's topology) and pibridge-embedded (the bridge as the broker, mosquitto-ws's topology) on request")
	fs.StringVar(&o.nodeRED, "nodered", "bin/bench-peers/node-red", "npm prefix holding node_modules/node-red (make bench installs it)")
	fs.IntVar(&o.latSamples, "mqtt-samples", 100000, "mqttws: messages timed per path")
	fs.IntVar(&o.latRate, "mqtt-rate", 5000, "mqttws: messages per second")
	fs.StringVar(&rates, "fanout-rates", "1000,10000,50000", "fanout: published messages per second (BENCHMARKS.md's grid: 1000,10000,50000,100000,200000)")
	fs.StringVar(&clients, "fanout-clients", "1,10,100", "fanout: subscribed clients (BENCHMARKS.md's grid: 1,10,100,1000)")
	fs.StringVar(&fanMax, "fanout-max", "1000000", "fanout: skip cells whose offered deliveries (rate × clients) exceed this per second; 0: none skipped")
	fs.DurationVar(&o.fanWindow, "fanout-window", 3*time.Second, "fanout: publishing window per cell")
	fs.BoolVar(&o.fanEach, "fanout-flush-each", false, "fanout: the publisher writes each message in its own write (one TCP segment each, as a sensor publishes) instead of one write per pacing batch")
	fs.IntVar(&o.fanRepeat, "fanout-repeat", 1, "fanout: rounds over all subjects; each cell reports the round with the median CPU per frame")
	fs.IntVar(&o.slowRate, "slow-rate", 300, "slow: messages per second into 100 clients")
	fs.DurationVar(&o.slowWindow, "slow-window", 20*time.Second, "slow: window per run (without, then with the slow client)")
	fs.StringVar(&idle, "idle-conns", "1000,10000", "idleconns: connection counts")
	fs.StringVar(&o.idleFilter, "idle-subscribe", "lab/#", "idleconns: the filter each idle connection subscribes to (the bridge's and MQTT-over-WebSocket ones); \"\" for none")
	fs.IntVar(&o.cmdSamples, "cmd-samples", 20000, "command: commands timed per subject")
	fs.IntVar(&o.cmdRate, "cmd-rate", 1000, "command: commands per second")
	fs.StringVar(&o.baseline, "baseline", "", "a second bridge binary (say, built from an older commit) measured as one more subject in scenarios fanout, idleconns and command, in the same run")
	return func() (peerOptions, error) {
		var err error
		if peers != "none" && peers != "" {
			for p := range strings.SplitSeq(peers, ",") {
				p = strings.TrimSpace(p)
				if !slices.Contains([]string{peerNodeRED, peerMosquitto, peerMochi, peerMosquittoBridged, peerEmbedded}, p) {
					return o, fmt.Errorf("-peers: %q: want nodered, mosquitto, mochi, mosquitto-bridged, pibridge-embedded or none", p)
				}
				o.peers = append(o.peers, p)
			}
		}
		if o.fanRates, err = intList(rates); err != nil {
			return o, fmt.Errorf("-fanout-rates: %w", err)
		}
		if o.fanClients, err = intList(clients); err != nil {
			return o, fmt.Errorf("-fanout-clients: %w", err)
		}
		if o.idleConns, err = intList(idle); err != nil {
			return o, fmt.Errorf("-idle-conns: %w", err)
		}
		if o.fanMax, err = strconv.Atoi(fanMax); err != nil || o.fanMax < 0 {
			return o, fmt.Errorf("-fanout-max %q: want a count ≥ 0", fanMax)
		}
		if o.latSamples < 1 || o.latRate < 1 || o.slowRate < 1 || o.cmdSamples < 1 || o.cmdRate < 1 || o.fanRepeat < 1 {
			return o, errors.New("-mqtt-samples, -mqtt-rate, -slow-rate, -cmd-samples, -cmd-rate and -fanout-repeat must be at least 1")
		}
		return o, nil
	}
}

func (o peerOptions) has(p string) bool { return slices.Contains(o.peers, p) }

// checkPeers fails early, naming what to install, when a peer asked for
// is missing: a peer is never skipped silently.
func checkPeers(o peerOptions) error {
	var missing []string
	if _, err := mosquittoBin(); err != nil {
		missing = append(missing, "mosquitto (apt-get install mosquitto) — the broker of every peer scenario")
	}
	if o.has(peerNodeRED) {
		if _, err := exec.LookPath("node"); err != nil {
			missing = append(missing, "node (apt-get install nodejs npm)")
		}
		v, err := nodeREDInstalled(o.nodeRED)
		switch {
		case err != nil:
			missing = append(missing, fmt.Sprintf("Node-RED under %s (make bench installs it: npm install --prefix %s node-red@%s)", o.nodeRED, o.nodeRED, nodeREDVersion))
		case v != nodeREDVersion:
			missing = append(missing, fmt.Sprintf("Node-RED %s under %s, found %s (make bench reinstalls it)", nodeREDVersion, o.nodeRED, v))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing peers (or leave them out with -peers): %s", strings.Join(missing, "; "))
	}
	return nil
}

func mosquittoBin() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
		return "", err
	}
	return "/usr/sbin/mosquitto", nil
}

// mosquittoVersion asks the binary: `mosquitto -h` prints it first.
func mosquittoVersion() string {
	bin, err := mosquittoBin()
	if err != nil {
		return "?"
	}
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(line); len(f) >= 3 {
		return f[2]
	}
	return "?"
}

// --- subjects ---------------------------------------------------------------

// subject is one program under measurement: where publishers send, how a
// subscriber connects, and the process whose memory and CPU count.
type subject struct {
	name    string
	pid     int
	pubAddr string // MQTT listener publishers connect to
	// dial connects a subscriber to lab/# that receives from the subject.
	dial func(ctx context.Context, id int) (receiver, error)
	// dialIdle opens a connection the way a client that then idles
	// would: the bridge's reads the hello, MQTT ones CONNECT.
	dialIdle func(ctx context.Context, id int) (io.Closer, error)
	stops    []func()
	logPath  string
	httpURL  string // the bridge's, for /metrics
	wsURL    string // the bridge's
	cmdURL   string // MQTT over WebSocket, for a publishing client
}

func (s *subject) stop() {
	for _, f := range slices.Backward(s.stops) {
		f()
	}
}

// peerEnv is what starting a subject needs.
type peerEnv struct {
	o       peerOptions
	d       harness.DaemonSpec
	scratch string
	// maxClients is the bridge's http.max_clients; 0: its default.
	maxClients int
}

const (
	subjectBridge   = "pibridge"
	subjectBaseline = "pibridge-baseline"
)

func subjectNames(o peerOptions, withMQTTPeers bool) []string {
	names := []string{subjectBridge}
	if o.baseline != "" && withMQTTPeers {
		names = append(names, subjectBaseline)
	}
	for _, p := range []string{peerEmbedded, peerNodeRED, peerMosquitto, peerMosquittoBridged, peerMochi} {
		if o.has(p) && (withMQTTPeers || p == peerNodeRED) {
			names = append(names, p)
		}
	}
	return names
}

func (e peerEnv) start(ctx context.Context, name, tag string) (*subject, error) {
	switch name {
	case subjectBridge:
		return e.startBridge(ctx, tag, cmp.Or(e.maxClients, 256))
	case subjectBaseline:
		e.d.Bin = e.o.baseline
		s, err := e.startBridge(ctx, tag, cmp.Or(e.maxClients, 256))
		if s != nil {
			s.name = "pibridge baseline (" + filepath.Base(e.o.baseline) + ")"
		}
		return s, err
	case peerNodeRED:
		return e.startNodeRED(ctx, tag)
	case peerMosquitto:
		return e.startMosquittoWS(ctx, tag)
	case peerMosquittoBridged:
		return e.startMosquittoBridged(ctx, tag)
	case peerEmbedded:
		return e.startBridgeEmbedded(ctx, tag, cmp.Or(e.maxClients, 256))
	case peerMochi:
		return e.startMochi(ctx, tag)
	}
	return nil, fmt.Errorf("unknown subject %q", name)
}

// feedBroker starts, in a fresh directory named after tag, the mosquitto
// that feeds a subject (see broker).
func (e peerEnv) feedBroker(tag string) (*harness.Mosquitto, error) {
	dir, err := os.MkdirTemp(e.scratch, tag+"-broker-")
	if err != nil {
		return nil, err
	}
	return e.broker(dir)
}

// broker starts the mosquitto that feeds the bridge or Node-RED, pinned
// with the load generator: it is infrastructure, not the subject.
func (e peerEnv) broker(dir string) (*harness.Mosquitto, error) {
	m, err := harness.StartMosquitto(dir, harness.MosquittoOptions{})
	if err != nil {
		return nil, err
	}
	if err := pinPID(e.d.Pin, e.d.Pin.Load, m.PID); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func pinPID(p harness.Pinning, cpus string, pid int) error {
	if p.Taskset == "" {
		return nil
	}
	out, err := exec.Command(p.Taskset, "-a", "-cp", cpus, strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset %d: %v: %s", pid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

const bridgePassConfig = `device: {id: bench, name: "pibridge bench"}
board: sim
http: {listen: "127.0.0.1:0", max_clients: %d}
mqtt:
  broker: "tcp://%s"
  bridge_allow: ["lab/#"]
  homeassistant: {discovery: false}
outputs:
  - {name: led, pin: GPIO22, initial: "off", safe: "off"}
`

// startBridge runs the bridge against a fresh mosquitto with bridge_allow
// lab/#; maxClients bounds its WebSocket connections.
func (e peerEnv) startBridge(ctx context.Context, tag string, maxClients int) (*subject, error) {
	m, err := e.feedBroker(tag)
	if err != nil {
		return nil, err
	}
	s := &subject{name: "pibridge", pubAddr: m.Addr, stops: []func(){m.Stop}}
	dm, err := e.d.Start(ctx, tag, fmt.Sprintf(bridgePassConfig, maxClients, m.Addr))
	if err != nil {
		s.stop()
		return nil, err
	}
	e.bridgeSubject(s, dm)
	return s, nil
}

// bridgeSubject makes the started bridge dm the subject s: its process,
// URLs, stop and WebSocket dialers.
func (e peerEnv) bridgeSubject(s *subject, dm *harness.Daemon) {
	s.pid, s.logPath, s.httpURL, s.wsURL = dm.PID, dm.LogPath, dm.HTTPURL, dm.WSURL
	s.stops = append(s.stops, func() { _ = dm.Stop() })
	s.dial = func(ctx context.Context, _ int) (receiver, error) { return dialBridge(ctx, dm.WSURL, "lab/#") }
	s.dialIdle = func(ctx context.Context, _ int) (io.Closer, error) {
		if e.o.idleFilter != "" {
			r, err := dialBridge(ctx, dm.WSURL, e.o.idleFilter)
			if err != nil {
				return nil, err
			}
			return closerFunc(func() error { return closeNow(r.c.NetConn()) }), nil
		}
		c, err := dialBridgeIdle(ctx, dm.WSURL)
		if err != nil {
			return nil, err
		}
		return closerFunc(func() error { return closeNow(c.NetConn()) }), nil
	}
}

const bridgeEmbeddedConfig = `device: {id: bench, name: "pibridge bench"}
board: sim
http: {listen: "127.0.0.1:0", max_clients: %d}
mqtt:
  broker: embedded
  bridge_allow: ["lab/#"]
  homeassistant: {discovery: false}
outputs:
  - {name: led, pin: GPIO22, initial: "off", safe: "off"}
`

// startBridgeEmbedded runs the bridge with its embedded broker, which the
// publishers and subscribers connect to.
func (e peerEnv) startBridgeEmbedded(ctx context.Context, tag string, maxClients int) (*subject, error) {
	dm, err := e.d.Start(ctx, tag, fmt.Sprintf(bridgeEmbeddedConfig, maxClients))
	if err != nil {
		return nil, err
	}
	s := &subject{name: "pibridge (its embedded broker)", pubAddr: dm.MQTTAddr}
	e.bridgeSubject(s, dm)
	if err := waitListen(ctx, dm.MQTTAddr, 5*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("embedded broker: %w; log: %s", err, harness.Tail(dm.LogPath))
	}
	return s, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// startMosquittoWS runs mosquitto as the subject: MQTT-over-WebSocket
// subscribers, publishers on its TCP listener, pinned like the bridge.
// Its queue limit is its default (1000 per client): that, not unbounded
// memory, is how it behaves in service.
func (e peerEnv) startMosquittoWS(ctx context.Context, tag string) (*subject, error) {
	return e.mosquittoWS(ctx, tag, &subject{name: "mosquitto " + mosquittoVersion() + " (websockets)"}, "")
}

// startMosquittoBridged runs mosquitto-ws as the subject behind a feeding
// broker, like the bridge: publishers and the command scenario's
// subscriber are on the feeding broker (on the load generator's core), the
// subject subscribes lab/# there over a mosquitto bridge connection (QoS 0,
// as the bridge does) and forwards lab/cmd to it at QoS 1 (as the bridge's
// passthrough publishes).
func (e peerEnv) startMosquittoBridged(ctx context.Context, tag string) (*subject, error) {
	feed, err := e.feedBroker(tag)
	if err != nil {
		return nil, err
	}
	s := &subject{name: "bridged mosquitto " + mosquittoVersion() + " (websockets, fed through a broker)", pubAddr: feed.Addr, stops: []func(){feed.Stop}}
	return e.mosquittoWS(ctx, tag, s, "connection feed\naddress "+feed.Addr+"\n"+
		"topic lab/# in 0\ntopic "+cmdTopic+" out 1\n"+
		"cleansession true\nnotifications false\nbridge_protocol_version mqttv311\n")
}

// mosquittoWS starts mosquitto with a WebSocket listener as s, pinned like
// the bridge, with extra configuration lines; publishers go to its TCP
// listener unless s names another broker. A failed start stops s.
func (e peerEnv) mosquittoWS(ctx context.Context, tag string, s *subject, extra string) (*subject, error) {
	dir, err := os.MkdirTemp(e.scratch, tag+"-mosquitto-")
	if err != nil {
		s.stop()
		return nil, err
	}
	m, err := harness.StartMosquitto(dir, harness.MosquittoOptions{WebSockets: true, Extra: "max_queued_messages 1000\n" + extra})
	if err != nil {
		s.stop()
		return nil, err
	}
	s.pid = m.PID
	if s.pubAddr == "" {
		s.pubAddr = m.Addr
	}
	s.stops = append(s.stops, m.Stop) // stopped first: the stops run backwards
	if err := pinPID(e.d.Pin, e.d.Pin.Daemon, m.PID); err != nil {
		s.stop()
		return nil, err
	}
	if err := waitListen(ctx, m.WSAddr, 5*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("mosquitto websockets listener: %w; log: %s", err, m.Stderr())
	}
	url := "ws://" + m.WSAddr + "/mqtt"
	s.cmdURL = url
	s.dial = func(ctx context.Context, id int) (receiver, error) {
		return dialMQTTWS(ctx, url, "sub-"+strconv.Itoa(id), "lab/#")
	}
	s.dialIdle = func(ctx context.Context, id int) (io.Closer, error) {
		return dialMQTTWS(ctx, url, "idle-"+strconv.Itoa(id), e.o.idleFilter)
	}
	return s, nil
}

// --- child processes ----------------------------------------------------------

// proc is a peer process the bench started itself (Node-RED, mochi).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// spawn starts argv pinned to the daemon's cores, logging to logPath.
// The child dies with the bench (Pdeathsig) should the bench be killed.
func spawn(pin harness.Pinning, argv []string, env []string, logPath string) (*proc, error) {
	if pin.Taskset != "" {
		argv = append([]string{pin.Taskset, "-c", pin.Daemon}, argv...)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// waitListen polls addr until it accepts a connection.
func waitListen(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if err := harness.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// stop sends SIGTERM, then SIGKILL after 5 s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitListen polls addr until it accepts a connection.
func (p *proc) waitListen(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before listening on %s; log: %s", addr, harness.Tail(p.log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s; log: %s", addr, limit, harness.Tail(p.log))
		}
	}
}

// startMochi runs mochi-mqtt in a child process: this program again, with
// -peer mochi (see runMochiPeer).
func (e peerEnv) startMochi(ctx context.Context, tag string) (*subject, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(e.scratch, tag+"-mochi-")
	if err != nil {
		return nil, err
	}
	// A free port can be taken before mochi binds it; mochi then exits,
	// and another pair of ports is tried.
	var tcpAddr, wsAddr string
	var s *subject
	for attempt := 1; ; attempt++ {
		if tcpAddr, err = harness.FreePort(); err != nil {
			return nil, err
		}
		if wsAddr, err = harness.FreePort(); err != nil {
			return nil, err
		}
		p, err := spawn(e.d.Pin, []string{self, peerFlag, peerMochi, "-listen", tcpAddr, "-ws", wsAddr},
			[]string{"GOMAXPROCS=" + strconv.Itoa(e.d.Procs)}, filepath.Join(dir, fmt.Sprintf("mochi-%d.log", attempt)))
		if err != nil {
			return nil, err
		}
		s = &subject{name: "mochi-mqtt v2.7.9 (websocket)", pid: p.cmd.Process.Pid, pubAddr: tcpAddr, stops: []func(){p.stop}, logPath: p.log}
		err = p.waitListen(ctx, tcpAddr, 10*time.Second)
		if err == nil {
			err = p.waitListen(ctx, wsAddr, 10*time.Second)
		}
		if err == nil {
			break
		}
		s.stop()
		if attempt == 3 || ctx.Err() != nil {
			return nil, fmt.Errorf("mochi: %w", err)
		}
	}
	url := "ws://" + wsAddr + "/"
	s.dial = func(ctx context.Context, id int) (receiver, error) {
		return dialMQTTWS(ctx, url, "sub-"+strconv.Itoa(id), "lab/#")
	}
	s.dialIdle = func(ctx context.Context, id int) (io.Closer, error) {
		return dialMQTTWS(ctx, url, "idle-"+strconv.Itoa(id), e.o.idleFilter)
	}
	return s, nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"pibridge"
	"pibridge/gpio"
	"pibridge/internal/logring"
	"pibridge/mqtt"
	"pibridge/web"
	"pibridge/ws"
)

// started lets the end-to-end test reach the pins behind run; nil in the binary.
var started func(*gpio.Board, *pibridge.Core)

// shutdownBudget is how long the parts get to stop after SIGTERM; the
// whole exit must fit in 5 s (README: Command line).
const shutdownBudget = 3 * time.Second

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.version {
		fmt.Fprintln(stdout, versionString())
		return nil
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bridge: %v\n", err)
		return err
	}
	// The panel's log page reads the newest records from this ring.
	log = slog.New(logring.New(0, 0).Handler(log.Handler()))
	cfg, err := loadConfigCtx(ctx, o.configPath, getenv)
	if err != nil {
		if ctx.Err() != nil {
			return err // a signal, not a problem of the file
		}
		return &configError{err}
	}
	if cfg.Gateway != nil {
		if err := checkFiles(cfg); err != nil {
			return &configError{err}
		}
		if o.check {
			printGateway(stdout, cfg)
			fmt.Fprintln(stdout, "\nconfiguration is valid")
			return nil
		}
		return serveGateway(ctx, cfg, log, stderr)
	}
	if o.check {
		if err := checkFiles(cfg); err != nil {
			return &configError{err}
		}
		printTable(stdout, cfg, cfg.GPIO.Signals())
		if ws := cfg.GPIO.ReleaseWarnings(); len(ws) > 0 {
			fmt.Fprintln(stdout)
			for _, w := range ws {
				fmt.Fprintln(stdout, "warning: "+w)
			}
		}
		fmt.Fprintln(stdout, "\nconfiguration is valid")
		return nil
	}
	if o.safeState {
		// Pins only: a broken certificate must not keep outputs energised.
		return driveSafe(cfg, log, stdout)
	}
	if err := checkFiles(cfg); err != nil {
		return &configError{err}
	}
	return serve(ctx, cfg, log, getenv, stderr)
}

// serve runs the bridge until ctx ends, then puts outputs in their safe
// state, says offline on MQTT and stops. An apply (the panel, SIGHUP) ends
// one epoch and starts the next with the new configuration: the board
// hands its unchanged outputs over, everything downstream of the signal
// table is built again, and a new configuration that does not reach
// healthy within applyHealthyWithin is rolled back.
func serve(ctx context.Context, cfg *Config, log *slog.Logger, getenv func(string) string, stderr io.Writer) error {
	start := time.Now()
	log.Info("starting", "version", version, "device", cfg.Device.ID, "board", cfg.GPIO.Board, "state_dir", cfg.StateDir)
	rl := newReloader(log, getenv)
	defer rl.watchHUP(ctx)()
	ep := epoch{cfg: cfg}
	for {
		board, next, err := serveEpoch(ctx, ep, rl, log, getenv, stderr, start)
		if ep.gate != nil && next == nil && ctx.Err() == nil && err != nil {
			// The new configuration failed to start: back to the previous one.
			next = rollbackTo(ep, err.Error(), log)
			if board != nil {
				board.HandOver(next.cfg.GPIO)
			}
		}
		if board != nil {
			if cerr := board.Close(); cerr != nil {
				log.Warn("closing the board", "err", cerr)
			}
		}
		if next == nil || ctx.Err() != nil {
			if ep.keep != nil && board == nil {
				ep.keep.TakeBack() // nobody took the pins over
				ep.keep.Close()
			}
			if err != nil && ctx.Err() == nil {
				return err
			}
			log.Info("stopped")
			return nil
		}
		if next.rollback != "" {
			rl.finish("rolled_back", next.rollback)
		}
		keep := board
		if keep == nil {
			keep = ep.keep // the new board never opened: the old one's pins are still handed
		}
		var g *gate
		if next.rollback == "" {
			g = &gate{prev: ep.cfg, req: next, wasConnected: next.wasConnected}
		}
		sessions := next.sessions
		if board == nil && sameLogins(ep.gate.prev, next.cfg) {
			sessions = ep.sessions // the failed epoch never served
		}
		ep = epoch{cfg: next.cfg, keep: keep, gate: g, sessions: sessions}
	}
}

// epoch is one run of the bridge with one configuration.
type epoch struct {
	cfg  *Config
	keep *gpio.Board // the previous epoch's board, handing its pins over
	gate *gate       // set while a new configuration must prove healthy
	// sessions are the panel's logins, kept while the tokens stay.
	sessions ws.Sessions
}

// gate is what the health check of a new configuration compares against.
type gate struct {
	prev         *Config
	req          *applyRequest
	wasConnected bool
}

// rollbackTo logs the rollback of ep's configuration and restores the
// previous file, and returns the request that starts the previous one.
func rollbackTo(ep epoch, reason string, log *slog.Logger) *applyRequest {
	g := ep.gate
	log.Error("rolling back to the previous configuration", "who", g.req.who, "reason", reason, g.req.changes.logArgs())
	if g.req.wrote {
		if err := writeAtomic(g.prev.path, g.prev.source); err != nil {
			log.Error("restoring the previous configuration file", "err", err)
		}
	} else if g.prev.path != "" {
		log.Warn("the configuration file on disk is not the one running: fix it before the next SIGHUP or restart", "file", g.prev.path)
	}
	return &applyRequest{cfg: g.prev, who: "rollback", rollback: reason}
}

// serveEpoch runs one epoch until ctx ends or an apply is requested. It
// returns its board still open (nil when it did not open), for the caller
// to close after the next epoch's board knows what it takes over.
func serveEpoch(ctx context.Context, ep epoch, rl *reloader, log *slog.Logger, getenv func(string) string, stderr io.Writer, start time.Time) (board *gpio.Board, next *applyRequest, err error) {
	cfg := ep.cfg
	ectx, stopEpoch := context.WithCancel(ctx)
	defer stopEpoch()
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("state_dir: %w", err)
	}
	board, err = openBoard(cfg, ep.keep, log, getenv)
	if err != nil {
		return nil, nil, err
	}
	// A development aid: datagrams on this socket drive the sim board's
	// inputs (gpio.SimControl); it stops with the board.
	var simControl part
	if path := getenv("PIBRIDGE_SIM_CONTROL"); path != "" {
		sc, err := gpio.ListenSimControl(path, board, log.With("part", "simcontrol"))
		if err != nil {
			return board, nil, fmt.Errorf("PIBRIDGE_SIM_CONTROL: %w", err)
		}
		defer sc.Close() // when serve returns before Run
		simControl = func(ctx context.Context) error {
			if err := sc.Run(ctx); err != nil {
				log.Warn("sim control", "err", err)
			}
			return nil
		}
	}
	stall, err := diskStall(getenv(diskStallEnv))
	if err != nil {
		return board, nil, err
	}
	core, err := pibridge.New(pibridge.Options{
		Device:   pibridge.Device{ID: cfg.Device.ID, Name: cfg.Device.Name, Version: version},
		Signals:  board.Signals(),
		StateDir: cfg.StateDir,
		Logger:   log.With("part", "core"),
		DiskGate: stall,
	})
	if err != nil {
		return board, nil, err
	}
	defer func() {
		if err := core.Close(); err != nil {
			log.Warn("saving the seq counter", "err", err)
		}
	}()
	var broker *mqtt.Broker
	var embeddedAddr, embeddedPassword string
	if cfg.MQTT.UsesEmbedded() {
		bc := mqtt.BrokerConfig{Listen: cfg.MQTT.EmbeddedListen, Owner: cfg.MQTT.ClientID}
		if cfg.MQTT.EmbeddedNeedsAuth() {
			a, pw, err := embeddedAuth(cfg, log, stderr)
			if err != nil {
				return board, nil, err
			}
			bc.Auth, embeddedPassword = &a, pw
		}
		if broker, err = mqtt.OpenBroker(bc, log.With("part", "broker")); err != nil {
			return board, nil, err
		}
		defer broker.Close() // when serve returns before Run
		embeddedAddr = broker.Addr()
		log.Info("embedded MQTT broker listening", "addr", broker.Addr())
	}
	var live *ws.Server
	client, err := mqtt.New(mqtt.Options{Config: cfg.MQTT, Core: core, Logger: log.With("part", "mqtt"), Version: version, StateDir: cfg.StateDir,
		Stale: board.Stale, PanelURL: func() string { return publicPanelURL(live) },
		EmbeddedAddr: embeddedAddr, EmbeddedPassword: embeddedPassword})
	if err != nil {
		return board, nil, err
	}
	defer client.Close() // when serve returns before Run
	live, err = ws.New(ws.Options{Core: core, Config: cfg.HTTP, Logger: log.With("part", "ws"), StateDir: cfg.StateDir,
		Passthrough: client, BridgeAllow: cfg.MQTT.BridgeAllow, Sessions: ep.sessions})
	if err != nil {
		return board, nil, err
	}
	// One notion of "alive" for the watchdog, /healthz and /metrics.
	probe := newCoreProbe(func() { core.State() }, probeTimeout)
	met := newMetrics(core, board, client, live, probe.Alive)
	defer met.Close()
	core.SetActuator(observedActuator{Actuator: board, observe: met.ObserveCommand})
	core.ObserveCommands(met.ObserveCommandSource)
	if started != nil {
		started(board, core)
	}
	sd := newSDNotifier(getenv, log.With("part", "systemd"))

	mux := http.NewServeMux()
	live.Routes(mux)
	live.PanelRoutes(mux, panelAPI(panelParts{cfg: cfg, getenv: getenv, log: log, board: board, core: core, client: client,
		live: live, met: met, opts: metricsOptions(core, board, client, live, probe.Alive), start: start, rl: rl}))
	// Both stay open without a token (README: HTTP): they tell numbers, never
	// state or commands.
	mux.Handle("GET /healthz", healthHandler(client, board, probe.Alive, core.ClockState))
	mux.Handle("GET /metrics", met.Handler())
	mux.Handle("/", web.Handler())
	const readHeaderTimeout = 5 * time.Second
	srv := &http.Server{
		// The Host check (and, with http.tls, the redirect to https) covers
		// every route, /healthz and /metrics included.
		Handler:           live.Protect(mux),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("part", "http").Handler(), slog.LevelWarn),
	}
	ln, err := live.Listen(readHeaderTimeout)
	if err != nil {
		return board, nil, fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	log.Info("panel listening", "addr", ln.Addr().String())
	// The URL may carry a generated token: it goes to the terminal (or the
	// journal) once, never through the structured log that gets shipped.
	fmt.Fprintf(stderr, "panel: %s\n", live.PanelURL())

	// The parts, in their shutdown order: outputs safe first; then MQTT,
	// so that the safe-state readings and `offline` still go out; then the
	// embedded broker, once it has passed them on; the panel last, so that
	// it shows the safe state too.
	pins := []part{
		func(ctx context.Context) error { return board.Run(ctx, core) },
		func(ctx context.Context) error { return sd.ready(ctx, board, "panel on "+ln.Addr().String()) },
		func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				sd.notify(sdStopping)
				log.Info("stopping: outputs to their safe state")
			case next = <-rl.req:
				// Before Run ends: the outputs that stay must not go safe.
				next.wasConnected = client.Connected()
				if sameLogins(cfg, next.cfg) {
					next.sessions = live.Sessions()
				}
				kept := board.HandOver(next.cfg.GPIO)
				log.Info("reconfiguring: the parts stop and start again with the new configuration", "who", next.who, "outputs_kept", kept)
				stopEpoch()
			}
			return nil
		},
	}
	if ep.gate != nil {
		pins = append(pins, func(ctx context.Context) error {
			return healthGate(ctx, ep.gate, rl, log, func() string {
				if ep.gate.wasConnected && !client.Connected() {
					return "MQTT did not connect to " + cfg.MQTT.BrokerSummary()
				}
				return ""
			})
		})
	}
	if simControl != nil {
		pins = append(pins, simControl)
	}
	if every := sd.watchdogEvery(); every > 0 {
		log.Info("petting the systemd watchdog", "every", every)
		pins = append(pins, func(ctx context.Context) error {
			t := time.NewTicker(every)
			defer t.Stop()
			return watchdog(ctx, t.C, probe.Alive, func() { sd.notify(sdWatchdog) }, log.With("part", "systemd"))
		})
	}
	if d := cfg.GPIO.ShortestFailsafe(); d > 0 {
		pins = append(pins, func(ctx context.Context) error { return watchLink(ctx, linkCheckEvery(d), board, client, live) })
	}
	var embedded []part
	if broker != nil {
		embedded = append(embedded, broker.Run)
	}
	rl.setCurrent(cfg)
	err = runStages(ectx,
		pins,
		[]part{client.Run},
		embedded,
		[]part{live.Run, func(ctx context.Context) error { return serveHTTP(ctx, srv, ln) }},
	)
	if err != nil && ctx.Err() == nil && next == nil {
		return board, nil, err
	}
	return board, next, nil
}

// serveHTTP serves ln until ctx ends, then lets the requests in flight
// finish within shutdownBudget.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err // never ErrServerClosed: only Shutdown below closes it
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownBudget)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// linkCheckEvery is how often the failsafe is told whether the broker or a
// panel is there: a tenth of the shortest failsafe_after, at most a second.
// Two atomic loads a check cost nothing and need no hooks into mqtt or ws.
func linkCheckEvery(failsafe time.Duration) time.Duration {
	return min(max(failsafe/10, 10*time.Millisecond), time.Second)
}

// watchLink tells the board whether anybody can reach the bridge, for the
// outputs with failsafe_after. It runs only when one has it.
func watchLink(ctx context.Context, every time.Duration, board *gpio.Board, client *mqtt.Client, live *ws.Server) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		board.SetOnline(client.Connected() || live.Clients() > 0)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type healthReport struct {
	Status string `json:"status"` // ok, or degraded (503) when the core is stuck
	Core   string `json:"core"`   // ok or stuck; see coreProbe
	MQTT   string `json:"mqtt"`
	Queue  int    `json:"queue"`
	// Stale lists signals whose sensor keeps failing; the bridge itself
	// is fine, so the status stays ok.
	Stale []string `json:"stale,omitempty"`
	// Clock is synced, unsynced (readings' ts may be wrong: no time
	// source yet) or unknown; ClockSteps counts the wall clock's jumps
	// since the start. Neither makes the status degraded.
	Clock      string `json:"clock"`
	ClockSteps uint64 `json:"clock_steps,omitempty"`
}

// healthHandler serves /healthz: 200 while the core is alive, 503
// "degraded" when it is stuck (the same test as the systemd watchdog's), so
// that a load balancer or a monitor sees what systemd sees. A broker that
// is away is not a failure of the bridge: its outbox is there for that.
func healthHandler(client *mqtt.Client, board *gpio.Board, alive func() bool, clock func() pibridge.ClockState) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := healthReport{Status: "ok", Core: "ok", MQTT: "disconnected", Queue: client.Queued(), Stale: board.StaleSignals()}
		cs := clock()
		h.Clock, h.ClockSteps = cs.String(), cs.Steps
		if client.Connected() {
			h.MQTT = "connected"
		}
		code := http.StatusOK
		if !alive() {
			h.Status, h.Core, code = "degraded", "stuck", http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(h)
	})
}

// publicPanelURL is the panel's address for Home Assistant's device card:
// without the generated token, which must not go to the broker, and
// nothing for a panel on loopback, which no other machine can open.
func publicPanelURL(live *ws.Server) string {
	if live == nil {
		return ""
	}
	u, err := url.Parse(live.PanelURL())
	if err != nil {
		return ""
	}
	u.Fragment = ""
	if h := u.Hostname(); h == "localhost" || net.ParseIP(h).IsLoopback() {
		return ""
	}
	return u.String()
}

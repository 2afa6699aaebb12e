// Command bench measures the real bridge binary as a child process on
// loopback: idle footprint, sensor event → WebSocket frame, the
// WebSocket command round trip and MQTT QoS 1 throughput through the disk
// outbox, each at the GOMAXPROCS values asked for.
//
// It is not part of `make test`: run it with `make bench`, or
//
//	go run ./bench -bridge bin/bridge -scenario all -samples 20000 -procs 1,2
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"pibridge/internal/harness"
)

func main() {
	if sock := os.Getenv(echoEnv); sock != "" {
		os.Exit(echoMain(sock)) // the datagram-hop baseline's far end; see scen_edge.go
	}
	harness.Main("bench", run)
}

type options struct {
	bridge   string
	scenario string
	samples  int
	warmup   int
	procs    []int
	clients  []int
	idle     time.Duration
	window   time.Duration
	inject   string
	keep     bool
	peer     peerOptions
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var procs, clients string
	peerFlags := registerPeerFlags(fs)
	fs.StringVar(&o.bridge, "bridge", "bin/bridge", "the bridge binary to measure")
	fs.StringVar(&o.scenario, "scenario", "all", "all, or a comma-separated list of: idle, event, roundtrip, outbox, mqttws, fanout, slow, idleconns, command")
	fs.IntVar(&o.samples, "samples", 20000, "command round trips, and edges with one client, to time (after -warmup)")
	fs.IntVar(&o.warmup, "warmup", 2000, "command round trips and edges discarded before timing")
	fs.StringVar(&procs, "procs", "1,2", "GOMAXPROCS values to run the daemon with")
	fs.StringVar(&clients, "clients", "1,100", "WebSocket client counts for the event scenario")
	fs.DurationVar(&o.idle, "idle", 10*time.Second, "idle CPU window (60s for BENCHMARKS.md)")
	fs.DurationVar(&o.window, "window", 10*time.Second, "outbox scenario throughput window (after 2s warm-up)")
	fs.StringVar(&o.inject, "inject", "flood", "outbox scenario: flood (datagrams as fast as the socket takes them) or windowed (≤ 20 readings in flight, none merged)")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory (configs, daemon logs)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for sc := range strings.SplitSeq(o.scenario, ",") {
		switch sc {
		case "all", "idle", "event", "roundtrip", "outbox":
		case "mqttws", "fanout", "slow", "idleconns", "command":
		default:
			return o, fmt.Errorf("-scenario %q: want all, or a comma-separated list of idle, event, roundtrip, outbox, mqttws, fanout, slow, idleconns, command", sc)
		}
	}
	if o.inject != "flood" && o.inject != "windowed" {
		return o, fmt.Errorf("-inject %q: want flood or windowed", o.inject)
	}
	var err error
	if o.peer, err = peerFlags(); err != nil {
		return o, err
	}
	if o.procs, err = intList(procs); err != nil {
		return o, fmt.Errorf("-procs: %w", err)
	}
	if o.clients, err = intList(clients); err != nil {
		return o, fmt.Errorf("-clients: %w", err)
	}
	if o.samples < 1 || o.warmup < 0 {
		return o, errors.New("-samples must be at least 1 and -warmup not negative")
	}
	return o, nil
}

// runs reports whether -scenario selects name.
func (o options) runs(name string) bool { return selects(o.scenario, name) }

func selects(scenario, name string) bool {
	return scenario == "all" || slices.Contains(strings.Split(scenario, ","), name)
}

func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == peerFlag {
		return runPeer(ctx, args[1:])
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	m, scratch, cleanup, err := harness.Setup(o.bridge, "bench", args, o.keep, stdout)
	if err != nil {
		return err
	}
	defer cleanup()
	pe, err := preparePeers(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "clock: load generator's time.Now, monotonic (ns) for round trips and injected edges; wall clock only against the reading's ms ts (cross-check)\n\n")

	for _, p := range o.procs {
		pin := harness.PlanPinning(p, m.NCPU)
		fmt.Fprintf(stdout, "== GOMAXPROCS=%d: %s\n\n", p, pin.Describe())
		if err := pin.PinSelf(); err != nil {
			fmt.Fprintf(stdout, "note: could not pin the load generator: %v\n", err)
		}
		d := harness.DaemonSpec{Bin: o.bridge, Procs: p, Pin: pin, Scratch: scratch}
		if o.runs("idle") {
			r, err := idleScenario(ctx, d, o)
			if err != nil {
				return fmt.Errorf("idle, GOMAXPROCS=%d: %w", p, err)
			}
			r.Print(stdout)
		}
		if o.runs("event") {
			for _, n := range o.clients {
				r, err := edgeScenario(ctx, d, o, n)
				if err != nil {
					return fmt.Errorf("event, %d clients, GOMAXPROCS=%d: %w", n, p, err)
				}
				r.Print(stdout)
			}
		}
		if o.runs("roundtrip") {
			r, err := roundTripScenario(ctx, d, o)
			if err != nil {
				return fmt.Errorf("roundtrip, GOMAXPROCS=%d: %w", p, err)
			}
			r.Print(stdout)
		}
		if o.runs("outbox") {
			r, err := outboxScenario(ctx, d, o)
			if err != nil {
				return fmt.Errorf("outbox, GOMAXPROCS=%d: %w", p, err)
			}
			r.Print(stdout)
		}
		if err := runPeerScenarios(ctx, pe, d, o.scenario, stdout); err != nil {
			return fmt.Errorf("GOMAXPROCS=%d: %w", p, err)
		}
	}
	return nil
}

// Command faults runs the real bridge binary through the fault suite and
// prints one Markdown table per fault with a verdict:
//
//  1. mosquitto SIGKILLed and restarted under 1,000 readings/s
//  2. the bridge SIGKILLed mid-stream and restarted on its state dir
//  3. slowloris HTTP clients and WebSocket clients that never read
//  4. random concurrent commands to an interlocked pair of outputs
//  5. malformed and oversize input on every door
//  6. a soak: RSS drift, goroutines back to baseline
//  7. the state dir's writes stalling 2 s at a time under WebSocket load
//
// It exits non-zero when any fault misses a target. Not part of `make
// test`: run it with `make faults`, or
//
//	go run ./faults -bridge bin/bridge -only 1,3 -kills 3 -soak 1m
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"pibridge/internal/harness"
)

func main() { harness.Main("faults", run) }

type options struct {
	bridge   string
	only     map[int]bool
	kills    int
	crashes  int
	slow     int
	commands int
	flood    time.Duration
	soak     time.Duration
	window   time.Duration
	procs    int
	pin      bool
	keep     bool
	// readHeaderTimeout and writeWait are the daemon's, stated here
	// (cmd/bridge/run.go, ws/server.go defaultTuning) to judge closing times.
	readHeaderTimeout time.Duration
	writeWait         time.Duration
	pongWait          time.Duration
}

var faultNames = map[int]string{
	1: "broker killed", 2: "bridge killed", 3: "slow clients",
	4: "interlock", 5: "malformed input", 6: "soak", 7: "disk stall",
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var only string
	fs.StringVar(&o.bridge, "bridge", "bin/bridge", "the bridge binary under test")
	fs.StringVar(&only, "only", "1,2,3,4,5,6,7", "faults to run, by number: 1 broker killed, 2 bridge killed, 3 slow clients, 4 interlock, 5 malformed input, 6 soak, 7 disk stall")
	fs.IntVar(&o.kills, "kills", 20, "fault 1: mosquitto SIGKILLs")
	fs.IntVar(&o.crashes, "crashes", 20, "fault 2: bridge SIGKILLs")
	fs.IntVar(&o.slow, "slow", 500, "fault 3: slowloris HTTP clients, and as many WebSocket clients that never read")
	fs.IntVar(&o.commands, "commands", 10000, "fault 4: random commands to the interlocked pair")
	fs.DurationVar(&o.flood, "flood", 10*time.Second, "fault 5: how long each door is flooded")
	fs.DurationVar(&o.soak, "soak", 30*time.Minute, "fault 6: soak duration")
	fs.DurationVar(&o.window, "window", 10*time.Second, "fault 3: latency window without the attack")
	fs.IntVar(&o.procs, "procs", 2, "GOMAXPROCS of the daemon")
	fs.BoolVar(&o.pin, "pin", false, "pin the daemon and this process to disjoint cores with taskset")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory (configs, daemon logs, mosquitto data)")
	fs.DurationVar(&o.readHeaderTimeout, "read-header-timeout", 5*time.Second, "the daemon's http.Server ReadHeaderTimeout (cmd/bridge/run.go)")
	fs.DurationVar(&o.writeWait, "write-wait", 10*time.Second, "the daemon's WebSocket write deadline (ws/server.go writeWait)")
	fs.DurationVar(&o.pongWait, "pong-wait", 60*time.Second, "the daemon's WebSocket read deadline without a pong (ws/server.go pongWait)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	o.only = map[int]bool{}
	for f := range strings.SplitSeq(only, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || faultNames[n] == "" {
			return o, fmt.Errorf("-only %q: want fault numbers 1 to 7 separated by commas", only)
		}
		o.only[n] = true
	}
	if o.kills < 1 || o.crashes < 1 || o.slow < 1 || o.commands < 1 || o.procs < 1 {
		return o, errors.New("-kills, -crashes, -slow, -commands and -procs must be at least 1")
	}
	if o.soak < 10*time.Second || o.flood < time.Second || o.window < time.Second {
		return o, errors.New("-soak must be at least 10s, -flood and -window at least 1s")
	}
	return o, nil
}

// suite is what every fault gets: the options, how to start daemons,
// and a scratch directory of its own.
type suite struct {
	o       options
	spec    harness.DaemonSpec
	scratch string
	out     io.Writer
}

type fault func(ctx context.Context, s *suite) (harness.Table, error)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	m, scratch, cleanup, err := harness.Setup(o.bridge, "faults", args, o.keep, stdout)
	if err != nil {
		return err
	}
	defer cleanup()
	var pin harness.Pinning
	if o.pin {
		pin = harness.PlanPinning(o.procs, m.NCPU)
		if err := pin.PinSelf(); err != nil {
			fmt.Fprintf(stdout, "note: could not pin the load generator: %v\n", err)
		}
		fmt.Fprintf(stdout, "%s\n", pin.Describe())
	} else {
		fmt.Fprintf(stdout, "daemon GOMAXPROCS=%d, not pinned (the load generator shares the cores)\n", o.procs)
	}
	fmt.Fprintln(stdout)
	s := &suite{o: o, spec: harness.DaemonSpec{Bin: o.bridge, Procs: o.procs, Pin: pin, Scratch: scratch}, scratch: scratch, out: stdout}

	faults := []fault{1: brokerKilled, 2: bridgeKilled, 3: slowClients, 4: interlock, 5: malformed, 6: soak, 7: diskStalled}
	var failed []string
	for n := 1; n <= 7; n++ {
		if !o.only[n] {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t0 := time.Now()
		t, err := faults[n](ctx, s)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(stdout, "### fault %d (%s): could not be run\n\n%v\n\n", n, faultNames[n], err)
			failed = append(failed, fmt.Sprintf("%d (%s: error)", n, faultNames[n]))
			continue
		}
		t.Notes = append(t.Notes, fmt.Sprintf("fault %d took %s", n, time.Since(t0).Round(100*time.Millisecond)))
		t.Print(stdout)
		if !passed(t) {
			failed = append(failed, fmt.Sprintf("%d (%s)", n, faultNames[n]))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	fmt.Fprintln(stdout, "all faults passed")
	return nil
}

// passed: no row of the table missed its target.
func passed(t harness.Table) bool {
	for _, r := range t.Rows {
		if r.Verdict == "missed" {
			return false
		}
	}
	return true
}

package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"syscall"

	"pibridge/internal/harness"
)

// peerScenarios are the scenarios against peers, in the order they run.
var peerScenarios = []string{"mqttws", "fanout", "slow", "idleconns", "command"}

// preparePeers checks, before anything runs, that the peers asked for
// are installed, and raises this process's open-file limit to its hard
// limit: the idle-connections scenario holds 10,000 sockets, and every
// child (mosquitto, node, the bridge) inherits the raised limit.
func preparePeers(o options) (peerEnv, error) {
	e := peerEnv{o: o.peer}
	if !slices.ContainsFunc(peerScenarios, o.runs) {
		return e, nil
	}
	if err := checkPeers(o.peer); err != nil {
		return e, err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return e, fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return e, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	need := uint64(slices.Max(o.peer.idleConns)) + 1000
	if o.runs("idleconns") && lim.Max < need {
		return e, fmt.Errorf("RLIMIT_NOFILE hard limit %d is below the %d that -idle-conns needs: raise it (ulimit -Hn) or lower -idle-conns", lim.Max, need)
	}
	return e, nil
}

// runPeerScenarios runs those of scenarios 3–6 that scenario selects,
// with the daemon as d says.
func runPeerScenarios(ctx context.Context, e peerEnv, d harness.DaemonSpec, scenario string, w io.Writer) error {
	e.d, e.scratch = d, d.Scratch
	type scen struct {
		name string
		run  func(context.Context, peerEnv) ([]harness.Table, error)
	}
	one := func(f func(context.Context, peerEnv) (harness.Table, error)) func(context.Context, peerEnv) ([]harness.Table, error) {
		return func(ctx context.Context, e peerEnv) ([]harness.Table, error) {
			t, err := f(ctx, e)
			return []harness.Table{t}, err
		}
	}
	for _, s := range []scen{
		{"mqttws", one(mqttWSScenario)},
		{"fanout", fanoutScenario},
		{"slow", one(slowScenario)},
		{"idleconns", one(idleConnsScenario)},
		{"command", one(commandScenario)},
	} {
		if !selects(scenario, s.name) {
			continue
		}
		ts, err := s.run(ctx, e)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		for _, t := range ts {
			t.Print(w)
		}
	}
	return nil
}

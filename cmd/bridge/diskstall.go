package main

import (
	"fmt"
	"strings"
	"time"
)

// diskStallEnv makes the core's disk writer stall, for the fault suite
// only: "2s,3s" blocks every write to the state dir by the core's journal
// goroutine (the outbox's log, the seq reservation) for 2 s, then lets
// them through for 3 s, over and over, from the start. The outbox's own
// group commit is not slowed: it was never on a reading's path.
const diskStallEnv = "PIBRIDGE_FAULT_DISK_STALL"

// diskStall returns the gate for the value of diskStallEnv; nil when it
// is empty, which is the bridge's release behaviour.
func diskStall(spec string) (func(), error) {
	if spec == "" {
		return nil, nil
	}
	stallS, freeS, ok := strings.Cut(spec, ",")
	stall, err1 := time.ParseDuration(stallS)
	free, err2 := time.ParseDuration(freeS)
	if !ok || err1 != nil || err2 != nil || stall <= 0 || free <= 0 {
		return nil, fmt.Errorf("%s=%q: want two positive durations, stall and free, such as \"2s,3s\"", diskStallEnv, spec)
	}
	start := time.Now()
	period := stall + free
	return func() {
		if in := time.Since(start) % period; in < stall {
			time.Sleep(stall - in)
		}
	}, nil
}

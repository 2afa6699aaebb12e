package main

import "runtime/debug"

// The Go runtime's defaults suit a server with memory to spare; the bridge
// runs on a Pi Zero (512 MB, one core) beside other services, with a live
// heap of about 2 MB. Both are set only when the environment does not
// (GOGC, GOMEMLIMIT), so a unit file can still override them.
const (
	// gcPercent: with the default 100 the heap grows to twice the live
	// heap, and to at least 4 MB, before a collection, and the pages it
	// touched stay resident: 4.6 MB of heap at idle against 3.4 MB with
	// 50 (2 min idle). The price is a collection about every
	// half minute at idle instead of every minute, some 1 ms of CPU each;
	// 25 saved nothing more.
	gcPercent = 50
	// memoryLimit is a ceiling, not a target: four to five times what the
	// demo maps. Should the bridge ever grow that far (a flood of
	// clients, a leak), the collector works harder instead of letting the
	// heap double again at the expense of the other services. It is
	// soft: past it the runtime spends at most half the CPU on
	// collection and lets the heap grow rather than stall the bridge.
	memoryLimit = 64 << 20
)

// tuneGC applies gcPercent and memoryLimit where the environment leaves
// them unset. It is process-wide, so main calls it, not run.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

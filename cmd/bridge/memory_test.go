package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestTuneGC: the bridge's GOGC and memory limit apply only where the
// environment sets none.
func TestTuneGC(t *testing.T) {
	percent := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	})
	tests := []struct {
		env         map[string]string
		wantPercent int
		wantLimit   int64
	}{
		{nil, gcPercent, memoryLimit},
		{map[string]string{"GOGC": "200"}, 100, memoryLimit},
		{map[string]string{"GOMEMLIMIT": "1GiB"}, gcPercent, math.MaxInt64},
		{map[string]string{"GOGC": "off", "GOMEMLIMIT": "100MiB"}, 100, math.MaxInt64},
	}
	for _, tt := range tests {
		debug.SetGCPercent(100)
		debug.SetMemoryLimit(math.MaxInt64)
		tuneGC(func(k string) string { return tt.env[k] })
		if got := debug.SetGCPercent(100); got != tt.wantPercent {
			t.Errorf("env %v: GOGC %d, want %d", tt.env, got, tt.wantPercent)
		}
		if got := debug.SetMemoryLimit(-1); got != tt.wantLimit {
			t.Errorf("env %v: memory limit %d, want %d", tt.env, got, tt.wantLimit)
		}
	}
}

//go:build pprof

package main

// Profiling build for the benchmarks: `go build -tags pprof`
// and PIBRIDGE_PPROF=127.0.0.1:6060 serve net/http/pprof on its own
// listener. Kept out of the release builds: it costs binary size the Pi
// Zero target has no room for, and it must never face the LAN.

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("PIBRIDGE_PPROF")
	if addr == "" {
		return
	}
	go func() {
		slog.Warn("pprof listening (profiling build)", "addr", addr)
		if err := http.ListenAndServe(addr, nil); err != nil {
			slog.Error("pprof", "err", err)
		}
	}()
}

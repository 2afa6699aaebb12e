package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"pibridge/gpio"
)

// sdNotifier speaks systemd's notify protocol for the Type=notify unit in
// deploy/raspi/pibridge.service: READY=1 once the panel listens and the
// board runs, WATCHDOG=1 while the core is alive, STOPPING=1 at shutdown.
// Outside such a unit (no NOTIFY_SOCKET) every method does nothing.
type sdNotifier struct {
	on  bool
	log *slog.Logger
}

// newSDNotifier looks at NOTIFY_SOCKET through getenv, as run sees its
// environment; go-systemd then reads the same variables from the process.
func newSDNotifier(getenv func(string) string, log *slog.Logger) *sdNotifier {
	return &sdNotifier{on: getenv("NOTIFY_SOCKET") != "", log: log}
}

func (n *sdNotifier) notify(state string) {
	if !n.on {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify", "state", state, "err", err)
	}
}

// watchdogEvery is how often to pet systemd's watchdog: half of the unit's
// WatchdogSec, as sd_watchdog_enabled(3) advises; 0 when there is none.
func (n *sdNotifier) watchdogEvery() time.Duration {
	if !n.on {
		return 0
	}
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("systemd watchdog not understood; not petting it", "err", err)
		return 0
	}
	return d / 2
}

// ready tells systemd the bridge is up once the board runs (the HTTP
// listener is bound before this starts). Run is started on its own
// goroutine and sets itself running at once, so the wait is a few
// milliseconds.
func (n *sdNotifier) ready(ctx context.Context, board *gpio.Board, status string) error {
	if !n.on {
		return nil
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !board.Running() {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	n.notify(daemon.SdNotifyReady + "\nSTATUS=" + status)
	return nil
}

// watchdog pets on every tick while alive says the core is. When the core
// is stuck it stays silent, and WatchdogSec after the last pet systemd
// kills the bridge with SIGABRT (the Go runtime writes every goroutine's
// stack to the journal), runs ExecStopPost (-safe-state) and restarts it.
func watchdog(ctx context.Context, ticks <-chan time.Time, alive func() bool, pet func(), log *slog.Logger) error {
	stuck := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
		}
		if alive() {
			pet()
			if stuck {
				log.Warn("core answers again; petting the systemd watchdog")
				stuck = false
			}
			continue
		}
		if !stuck {
			log.Error("core stuck: not petting the systemd watchdog, which will restart the bridge")
			stuck = true
		}
	}
}

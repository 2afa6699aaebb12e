package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"pibridge/gpio"
)

// The states sent to systemd (sd_notify(3)).
const (
	sdReady    = "READY=1"
	sdStopping = "STOPPING=1"
	sdWatchdog = "WATCHDOG=1"
)

// sdNotifier speaks systemd's notify protocol for the Type=notify unit in
// deploy/raspi/pibridge.service: READY=1 once the panel listens and the
// board runs, WATCHDOG=1 while the core is alive, STOPPING=1 at shutdown.
// Outside such a unit (no NOTIFY_SOCKET) every method does nothing.
//
// The protocol is one datagram per message to the unix socket named by
// NOTIFY_SOCKET: a few lines here rather than go-systemd, a dependency
// for two calls on a binary that must fit a Pi Zero.
type sdNotifier struct {
	addr     *net.UnixAddr // nil outside a notify unit
	watchdog time.Duration // WATCHDOG_USEC, when it is meant for this process
	log      *slog.Logger
}

// newSDNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID
// through getenv, as run sees its environment.
func newSDNotifier(getenv func(string) string, log *slog.Logger) *sdNotifier {
	n := &sdNotifier{log: log}
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return n
	}
	// A leading @ (the abstract namespace) is the net package's spelling
	// too.
	n.addr = &net.UnixAddr{Name: path, Net: "unixgram"}
	d, err := watchdogUSec(getenv)
	if err != nil {
		log.Warn("systemd watchdog not understood; not petting it", "err", err)
	}
	n.watchdog = d
	return n
}

// watchdogUSec is WATCHDOG_USEC when WATCHDOG_PID is unset or this
// process (it may be meant for a parent that exec'd us), as
// sd_watchdog_enabled(3) reads them; 0 when there is no watchdog.
func watchdogUSec(getenv func(string) string) (time.Duration, error) {
	s := getenv("WATCHDOG_USEC")
	if s == "" {
		return 0, nil
	}
	usec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || usec <= 0 {
		return 0, errors.New("WATCHDOG_USEC=" + strconv.Quote(s) + " is not a positive number")
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return 0, errors.New("WATCHDOG_PID=" + strconv.Quote(p) + " is not a number")
		}
		if pid != os.Getpid() {
			return 0, nil
		}
	}
	return time.Duration(usec) * time.Microsecond, nil
}

func (n *sdNotifier) notify(state string) {
	if n.addr == nil {
		return
	}
	if err := n.send(state); err != nil {
		n.log.Warn("sd_notify", "state", state, "err", err)
	}
}

func (n *sdNotifier) send(state string) error {
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// watchdogEvery is how often to pet systemd's watchdog: half of the unit's
// WatchdogSec, as sd_watchdog_enabled(3) advises; 0 when there is none.
func (n *sdNotifier) watchdogEvery() time.Duration {
	if n.addr == nil {
		return 0
	}
	return n.watchdog / 2
}

// ready tells systemd the bridge is up once the board runs (the HTTP
// listener is bound before this starts). Run is started on its own
// goroutine and sets itself running at once, so the wait is a few
// milliseconds.
func (n *sdNotifier) ready(ctx context.Context, board *gpio.Board, status string) error {
	if n.addr == nil {
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
	n.notify(sdReady + "\nSTATUS=" + status)
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

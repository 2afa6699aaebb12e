package main

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestSDNotifyDatagrams: each notify is one datagram, byte for byte, on a
// real unixgram socket, named by a path or in the abstract namespace (@).
func TestSDNotifyDatagrams(t *testing.T) {
	abstract := "@pibridge-test-" + strconv.Itoa(os.Getpid())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: abstract, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, c := range []struct {
		name, socket string
		read         func(t *testing.T) string
	}{
		{"path", "", nil},
		{"abstract", abstract, func(t *testing.T) string {
			buf := make([]byte, 4096)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			return string(buf[:k])
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			socket, read := c.socket, c.read
			if socket == "" {
				sock := listenNotify(t)
				socket = sock.path
				read = func(t *testing.T) string {
					select {
					case m := <-sock.msgs:
						return m
					case <-time.After(5 * time.Second):
						t.Fatal("no datagram")
						return ""
					}
				}
			}
			var logs syncBuffer
			n := newSDNotifier(func(k string) string { return map[string]string{"NOTIFY_SOCKET": socket}[k] },
				slog.New(slog.NewTextHandler(&logs, nil)))
			for _, state := range []string{sdReady + "\nSTATUS=panel on 127.0.0.1:8080", sdWatchdog, sdStopping} {
				n.notify(state)
				if got := read(t); got != state {
					t.Errorf("datagram %q, want %q", got, state)
				}
			}
			if logs.String() != "" {
				t.Errorf("logged: %s", logs.String())
			}
		})
	}
}

// TestSDNotifyOutsideUnit: without NOTIFY_SOCKET nothing is sent and
// there is no watchdog, whatever WATCHDOG_USEC says.
func TestSDNotifyOutsideUnit(t *testing.T) {
	n := newSDNotifier(func(k string) string { return map[string]string{"WATCHDOG_USEC": "200000"}[k] }, slog.New(slog.DiscardHandler))
	n.notify(sdReady) // must not panic or block
	if d := n.watchdogEvery(); d != 0 {
		t.Errorf("watchdogEvery = %v outside a unit", d)
	}
}

// TestSDWatchdogEvery reads WATCHDOG_USEC and WATCHDOG_PID as
// sd_watchdog_enabled(3) does; half the timeout is the petting interval.
func TestSDWatchdogEvery(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	tests := []struct {
		name      string
		usec, pid string
		want      time.Duration
		warns     bool
	}{
		{"no watchdog", "", "", 0, false},
		{"ours", "200000", me, 100 * time.Millisecond, false},
		{"no pid", "3000000", "", 1500 * time.Millisecond, false},
		{"another process's", "200000", "1", 0, false},
		{"garbage", "soon", me, 0, true},
		{"zero", "0", me, 0, true},
		{"bad pid", "200000", "me", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": tt.usec, "WATCHDOG_PID": tt.pid}
			var logs syncBuffer
			n := newSDNotifier(func(k string) string { return env[k] }, slog.New(slog.NewTextHandler(&logs, nil)))
			if got := n.watchdogEvery(); got != tt.want {
				t.Errorf("watchdogEvery = %v, want %v", got, tt.want)
			}
			if warned := logs.String() != ""; warned != tt.warns {
				t.Errorf("warned %v, want %v: %s", warned, tt.warns, logs.String())
			}
		})
	}
}

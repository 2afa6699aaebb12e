package testkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Mosquitto is a real Debian mosquitto on a loopback port, for tests, the
// benchmarks and the fault suite: it can be killed and started again on
// the same port.
type Mosquitto struct {
	Addr   string // MQTT listener, host:port
	WSAddr string // MQTT-over-WebSocket listener, "" unless asked for
	PID    int

	bin, conf string
	stderr    LockedBuffer
	cmd       *exec.Cmd
	exited    chan struct{}
}

// MosquittoOptions shape the generated configuration.
type MosquittoOptions struct {
	// Persist keeps sessions and queued messages in dir, snapshotted
	// every second (mosquitto's persistence is a periodic snapshot, not a
	// log: a SIGKILL loses what arrived since).
	Persist bool
	// WebSockets adds a `protocol websockets` listener on a free port.
	WebSockets bool
	// NoAnonymous refuses clients without a user name.
	NoAnonymous bool
	// Addr is the MQTT listener's address; empty: a free loopback port.
	Addr string
	// Extra configuration lines, appended after the listeners (more
	// listeners, TLS, password_file).
	Extra string
}

// RunMosquitto starts a mosquitto in a temporary directory of t and kills
// it when t ends, logging what it wrote to stderr; t fails if it cannot
// start.
func RunMosquitto(t testing.TB, o MosquittoOptions) *Mosquitto {
	t.Helper()
	m, err := StartMosquitto(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Kill()
		if s := m.Stderr(); s != "" {
			t.Logf("mosquitto: %s", s)
		}
	})
	return m
}

// StartMosquitto writes a configuration into dir and starts mosquitto.
// max_queued_messages and max_inflight_messages are 0 (unlimited) so that
// no count is shaped by mosquitto silently dropping or pacing; mosquitto
// forwards to connected subscribers before it sends the publisher its
// PUBACK. A free port taken meanwhile by someone else is retried with
// another.
func StartMosquitto(dir string, o MosquittoOptions) (*Mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, err := os.Stat(bin); err != nil {
			return nil, errors.New("mosquitto not found: install it (apt-get install mosquitto)")
		}
	}
	for attempt := 0; ; attempt++ {
		m, err := configure(bin, dir, o)
		if err != nil {
			return nil, err
		}
		if err = m.tryStart(); err == nil || o.Addr != "" || attempt == 2 {
			return m, err
		}
	}
}

func configure(bin, dir string, o MosquittoOptions) (*Mosquitto, error) {
	m := &Mosquitto{Addr: o.Addr, bin: bin}
	var err error
	if m.Addr == "" {
		if m.Addr, err = FreePort(); err != nil {
			return nil, err
		}
	}
	_, port, _ := net.SplitHostPort(m.Addr)
	// As root, mosquitto would drop to the mosquitto user and could not
	// write dir: `user root` keeps it.
	text := fmt.Sprintf("user root\nallow_anonymous %t\nmax_queued_messages 0\nmax_inflight_messages 0\n", !o.NoAnonymous) +
		"log_dest stderr\nlog_type error\nlog_type warning\n"
	if o.Persist {
		text += "persistence true\npersistence_location " + dir + "/\nautosave_interval 1\n"
	} else {
		text += "persistence false\n"
	}
	text += fmt.Sprintf("listener %s 127.0.0.1\n", port)
	if o.WebSockets {
		if m.WSAddr, err = FreePort(); err != nil {
			return nil, err
		}
		_, wsPort, _ := net.SplitHostPort(m.WSAddr)
		text += fmt.Sprintf("listener %s 127.0.0.1\nprotocol websockets\n", wsPort)
	}
	text += o.Extra
	m.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(text), 0o600); err != nil {
		return nil, err
	}
	return m, nil
}

// Start starts mosquitto (again) on its port and returns once it accepts
// connections; the port can linger for a moment after a kill.
func (m *Mosquitto) Start() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := m.tryStart()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // polling for the port, not synchronising
	}
}

func (m *Mosquitto) tryStart() error {
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stderr = &m.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	m.cmd, m.exited, m.PID = cmd, exited, cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			m.cmd = nil
			return fmt.Errorf("mosquitto exited: %s", m.stderr.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", m.Addr, 100*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond) // polling for the port, not synchronising
	}
	m.Kill()
	return errors.New("mosquitto did not accept connections within 5 s")
}

// Kill ends mosquitto with SIGKILL: nothing is saved.
func (m *Mosquitto) Kill() { m.end(syscall.SIGKILL) }

// Stop ends mosquitto with SIGTERM: it saves its persistence first.
func (m *Mosquitto) Stop() { m.end(syscall.SIGTERM) }

// Stderr is what mosquitto logged (errors and warnings).
func (m *Mosquitto) Stderr() string { return m.stderr.String() }

func (m *Mosquitto) end(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	<-m.exited
	m.cmd = nil
}

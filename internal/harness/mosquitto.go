package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"pibridge/internal/testkit"
)

// Mosquitto is a real Debian mosquitto on a loopback port, for the
// benchmarks (an MQTT peer, the bridge's external broker) and the fault
// suite (killed and started again on the same port).
type Mosquitto struct {
	Addr   string // MQTT listener, host:port
	WSAddr string // MQTT-over-WebSocket listener, "" unless asked for
	PID    int

	bin, conf string
	stderr    testkit.LockedBuffer
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
	// Extra configuration lines.
	Extra string
}

// StartMosquitto writes a configuration into dir and starts mosquitto.
// max_queued_messages and max_inflight_messages are 0 (unlimited) so that
// no figure is shaped by mosquitto silently dropping or pacing.
func StartMosquitto(dir string, o MosquittoOptions) (*Mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, err := os.Stat(bin); err != nil {
			return nil, errors.New("mosquitto not found: install it (apt-get install mosquitto)")
		}
	}
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &Mosquitto{Addr: addr, bin: bin}
	_, port, _ := net.SplitHostPort(addr)
	// As root, mosquitto would drop to the mosquitto user and could not
	// write dir: `user root` keeps it.
	text := "user root\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n" +
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
	return m, m.Start()
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

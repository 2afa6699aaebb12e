package gpio

import (
	"context"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"

	"pibridge/internal/testkit"
)

func simControlConfig() Config {
	return Config{
		Board: BoardSim,
		Inputs: []InputConfig{
			{Name: "button", Pin: "GPIO17", Pull: "down"},
			{Name: "door", Pin: "GPIO23", Pull: "up", Invert: true, Debounce: ms(5)},
		},
		Outputs: []OutputConfig{{Name: "led", Pin: "GPIO22"}},
	}
}

// serveSimControl opens the control socket of r's board in a fresh
// directory and serves it until the test ends.
func serveSimControl(t *testing.T, r *running, log *slog.Logger) (*SimControl, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sim.sock")
	sc, err := ListenSimControl(path, r.Board, log)
	if err != nil {
		t.Fatalf("ListenSimControl: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return sc, path
}

// sender is a client of the control socket, as a script would be.
func sender(t *testing.T, path string) func(string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return func(d string) {
		t.Helper()
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatalf("write %q: %v", d, err)
		}
	}
}

func TestSimControlDrivesInputs(t *testing.T) {
	r := start(t, simControlConfig(), Options{})
	sc, path := serveSimControl(t, r, nil)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %s, want a socket with 0600", fi.Mode())
	}
	send := sender(t, path)

	// 1 makes the input read true whatever its invert; door inverts and
	// debounces, and goes through the same path.
	steps := []struct {
		datagram, name string
		want           bool
	}{
		{"button 1", "button", true},
		{"button 0\n", "button", false}, // echo's newline is fine
		{"door 1", "door", true},
		{"door 0\r\n", "door", false},
		{"button 1", "button", true},
	}
	for i, s := range steps {
		before := len(r.rec.of(s.name))
		send(s.datagram)
		eventually(t, s.datagram, func() bool { return len(r.rec.of(s.name)) == before+1 })
		if v, _ := r.rec.last(s.name); v.Bool() != s.want {
			t.Errorf("step %d %q: reading %v, want %v", i, s.datagram, v, s.want)
		}
	}
	if got := simPinOf(t, r.Board, "door").Read(); got != pgpio.High {
		t.Errorf("door pin %s after door 0, want High (the input inverts)", got)
	}
	if a, rej := sc.Stats(); a != uint64(len(steps)) || rej != 0 {
		t.Errorf("stats accepted %d rejected %d, want %d and 0", a, rej, len(steps))
	}
}

// logRecords is a slog.Handler that keeps the records it gets.
type logRecords struct {
	mu  sync.Mutex
	all []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.all = append(h.all, r)
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

func (h *logRecords) warnings() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.all {
		if r.Level == slog.LevelWarn {
			out = append(out, r)
		}
	}
	return out
}

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// Bad datagrams are refused, counted and logged at most once per
// simWarnEvery; outputs never move; the socket keeps working.
func TestSimControlRefusesBadDatagrams(t *testing.T) {
	r := start(t, simControlConfig(), Options{})
	logs := &logRecords{}
	sc, path := serveSimControl(t, r, slog.New(logs))
	var mu sync.Mutex
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	sc.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	send := sender(t, path)

	bad := []string{
		"",
		"button",
		"button 2",
		"button on",
		"button  1",
		" 1",
		"button 1 extra",
		"nosuch 1",
		"led 1", // an output: DriveInput refuses it
		"led 0",
		strings.Repeat("x", 200) + " 1",
	}
	for _, d := range bad {
		send(d)
	}
	eventually(t, "every bad datagram refused", func() bool { _, rej := sc.Stats(); return rej == uint64(len(bad)) })
	if a, _ := sc.Stats(); a != 0 {
		t.Errorf("%d datagrams accepted, want 0", a)
	}
	if v, _ := r.Level("led"); v.Bool() {
		t.Error("the output led moved")
	}
	if got := len(r.rec.of("led")); got != 1 {
		t.Errorf("%d led readings, want only the initial one", got)
	}
	if got := len(r.rec.of("button")); got != 1 {
		t.Errorf("%d button readings, want only the initial one", got)
	}
	w := logs.warnings()
	if len(w) != 1 {
		t.Fatalf("%d warnings, want 1 (rate limited)", len(w))
	}
	if got := attr(w[0], "datagram"); got != `""` {
		t.Errorf("first warning names datagram %s, want the empty one", got)
	}

	// The socket still works after all that.
	send("button 1")
	eventually(t, "button 1 after bad datagrams", func() bool { return len(r.rec.of("button")) == 2 })

	// After the quiet period the next bad datagram is logged, with the
	// count of those suppressed meanwhile.
	mu.Lock()
	now = now.Add(simWarnEvery)
	mu.Unlock()
	send("led 1")
	eventually(t, "the next refusal", func() bool { _, rej := sc.Stats(); return rej == uint64(len(bad))+1 })
	w = logs.warnings()
	if len(w) != 2 {
		t.Fatalf("%d warnings, want 2", len(w))
	}
	if got, want := attr(w[1], "suppressed_since_last"), "10"; got != want {
		t.Errorf("suppressed_since_last %s, want %s", got, want)
	}
	if got := attr(w[1], "err"); !strings.Contains(got, "not an input") {
		t.Errorf("err %q, want DriveInput's refusal of an output", got)
	}
	if v, _ := r.Level("led"); v.Bool() {
		t.Error("the output led moved")
	}
}

func TestSimControlRefusesBoardPeriph(t *testing.T) {
	cfg := simControlConfig()
	cfg.Board = BoardPeriph
	b, err := Open(cfg, Options{OpenPin: func(n string) (pgpio.PinIO, error) { return newSimPin(n), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	path := filepath.Join(t.TempDir(), "sim.sock")
	_, err = ListenSimControl(path, b, nil)
	if err == nil || !strings.Contains(err.Error(), "board sim") {
		t.Fatalf("err %v, want a refusal naming board sim", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket created on board periph (%v)", err)
	}
}

func TestSimControlSocketPath(t *testing.T) {
	b, err := Open(simControlConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	dir := t.TempDir()

	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		old, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		old.Close() // Go leaves the file of a closed unixgram socket: as a crash would
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("no stale socket to test with: %v", err)
		}
		sc, err := ListenSimControl(path, b, nil)
		if err != nil {
			t.Fatalf("ListenSimControl over a stale socket: %v", err)
		}
		if err := sc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("socket left after Close (%v)", err)
		}
		if err := sc.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	t.Run("live socket refused", func(t *testing.T) {
		path := filepath.Join(dir, "live.sock")
		first, err := ListenSimControl(path, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		if _, err := ListenSimControl(path, b, nil); err == nil || !strings.Contains(err.Error(), "another process") {
			t.Errorf("second listener: err %v, want a refusal", err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("the first socket is gone: %v", err)
		}
	})
	t.Run("not a socket refused", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ListenSimControl(path, b, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("err %v, want a refusal", err)
		}
		if got, _ := os.ReadFile(path); string(got) != "precious" {
			t.Errorf("file now holds %q", got)
		}
	})
	t.Run("no temporary directory left", func(t *testing.T) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".pibridge-sim-") {
				t.Errorf("left behind: %s", e.Name())
			}
		}
	})
}

// Run ends with its context, closes the socket and removes its path.
func TestSimControlStopsWithContext(t *testing.T) {
	b, err := Open(simControlConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	path := filepath.Join(t.TempDir(), "sim.sock")
	sc, err := ListenSimControl(path, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := testkit.Start(t, 5*time.Second, sc.Run)
	send := sender(t, path)
	send("button 1") // works before the board runs: the pin moves, Run emits it later
	eventually(t, "the datagram applied", func() bool { a, _ := sc.Stats(); return a == 1 })
	if v, _ := b.Level("button"); !v.Bool() {
		t.Error("button pin did not move")
	}
	stop()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after Run (%v)", err)
	}
	if _, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"}); err == nil {
		t.Error("the socket still takes datagrams")
	}
}

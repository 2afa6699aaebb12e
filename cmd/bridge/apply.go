package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"pibridge/gpio"
	"pibridge/ws"
)

// applyHealthyWithin is how long a new configuration has to reach healthy
// (its pins open, MQTT connected if it was before) before the bridge rolls
// back to the previous one.
const applyHealthyWithin = 15 * time.Second

// applyRequest asks the running epoch to hand over to cfg.
type applyRequest struct {
	cfg      *Config
	who      string // "control token from 192.0.2.7:50212", "SIGHUP"
	changes  changes
	wrote    bool   // the file was written: a rollback restores it
	rollback string // set when this request is a rollback: why
	// wasConnected: MQTT was connected when the apply began, so the new
	// configuration must connect too.
	wasConnected bool
	sessions     ws.Sessions // the panel's logins, when the tokens stay
}

// applyStatus is GET /api/config/status: what became of the last apply.
type applyStatus struct {
	// State is idle, applying, applied, rolled_back or refused.
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Who     string    `json:"who,omitempty"`
	Changes changes   `json:"changes"`
	At      time.Time `json:"at"`
	ID      uint64    `json:"id"` // counts applies, so a poller tells its own from an earlier one
}

// reloader takes applies from the panel and SIGHUP to the serve loop, one
// at a time, and keeps the status the settings page polls.
type reloader struct {
	log    *slog.Logger
	getenv func(string) string
	req    chan *applyRequest

	mu     sync.Mutex
	cur    *Config // the configuration running now
	busy   bool
	status applyStatus
}

func newReloader(log *slog.Logger, getenv func(string) string) *reloader {
	return &reloader{log: log, getenv: getenv, req: make(chan *applyRequest, 1), status: applyStatus{State: "idle"}}
}

func (r *reloader) current() *Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *reloader) setCurrent(c *Config) {
	r.mu.Lock()
	r.cur = c
	r.mu.Unlock()
}

// Status is the last apply's outcome.
func (r *reloader) Status() applyStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// finish records the outcome of the apply in progress.
func (r *reloader) finish(state, reason string) {
	r.mu.Lock()
	r.busy = false
	r.status.State, r.status.Reason, r.status.At = state, reason, time.Now().UTC()
	r.mu.Unlock()
}

// prepare validates src exactly as -check does, against the running
// configuration; a refusal says why in the returned error.
func (r *reloader) prepare(src []byte) (*Config, error) {
	cur := r.current()
	if cur == nil {
		return nil, errors.New("the bridge is starting; try again")
	}
	cfg, err := loadSource(src, r.getenv)
	if err == nil && cfg.Gateway != nil {
		err = errors.New("a running bridge cannot become a gateway; restart it with the new file")
	}
	if err == nil {
		err = checkFiles(cfg)
	}
	if err != nil {
		return nil, err
	}
	cfg.path, cfg.source = cur.path, src
	return cfg, nil
}

// submit hands req to the serve loop, unless an apply is in progress.
func (r *reloader) submit(req *applyRequest) error {
	r.mu.Lock()
	if r.busy {
		r.mu.Unlock()
		return errors.New("another apply is in progress; wait for its result")
	}
	r.busy = true
	r.mu.Unlock()
	r.enqueue(req)
	return nil
}

// enqueue hands req to the serve loop; the caller has set busy.
func (r *reloader) enqueue(req *applyRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = applyStatus{State: "applying", Who: req.who, Changes: req.changes, At: time.Now().UTC(), ID: r.status.ID + 1}
	r.req <- req // never blocks: one request at a time, and the buffer holds one
}

// applyText is POST /api/config/apply: validate, write the file with the
// previous one kept beside it, and hand the new configuration over.
func (r *reloader) applyText(src []byte, who string) (applyStatus, error) {
	cur := r.current()
	if cur == nil || cur.path == "" {
		return applyStatus{}, errors.New("the bridge runs the built-in demo, which has no file to write: start it with -config")
	}
	cfg, err := r.prepare(src)
	if err != nil {
		return applyStatus{}, err
	}
	ch := diffConfigs(cur, cfg)
	if ch.none() {
		return applyStatus{}, errors.New("nothing changed: the text is the running configuration")
	}
	// Taken before the files are written, so two applies cannot both write.
	r.mu.Lock()
	if r.busy {
		r.mu.Unlock()
		return applyStatus{}, errors.New("another apply is in progress; wait for its result")
	}
	r.busy = true
	r.mu.Unlock()
	err = writeAtomic(cur.path+".prev", cur.source)
	if err == nil {
		err = writeAtomic(cur.path, src)
	}
	if err != nil {
		r.mu.Lock()
		r.busy = false
		r.mu.Unlock()
		return applyStatus{}, err
	}
	r.log.Info("applying a new configuration", "who", who, "file", cur.path, "previous", cur.path+".prev", ch.logArgs())
	r.enqueue(&applyRequest{cfg: cfg, who: who, changes: ch, wrote: true})
	return r.Status(), nil
}

// reloadFile is SIGHUP: apply the file on disk, write nothing; a file
// that does not load changes nothing and the log says why.
func (r *reloader) reloadFile() {
	cur := r.current()
	if cur == nil {
		r.log.Warn("SIGHUP ignored: the bridge is still starting")
		return
	}
	if cur.path == "" {
		r.log.Warn("SIGHUP ignored: the built-in demo has no file to reload")
		return
	}
	src, err := readConfigFile(cur.path)
	var cfg *Config
	if err == nil {
		cfg, err = r.prepare(src)
	}
	if err != nil {
		r.log.Error("SIGHUP: the configuration file was not applied; nothing changed", "file", cur.path,
			"err", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	ch := diffConfigs(cur, cfg)
	if ch.none() {
		r.log.Info("SIGHUP: the file is the running configuration; nothing to do", "file", cur.path)
		return
	}
	r.log.Info("SIGHUP: applying the configuration file", "who", "SIGHUP", "file", cur.path, ch.logArgs())
	if err := r.submit(&applyRequest{cfg: cfg, who: "SIGHUP", changes: ch}); err != nil {
		r.log.Warn("SIGHUP ignored", "err", err)
	}
}

// watchHUP applies the file on every SIGHUP until stop is called, which
// returns once the watcher has ended (reloading never blocks: a request
// waits in the reloader's one-slot queue).
func (r *reloader) watchHUP(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				r.reloadFile()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// writeAtomic replaces path with data: a temporary file in the same
// directory, synced, renamed over it, and the directory synced, so a
// power cut leaves the old file or the new one, never half of one. The
// file keeps the mode of the one it replaces (0640 when there is none).
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	mode := os.FileMode(0o640)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		if errors.Is(err, syscall.EROFS) || errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("cannot write %s (%w): applying from the panel needs the directory writable by the bridge (the systemd unit's ReadWritePaths=%s)", path, err, dir)
		}
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// changes is what an apply changes, for the log and the panel.
type changes struct {
	Added    []string `json:"added"`
	Removed  []string `json:"removed"`
	Changed  []string `json:"changed"`
	Sections []string `json:"sections"`
}

func (c changes) none() bool {
	return len(c.Added)+len(c.Removed)+len(c.Changed)+len(c.Sections) == 0
}

func (c changes) logArgs() slog.Attr {
	return slog.Group("changes", "added", c.Added, "removed", c.Removed, "changed", c.Changed, "sections", c.Sections)
}

// diffConfigs names the signals added, removed and changed (by their
// entry in inputs, outputs, pwm or sensors) and the other sections that
// differ.
func diffConfigs(a, b *Config) changes {
	ch := changes{Added: []string{}, Removed: []string{}, Changed: []string{}, Sections: []string{}}
	entries := func(c *Config) map[string]any {
		m := map[string]any{}
		for _, x := range c.GPIO.Inputs {
			m[x.Name] = x
		}
		for _, x := range c.GPIO.Outputs {
			m[x.Name] = x
		}
		for _, x := range c.GPIO.PWM {
			m[x.Name] = x
		}
		for _, x := range c.GPIO.Sensors {
			m[x.Name] = x
		}
		return m
	}
	ea, eb := entries(a), entries(b)
	names := func(c *Config) []string {
		var n []string
		for _, s := range c.GPIO.Inputs {
			n = append(n, s.Name)
		}
		for _, s := range c.GPIO.Outputs {
			n = append(n, s.Name)
		}
		for _, s := range c.GPIO.PWM {
			n = append(n, s.Name)
		}
		for _, s := range c.GPIO.Sensors {
			n = append(n, s.Name)
		}
		return n
	}
	for _, n := range names(a) {
		if y, ok := eb[n]; !ok {
			ch.Removed = append(ch.Removed, n)
		} else if !reflect.DeepEqual(ea[n], y) {
			ch.Changed = append(ch.Changed, n)
		}
	}
	for _, n := range names(b) {
		if _, ok := ea[n]; !ok {
			ch.Added = append(ch.Added, n)
		}
	}
	for _, s := range []struct {
		name string
		x, y any
	}{
		{"device", a.Device, b.Device}, {"state_dir", a.StateDir, b.StateDir}, {"http", a.HTTP, b.HTTP},
		{"mqtt", a.MQTT, b.MQTT}, {"board", a.GPIO.Board, b.GPIO.Board},
	} {
		if !reflect.DeepEqual(s.x, s.y) {
			ch.Sections = append(ch.Sections, s.name)
		}
	}
	if len(ch.Sections) == 0 && ch.none() && !bytes.Equal(a.source, b.source) {
		ch.Sections = append(ch.Sections, "text") // comments or layout only
	}
	return ch
}

// openBoard opens cfg's board, taking over keep's handed pins.
func openBoard(cfg *Config, keep *gpio.Board, log *slog.Logger, getenv func(string) string) (*gpio.Board, error) {
	var busy []string
	if s := getenv("PIBRIDGE_SIM_BUSY"); s != "" && cfg.GPIO.Board == gpio.BoardSim {
		busy = strings.Split(s, ",")
	}
	return gpio.Open(cfg.GPIO, gpio.Options{Logger: log.With("part", "gpio"), Keep: keep, SimBusy: busy})
}

// healthGate waits for the new configuration to be healthy (bad says what
// is wrong, "" when nothing is) and records it applied; after
// applyHealthyWithin it asks for the rollback instead.
func healthGate(ctx context.Context, g *gate, rl *reloader, log *slog.Logger, bad func() string) error {
	deadline := time.NewTimer(applyHealthyWithin)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		why := bad()
		if why == "" {
			log.Info("configuration applied", "who", g.req.who, g.req.changes.logArgs())
			rl.finish("applied", "")
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-deadline.C:
			rl.req <- rollbackTo(epoch{cfg: g.req.cfg, gate: g}, fmt.Sprintf("%s within %s", why, applyHealthyWithin), log)
			return nil
		case <-tick.C:
		}
	}
}

// sameLogins reports whether a and b accept the same tokens, so that the
// panel's sessions may outlive the change.
func sameLogins(a, b *Config) bool {
	return a.HTTP.Token == b.HTTP.Token && a.HTTP.TokenFile == b.HTTP.TokenFile &&
		a.HTTP.ReadToken == b.HTTP.ReadToken && a.StateDir == b.StateDir
}

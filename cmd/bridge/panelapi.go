package main

import (
	"cmp"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"pibridge"
	"pibridge/gpio"
	"pibridge/internal/logring"
	"pibridge/internal/strictyaml"
	pmetrics "pibridge/metrics"
	"pibridge/mqtt"
	"pibridge/ws"
)

// panelParts are the running parts the panel's logs, device and settings
// pages read from.
type panelParts struct {
	cfg    *Config
	getenv func(string) string
	log    *slog.Logger
	board  *gpio.Board
	core   *pibridge.Core
	client *mqtt.Client
	live   *ws.Server
	met    *pmetrics.Metrics
	opts   pmetrics.Options // the getters /metrics reads
	start  time.Time
	rl     *reloader
}

// panelAPI wires those pages into the HTTP server; it also tells the log
// ring which secrets to keep out of the records.
func panelAPI(p panelParts) ws.PanelAPI {
	ring := logring.Of(p.log.Handler())
	if ring != nil {
		ring.Redact(secrets(p.cfg)...)
	}
	return ws.PanelAPI{
		Logs:   ring,
		Device: func() any { return deviceReport(p) },
		Config: func() ws.ConfigText {
			return ws.ConfigText{Path: p.cfg.path, Text: string(p.cfg.source)}
		},
		Validate: func(src []byte) ws.ConfigReport { return validateSource(src, p.getenv) },
		Apply: func(src []byte, who string) (int, any) {
			type refusal struct {
				Error  string           `json:"error"`
				Report *ws.ConfigReport `json:"report,omitempty"`
			}
			if rep := validateSource(src, p.getenv); !rep.Valid {
				p.log.Warn("apply refused: the configuration is not valid; nothing written", "who", who, "problems", len(rep.Problems))
				return http.StatusUnprocessableEntity, refusal{Error: "the configuration is not valid; nothing was written", Report: &rep}
			}
			st, err := p.rl.applyText(src, who)
			if err != nil {
				p.log.Warn("apply refused", "who", who, "err", err)
				return http.StatusConflict, refusal{Error: err.Error()}
			}
			return http.StatusAccepted, st
		},
		ApplyStatus: func() any { return p.rl.Status() },
	}
}

// secrets are the values no log record may show: tokens and passwords
// from the configuration and the files it names or the bridge generated.
func secrets(cfg *Config) []string {
	out := []string{cfg.HTTP.Token, cfg.HTTP.ReadToken}
	files := []string{cfg.HTTP.TokenFile, cfg.MQTT.PasswordFile,
		filepath.Join(cfg.StateDir, "token"), filepath.Join(cfg.StateDir, mqtt.EmbeddedPasswordFile)}
	for _, f := range files {
		if f == "" {
			continue
		}
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	if f := cfg.MQTT.EmbeddedUsersFile; f != "" {
		if users, err := mqtt.LoadEmbeddedUsers(f); err == nil {
			for _, pw := range users {
				out = append(out, pw)
			}
		}
	}
	// "none" turns auth off; it is no secret, and redacting the word
	// would blank it in every record.
	kept := out[:0]
	for _, s := range out {
		if s != "" && s != ws.TokenNone {
			kept = append(kept, s)
		}
	}
	return kept
}

// deviceReport is GET /api/device: what /metrics says, and more, for people.
type deviceJSON struct {
	Device   pibridge.Device  `json:"device"`
	Go       string           `json:"go"`
	Platform string           `json:"platform"`
	Started  time.Time        `json:"started"`
	Uptime   float64          `json:"uptime_s"`
	Board    boardJSON        `json:"board"`
	Signals  []signalJSON     `json:"signals"`
	MQTT     mqttJSON         `json:"mqtt"`
	WS       pmetrics.WS      `json:"ws"`
	Sensors  []sensorJSON     `json:"sensors"`
	Clock    clockJSON        `json:"clock"`
	Run      pibridge.RunInfo `json:"run"`
	Core     coreJSON         `json:"core"`
	Counts   pmetrics.Counts  `json:"counts"`
	Memory   memoryJSON       `json:"memory"`
}

type boardJSON struct {
	Kind  string `json:"kind"`
	Model string `json:"model"`
}

type signalJSON struct {
	Name     string          `json:"name"`
	Kind     string          `json:"kind"`
	Pin      string          `json:"pin,omitempty"`
	Source   string          `json:"source,omitempty"`
	Unit     string          `json:"unit,omitempty"`
	Writable bool            `json:"writable"`
	Value    *pibridge.Value `json:"value,omitempty"`
	TS       *time.Time      `json:"ts,omitempty"`
	Seq      uint64          `json:"seq,omitempty"`
	Stale    bool            `json:"stale,omitempty"`
}

type mqttJSON struct {
	Broker          string `json:"broker"`
	Connected       bool   `json:"connected"`
	Queued          int    `json:"outbox"`
	Dropped         uint64 `json:"outbox_dropped"`
	Published       uint64 `json:"published"`
	Connects        uint64 `json:"connects"`
	Commands        uint64 `json:"commands"`
	CommandsDropped uint64 `json:"commands_dropped"`
	AcksDropped     uint64 `json:"acks_dropped"`
	OutboxFailing   bool   `json:"outbox_failing"`
	LogFailures     uint64 `json:"outbox_log_failures"`
	Replayed        uint64 `json:"outbox_replayed"`
	TopicPrefix     string `json:"topic_prefix"`
}

type sensorJSON struct {
	Name       string  `json:"name"`
	Type       string  `json:"type"`
	Reads      uint64  `json:"reads"`
	Errors     uint64  `json:"errors"`
	Up         bool    `json:"up"`
	Stale      bool    `json:"stale"`
	LastReadMS float64 `json:"last_read_ms"`
}

type clockJSON struct {
	State      string  `json:"state"` // synced, unsynced or unknown
	MaxErrorMS float64 `json:"max_error_ms,omitempty"`
	Steps      uint64  `json:"steps"`
	LastStepMS float64 `json:"last_step_ms,omitempty"`
}

type coreJSON struct {
	Alive       bool       `json:"alive"`
	Emitted     uint64     `json:"readings_emitted"`
	LastReading *time.Time `json:"last_reading,omitempty"`
}

type memoryJSON struct {
	Heap       uint64 `json:"heap_bytes"`
	Total      uint64 `json:"go_total_bytes"`
	Goroutines uint64 `json:"goroutines"`
	GCs        uint64 `json:"gc_cycles"`
	LogRecords int    `json:"log_records"`
	LogBytes   int    `json:"log_bytes"`
}

func deviceReport(p panelParts) deviceJSON {
	now := time.Now()
	d := deviceJSON{
		Device:   p.core.Device(),
		Go:       runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Started:  p.start.UTC(),
		Uptime:   now.Sub(p.start).Seconds(),
		Board:    boardJSON{Kind: p.cfg.GPIO.Board, Model: boardModel(p.cfg.GPIO.Board)},
		Run:      p.core.RunInfo(),
		Counts:   p.met.Counts(),
	}
	state := map[string]pibridge.Reading{}
	for _, r := range p.core.State() {
		state[r.Name] = r
	}
	for _, s := range p.board.Signals() {
		row := signalJSON{Name: s.Name, Kind: s.Kind.String(), Pin: s.Pin, Source: s.Source, Unit: s.Unit, Writable: s.Kind.Writable(), Stale: p.board.Stale(s.Name)}
		if r, ok := state[s.Name]; ok {
			v, ts := r.Value, r.TS.UTC()
			row.Value, row.TS, row.Seq = &v, &ts, r.Seq
		}
		d.Signals = append(d.Signals, row)
	}
	if p.opts.MQTT != nil {
		s := p.opts.MQTT()
		d.MQTT = mqttJSON{Broker: p.cfg.MQTT.BrokerSummary(), Connected: s.Connected, Queued: s.Queued, Dropped: s.Dropped,
			Published: s.Published, Connects: s.Connects, Commands: s.Commands, CommandsDropped: s.CommandsDropped,
			AcksDropped: s.AcksDropped, OutboxFailing: s.OutboxFailing, LogFailures: s.OutboxLogFailures, Replayed: s.OutboxReplayed,
			TopicPrefix: p.cfg.MQTT.TopicPrefix + "/" + p.cfg.Device.ID}
	}
	if p.opts.WS != nil {
		d.WS = p.opts.WS()
	}
	if p.opts.Sensors != nil {
		for _, s := range p.opts.Sensors() {
			d.Sensors = append(d.Sensors, sensorJSON{Name: s.Name, Type: s.Type, Reads: s.Reads, Errors: s.Errors,
				Up: s.Reads > 0 && !s.Failing, Stale: s.Stale, LastReadMS: float64(s.LastDuration) / 1e6})
		}
	}
	cs := p.core.ClockState()
	d.Clock = clockJSON{State: cs.String(), MaxErrorMS: float64(cs.MaxError) / 1e6, Steps: cs.Steps, LastStepMS: float64(cs.LastStep) / 1e6}
	d.Core = coreJSON{Alive: p.opts.Alive == nil || p.opts.Alive(), Emitted: p.core.Emitted()}
	if t := p.core.LastEmit(); t.UnixNano() > 0 {
		t = t.UTC()
		d.Core.LastReading = &t
	}
	d.Memory = readMemory()
	if ring := logring.Of(p.log.Handler()); ring != nil {
		d.Memory.LogRecords, d.Memory.LogBytes = ring.Len()
	}
	return d
}

var memorySamples = []string{"/memory/classes/heap/objects:bytes", "/memory/classes/total:bytes", "/sched/goroutines:goroutines", "/gc/cycles/total:gc-cycles"}

// readMemory reads the Go runtime's numbers without stopping the world
// (runtime.ReadMemStats would).
func readMemory() memoryJSON {
	s := make([]metrics.Sample, len(memorySamples))
	for i, name := range memorySamples {
		s[i].Name = name
	}
	metrics.Read(s)
	u := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return memoryJSON{Heap: u(0), Total: u(1), Goroutines: u(2), GCs: u(3)}
}

// boardModel is the Raspberry Pi's model from the device tree, or what
// the board is when there is none.
func boardModel(kind string) string {
	if kind == "sim" {
		return "simulated board"
	}
	for _, f := range []string{"/proc/device-tree/model", "/sys/firmware/devicetree/base/model"} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimRight(string(b), "\x00\n")
		}
	}
	return "unknown (no device tree model)"
}

// validateSource runs the loader of `bridge -check` on a text from the
// panel and says where each problem is.
func validateSource(src []byte, getenv func(string) string) ws.ConfigReport {
	rep := ws.ConfigReport{}
	var err error
	if len(src) > maxConfigSize {
		err = &pibridge.FieldError{Msg: "the text is larger than 1 MiB"}
	} else {
		var cfg *Config
		cfg, err = loadSource(src, getenv)
		if err == nil && cfg.Gateway == nil {
			err = checkFiles(cfg)
		}
		if cfg != nil && cfg.Gateway == nil && cfg.GPIO.Validate() == nil {
			for _, s := range cfg.GPIO.Signals() {
				where := s.Pin
				if where == "" {
					where = s.Source
				}
				rep.Signals = append(rep.Signals, ws.ConfigSignal{Name: s.Name, Kind: s.Kind.String(), Writable: s.Kind.Writable(), Unit: s.Unit, Pin: where})
			}
			rep.Warnings = cfg.GPIO.ReleaseWarnings()
		}
	}
	rep.Valid = err == nil
	if err == nil {
		return rep
	}
	var root yaml.Node
	var lines map[string]int
	if yaml.Unmarshal(src, &root) == nil {
		lines = strictyaml.Lines(&root)
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		rep.Problems = append(rep.Problems, locate(e, lines))
	}
	// In the order of the text; problems without a line last.
	slices.SortStableFunc(rep.Problems, func(a, b ws.ConfigProblem) int {
		if (a.Line == 0) != (b.Line == 0) {
			return cmp.Compare(b.Line, a.Line)
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return rep
}

var reLineIn = regexp.MustCompile(`\bline (\d+)\b`)

// locate finds a problem's line: the one decoding found, else the one its
// message names, else the line of its field path (or of the nearest
// enclosing field that is in the text).
func locate(err error, lines map[string]int) ws.ConfigProblem {
	p := ws.ConfigProblem{Msg: err.Error()}
	var fe *pibridge.FieldError
	if errors.As(err, &fe) {
		p.Path, p.Line = fe.Path, fe.Line
	}
	if p.Line != 0 {
		return p
	}
	if m := reLineIn.FindStringSubmatch(p.Msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		return p
	}
	for path := p.Path; path != "" && p.Line == 0; path = parentPath(path) {
		p.Line = lines[path]
	}
	return p
}

// parentPath drops the last element of a field path: outputs[1].pin →
// outputs[1] → outputs.
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i <= 0 {
		return ""
	}
	return path[:i]
}

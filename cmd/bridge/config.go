package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"pibridge"
	"pibridge/gateway"
	"pibridge/gpio"
	"pibridge/internal/strictyaml"
	"pibridge/mqtt"
	"pibridge/ws"
)

//go:embed demo.yaml
var demoYAML []byte

// Config is the whole configuration file. Each section belongs to the
// package that uses it; this file only composes and checks them.
type Config struct {
	Device   DeviceConfig `yaml:"device"`
	StateDir string       `yaml:"state_dir"`
	HTTP     ws.Config    `yaml:"http"`
	MQTT     mqtt.Config  `yaml:"mqtt"`
	GPIO     gpio.Config  `yaml:",inline"`
	// Gateway, when present, makes this process a gateway (gateway.go).
	Gateway *gateway.Config `yaml:"gateway"`

	// path and source are the file the configuration came from ("" for
	// the demo) and its text, for the panel's settings page.
	path   string
	source []byte
}

type DeviceConfig struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
}

const (
	// maxConfigSize bounds the file read: a real config is a few KiB, and
	// decoding costs far more memory than the bytes themselves.
	maxConfigSize = 1 << 20
	// maxProblems bounds the problems listed; the rest are counted.
	maxProblems = 50
)

// loadConfigCtx is loadConfig that gives up when ctx ends (SIGINT,
// SIGTERM), even while a hostile file is being decoded: the decoder takes
// no context, so it is left to finish on its own as the process exits.
func loadConfigCtx(ctx context.Context, path string, getenv func(string) string) (*Config, error) {
	type result struct {
		cfg *Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := loadConfig(path, getenv)
		done <- result{cfg, err}
	}()
	select {
	case r := <-done:
		return r.cfg, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("loading the configuration: %w", context.Cause(ctx))
	}
}

// readConfigFile reads at most maxConfigSize bytes of path.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxConfigSize {
		size := "more than 1 MiB"
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fmt.Sprintf("%d bytes", fi.Size())
		}
		return nil, &pibridge.FieldError{Msg: fmt.Sprintf("%s: the file is %s; a config file may be at most %d bytes (1 MiB)", path, size, maxConfigSize)}
	}
	return b, nil
}

// loadConfig reads the file at path, or the built-in demo when path is "".
// Every problem is reported at once, each naming its field, up to
// maxProblems of them.
func loadConfig(path string, getenv func(string) string) (*Config, error) {
	src := demoYAML
	if path != "" {
		b, err := readConfigFile(path)
		if err != nil {
			return nil, err
		}
		src = b
	}
	cfg, err := loadSource(src, getenv)
	if err != nil {
		return nil, err
	}
	cfg.path, cfg.source = path, src
	return cfg, nil
}

// loadSource is loadConfig for a text already read. On problems it
// returns them with the config as far as it was decoded (nil when the
// text is not YAML at all), so that the panel's settings page can show
// what did resolve.
func loadSource(src []byte, getenv func(string) string) (*Config, error) {
	cfg, decodeErrs, err := parseConfig(src)
	if err != nil {
		return nil, err
	}
	cfg.applyEnv(getenv)
	cfg.derive(getenv)
	var p pibridge.Problems
	for _, e := range decodeErrs.errs {
		p.Add("", e)
	}
	// A field that failed to decode is already reported; what validation
	// says of its zero value would only repeat it.
	var semantic pibridge.Problems
	cfg.validate(&semantic)
	if err := semantic.Err(); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			if fe, ok := e.(*pibridge.FieldError); !ok || !decodeErrs.covers(fe.Path) {
				p.Add("", e)
			}
		}
	}
	return cfg, capProblems(p.Err(), decodeErrs.more)
}

// capProblems keeps the first maxProblems of err's problems and says how
// many more there were; more were left out before err was built.
func capProblems(err error, more int) error {
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	if len(errs) > maxProblems {
		more += len(errs) - maxProblems
		errs = errs[:maxProblems]
	}
	if more > 0 {
		errs = append(errs[:len(errs):len(errs)], &pibridge.FieldError{Msg: fmt.Sprintf("… and %d more", more)})
	}
	return errors.Join(errs...)
}

// fieldErrors are the decoding problems, by path, and how many more were
// not described (beyond maxProblems).
type fieldErrors struct {
	errs  []*pibridge.FieldError
	more  int
	paths map[string]bool
}

func (f *fieldErrors) add(e *pibridge.FieldError) {
	if len(f.errs) >= maxProblems {
		f.more++
		return
	}
	if f.paths == nil {
		f.paths = map[string]bool{}
	}
	f.errs = append(f.errs, e)
	f.paths[e.Path] = true
}

func (f *fieldErrors) covers(path string) bool { return f.paths[path] }

// maxMappingKeys bounds the keys of one mapping that are decoded: no
// section of a config has more than a few dozen, and every key read may
// be a problem to describe.
const maxMappingKeys = 256

// parseConfig decodes strictly, each section over its defaults. Problems
// of decoding do not stop it: they come back as fieldErrors beside the
// partly filled config, so that validation can still report everything
// else in the same run.
func parseConfig(src []byte) (*Config, *fieldErrors, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return nil, nil, &pibridge.FieldError{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(root.Content) == 0 {
		return nil, nil, &pibridge.FieldError{Msg: "the file is empty"}
	}
	errs := &fieldErrors{}
	// Every section is decoded over its defaults; gateway: too, and is
	// dropped again when the text has no such key.
	gw := gateway.Defaults()
	cfg := &Config{Device: DeviceConfig{ID: defaultDeviceID}, HTTP: ws.Defaults(), MQTT: mqtt.Defaults(), Gateway: &gw}
	dec := strictyaml.Decoder{MaxKeys: maxMappingKeys, MaxErrors: maxProblems}
	var de *strictyaml.Error
	if err := dec.Decode(&root, cfg); errors.As(err, &de) {
		for _, e := range de.Problems {
			errs.add(e)
		}
		errs.more += de.More
	} else if err != nil {
		return nil, nil, err
	}
	if !hasTopKey(&root, "gateway") {
		cfg.Gateway = nil
	}
	return cfg, errs, nil
}

// hasTopKey reports whether the document's top mapping has key.
func hasTopKey(doc *yaml.Node, key string) bool {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false
	}
	top := doc.Content[0].Content
	for i := 0; i+1 < len(top); i += 2 {
		if top[i].Value == key {
			return true
		}
	}
	return false
}

// applyEnv lets a test or a container move the listeners and the state
// without editing the file (PIBRIDGE_HTTP_LISTEN and friends).
func (c *Config) applyEnv(getenv func(string) string) {
	if v := getenv("PIBRIDGE_HTTP_LISTEN"); v != "" {
		c.HTTP.Listen = v
	}
	if v := getenv("PIBRIDGE_MQTT_EMBEDDED_LISTEN"); v != "" {
		c.MQTT.EmbeddedListen = v
	}
	if v := getenv("PIBRIDGE_STATE_DIR"); v != "" {
		c.StateDir = v
	}
}

// defaultDeviceID is device.id when the file has none.
const defaultDeviceID = "pibridge"

// derive fills in the defaults that depend on another section or on the
// machine, once, after decoding and before validation: device.name is
// device.id, state_dir the first writable of the usual places, and each
// part's own derived defaults (mqtt's client_id, the board's per-item
// defaults, the gateway's topic_prefix).
func (c *Config) derive(getenv func(string) string) {
	if c.Gateway != nil {
		c.gatewayDerive(getenv)
		return
	}
	if c.Device.Name == "" {
		c.Device.Name = c.Device.ID
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir(getenv)
	}
	c.GPIO.Derive()
	c.MQTT.Derive(c.Device.ID)
}

func (c *Config) validate(p *pibridge.Problems) {
	if c.Gateway != nil {
		c.validateGateway(p)
		return
	}
	p.Add("device.id", pibridge.ValidName(c.Device.ID, 64))
	p.Add("http", c.HTTP.Validate())
	p.Add("mqtt", c.MQTT.Validate())
	gpioErr := c.GPIO.Validate()
	p.Add("", gpioErr)
	if gpioErr == nil {
		p.Add("mqtt", c.MQTT.ValidateSignals(c.Device.ID, c.GPIO.Signals()))
	}
}

// checkFiles reads the files the configuration names, as -check and the
// start both do before anything listens (Validate does no I/O).
func checkFiles(c *Config) error {
	var p pibridge.Problems
	p.Add("", c.HTTP.CheckFiles())
	p.Add("mqtt", c.MQTT.CheckFiles())
	return capProblems(p.Err(), 0)
}

// defaultStateDir: /var/lib/pibridge where writable, else
// the XDG state directory.
func defaultStateDir(getenv func(string) string) string {
	const system = "/var/lib/pibridge"
	if dirWritable(system) {
		return system
	}
	if x := getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "pibridge")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "pibridge")
	}
	return filepath.Join(os.TempDir(), "pibridge")
}

func dirWritable(dir string) bool {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// printTable writes the resolved signal/pin table that -check shows.
func printTable(w io.Writer, c *Config, signals []pibridge.Signal) {
	fmt.Fprintf(w, "device   %s (%q)\nboard    %s\nstate    %s\nhttp     %s\nmqtt     %s  prefix %s/%s\n\n",
		c.Device.ID, c.Device.Name, c.GPIO.Board, c.StateDir, c.HTTP.Listen, c.MQTT.BrokerSummary(), c.MQTT.TopicPrefix, c.Device.ID)
	const row = "%-22s %-7s %-8s %-6s %s\n"
	fmt.Fprintf(w, row, "SIGNAL", "KIND", "WRITABLE", "UNIT", "PIN / SOURCE")
	for _, s := range signals {
		where := s.Pin
		if where == "" {
			where = s.Source
		}
		writable := "no"
		if s.Kind.Writable() {
			writable = "yes"
		}
		fmt.Fprintf(w, row, s.Name, s.Kind, writable, s.Unit, where)
	}
}

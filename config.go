package pibridge

import (
	"errors"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Problems collects every configuration problem with its field path, so a
// user fixes the whole file in one go instead of one error per run.
type Problems struct{ errs []error }

// Addf records a problem at path, such as "outputs[1].pin".
func (p *Problems) Addf(path, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Add records err, which may already be a join of FieldErrors, under prefix.
func (p *Problems) Add(prefix string, err error) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			p.Add(prefix, e)
		}
		return
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		path := fe.Path
		if prefix != "" {
			path = joinPath(prefix, path)
		}
		p.errs = append(p.errs, &FieldError{Path: path, Line: fe.Line, Msg: fe.Msg})
		return
	}
	p.errs = append(p.errs, &FieldError{Path: prefix, Msg: err.Error()})
}

// Err returns the problems joined, or nil.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

func joinPath(prefix, path string) string {
	switch {
	case path == "":
		return prefix
	case path[0] == '[':
		return prefix + path
	}
	return prefix + "." + path
}

// FieldError is one configuration problem: `outputs[1].pin: "GPIO99": no such pin`.
type FieldError struct {
	Path string
	// Line is the line of the text the problem is on, when decoding
	// found it (0 for problems of validation, which sees no text).
	Line int
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Duration is a time.Duration written as "20ms", "5s", "10m" in YAML.
type Duration time.Duration

func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads "500ms", "10s", "5m". Its errors say what is wrong
// with the value; the decoder adds where.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New(`want a duration such as "500ms" or "10s"`)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q: not a duration (want e.g. \"500ms\", \"10s\", \"5m\")", Clip(n.Value))
	}
	if v < 0 {
		return fmt.Errorf("%q: a duration cannot be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

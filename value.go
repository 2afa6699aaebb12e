package pibridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Value is a bool or a number; a command may also say "toggle".
// It is a small value type so readings cost no allocation.
type Value struct {
	form valueForm
	num  float64
}

type valueForm uint8

const (
	formNone valueForm = iota
	formBool
	formNumber
	formToggle
)

// Bool returns a boolean value.
func Bool(b bool) Value {
	if b {
		return Value{form: formBool, num: 1}
	}
	return Value{form: formBool}
}

// Number returns a numeric value.
func Number(f float64) Value { return Value{form: formNumber, num: f} }

// Toggle is the command value that inverts an output.
func Toggle() Value { return Value{form: formToggle} }

func (v Value) IsBool() bool   { return v.form == formBool }
func (v Value) IsNumber() bool { return v.form == formNumber }
func (v Value) IsToggle() bool { return v.form == formToggle }
func (v Value) IsZero() bool   { return v.form == formNone }

// Bool reports the value as a bool: a number is true when it is not zero.
func (v Value) Bool() bool { return v.num != 0 }

// Float reports the value as a number: true is 1, false is 0.
func (v Value) Float() float64 { return v.num }

// AppendJSON appends the value as JSON (true, false, a number or "toggle").
func (v Value) AppendJSON(b []byte) []byte {
	switch v.form {
	case formBool:
		return strconv.AppendBool(b, v.num != 0)
	case formNumber:
		return appendFloat(b, v.num)
	case formToggle:
		return append(b, `"toggle"`...)
	}
	return append(b, "null"...)
}

func (v Value) String() string { return string(v.AppendJSON(nil)) }

// MarshalJSON lets Value sit in structs encoded with encoding/json.
func (v Value) MarshalJSON() ([]byte, error) { return v.AppendJSON(nil), nil }

// appendFloat writes the shortest form that round-trips, and never NaN or
// Inf, which JSON cannot carry.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// ErrBadValue marks a value that none of the accepted forms matches.
var ErrBadValue = errors.New("bad value")

// ParseValue reads the plain-text value forms that MQTT /set, the REST API
// and the JSON "value" string share: on off true false toggle (any case) and
// numbers. "1" and "0" are numbers here; an output takes them as on and off.
func ParseValue(s string) (Value, error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "on", "true":
		return Bool(true), nil
	case "off", "false":
		return Bool(false), nil
	case "toggle":
		return Toggle(), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return Value{}, fmt.Errorf("%w %q: want on, off, true, false, toggle or a number", ErrBadValue, Clip(s))
	}
	return Number(f), nil
}

// UnmarshalJSON accepts a JSON bool, number, or a string in ParseValue's forms.
func (v *Value) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		return fmt.Errorf("%w: value is missing", ErrBadValue)
	case string(b) == "true":
		*v = Bool(true)
	case string(b) == "false":
		*v = Bool(false)
	case b[0] == '"':
		s, ok := UnquotePlain(b)
		if !ok {
			if err := json.Unmarshal(b, &s); err != nil {
				return fmt.Errorf("%w: %v", ErrBadValue, err)
			}
		}
		p, err := ParseValue(s)
		if err != nil {
			return err
		}
		*v = p
	default:
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return fmt.Errorf("%w %s: want a bool, a number or a string", ErrBadValue, Clip(string(b)))
		}
		*v = Number(f)
	}
	return nil
}

// setPayload is the JSON form of an MQTT /set or REST body.
type setPayload struct {
	Value *Value `json:"value"`
	ID    string `json:"id"`
}

// ParseSetPayload reads the body of an MQTT /set message or a REST POST:
// a plain value (ParseValue) or JSON {"value":…, "id":"…"}.
func ParseSetPayload(b []byte) (v Value, id string, err error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		v, err = ParseValue(string(t))
		return v, "", err
	}
	var p setPayload
	if err := decodeStrict(t, &p); err != nil {
		return Value{}, salvageID(t), err
	}
	if p.Value == nil {
		return Value{}, p.ID, fmt.Errorf("%w: \"value\" is missing", ErrBadValue)
	}
	return *p.Value, p.ID, nil
}

// MaxPulse bounds a pulse so a typo ("500m" for "500ms") cannot hold a
// relay on for hours.
const MaxPulse = time.Hour

type pulsePayload struct {
	For string `json:"for"`
	ID  string `json:"id"`
}

// ParsePulsePayload reads the body of an MQTT /pulse message: a duration
// ("500ms") or JSON {"for":"500ms","id":"…"}, where no "for" means the
// output's own length (0).
func ParsePulsePayload(b []byte) (d time.Duration, id string, err error) {
	t := bytes.TrimSpace(b)
	if len(t) > 0 && t[0] == '{' {
		var p pulsePayload
		if err := decodeStrict(t, &p); err != nil {
			return 0, salvageID(t), err
		}
		d, err = ParsePulse(p.For)
		return d, p.ID, err
	}
	// An empty payload is also what clears a retained message: it must not
	// move a relay, so the output's own length takes JSON without "for".
	if len(t) == 0 {
		return 0, "", fmt.Errorf("%w: pulse length is missing (want e.g. \"500ms\", or {} for the output's own)", ErrBadValue)
	}
	d, err = ParsePulse(string(t))
	return d, "", err
}

// ParsePulse parses and bounds a pulse length. An empty length is 0: the
// output's own default (outputs[].pulse), which the core fills in, so
// that every door offers it without knowing the configuration.
func ParsePulse(s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%w: pulse length %q: want a duration like \"500ms\"", ErrBadValue, Clip(s))
	}
	if d <= 0 || d > MaxPulse {
		return 0, fmt.Errorf("%w: pulse length %s: must be above 0 and at most %s", ErrBadValue, d, MaxPulse)
	}
	return d, nil
}

func decodeStrict(b []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		if errors.Is(err, ErrBadValue) {
			return err
		}
		return fmt.Errorf("%w: malformed JSON: %v", ErrBadValue, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadValue)
	}
	return nil
}

// salvageID finds the id of a command refused for its other fields (a bad
// value, an unknown field), so the refusal's ack still reaches the client
// waiting for that id. Malformed JSON has no id to find.
func salvageID(b []byte) string {
	var probe struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return ""
	}
	return probe.ID
}

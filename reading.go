package pibridge

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Reading is one value of one signal at one time. Seq grows by one with
// every reading the device emits and never repeats, even across restarts.
type Reading struct {
	Name  string
	Value Value
	Unit  string
	TS    time.Time
	Seq   uint64
}

// TimeFormat is RFC 3339 with milliseconds; readings are always UTC.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// AppendJSON appends {"value":…,"unit":…,"ts":…,"seq":…}, the reading as
// MQTT state topics carry it. It does not allocate when b has room.
func (r Reading) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	b = r.appendFields(b)
	return append(b, '}')
}

// AppendTypedJSON appends the WebSocket form:
// {"type":"reading","name":…,"value":…,"unit":…,"ts":…,"seq":…}.
func (r Reading) AppendTypedJSON(b []byte) []byte {
	b = append(b, `{"type":"reading","name":`...)
	b = AppendJSONString(b, r.Name)
	b = append(b, ',')
	b = r.appendFields(b)
	return append(b, '}')
}

func (r Reading) appendFields(b []byte) []byte {
	b = append(b, `"value":`...)
	b = r.Value.AppendJSON(b)
	if r.Unit != "" {
		b = append(b, `,"unit":`...)
		b = AppendJSONString(b, r.Unit)
	}
	b = append(b, `,"ts":"`...)
	b = r.TS.UTC().AppendFormat(b, TimeFormat)
	b = append(b, `","seq":`...)
	return strconv.AppendUint(b, r.Seq, 10)
}

// MarshalJSON lets a Reading sit in structs encoded with encoding/json
// (the hello's state map, /api/state).
func (r Reading) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil), nil }

// AppendJSONString appends s as a JSON string. It escapes what JSON
// requires and keeps UTF-8 (°C stays °C).
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}

// UnquotePlain decodes a JSON string literal that needs no unescaping: no
// backslash, no control character, valid UTF-8. Then the content is the
// string, as json.Unmarshal would return it, without the decoder that
// json.Unmarshal allocates per call. ok is false for anything else, which
// json.Unmarshal then decides.
func UnquotePlain(raw []byte) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c < 0x20 || c == '\\' || c == '"' {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

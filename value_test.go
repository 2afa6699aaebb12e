package pibridge

import (
	"errors"
	"testing"
	"time"
)

func TestParseSetPayload(t *testing.T) {
	tests := []struct {
		in      string
		want    Value
		id      string
		wantErr string
	}{
		{in: "on", want: Bool(true)},
		{in: " OFF\n", want: Bool(false)},
		{in: "true", want: Bool(true)},
		{in: "False", want: Bool(false)},
		{in: "1", want: Number(1)},
		{in: "0", want: Number(0)},
		{in: "0.25", want: Number(0.25)},
		{in: "toggle", want: Toggle()},
		{in: `{"value":true,"id":"c1"}`, want: Bool(true), id: "c1"},
		{in: `{"value":"on"}`, want: Bool(true)},
		{in: `{"value":0.5,"id":"x"}`, want: Number(0.5), id: "x"},
		{in: `{"value":"toggle"}`, want: Toggle()},
		{in: "", wantErr: `bad value "": want on, off, true, false, toggle or a number`},
		{in: "maybe", wantErr: `bad value "maybe": want on, off, true, false, toggle or a number`},
		{in: "NaN", wantErr: `bad value "NaN": want on, off, true, false, toggle or a number`},
		{in: "1e999", wantErr: `bad value "1e999": want on, off, true, false, toggle or a number`},
		{in: `{"id":"c1"}`, id: "c1", wantErr: `bad value: "value" is missing`},
		{in: `{"value":null}`, wantErr: `bad value: "value" is missing`},
		{in: `{"value":[1]}`, wantErr: `bad value [1]: want a bool, a number or a string`},
		{in: `{"value":true,"extra":1}`, wantErr: `bad value: malformed JSON: json: unknown field "extra"`},
		// A refusal keeps the command's id, so its ack reaches the sender.
		{in: `{"value":"x","id":"q"}`, id: "q", wantErr: `bad value "x": want on, off, true, false, toggle or a number`},
		{in: `{"value":true,"id":"j4","extra":1}`, id: "j4", wantErr: `bad value: malformed JSON: json: unknown field "extra"`},
		{in: `{"value":true} {}`, wantErr: `bad value: trailing data after the JSON object`},
		{in: `{"value":`, wantErr: `bad value: malformed JSON: unexpected EOF`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			v, id, err := ParseSetPayload([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrBadValue) {
					t.Fatalf("err %v is not ErrBadValue", err)
				}
				if id != tt.id {
					t.Fatalf("refused with id %q, want %q", id, tt.id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v != tt.want || id != tt.id {
				t.Fatalf("got %v id %q, want %v id %q", v, id, tt.want, tt.id)
			}
		})
	}
}

func TestParsePulsePayload(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		id      string
		wantErr string
	}{
		{in: "500ms", want: 500 * time.Millisecond},
		{in: `{"for":"2s","id":"p1"}`, want: 2 * time.Second, id: "p1"},
		{in: "", wantErr: `bad value: pulse length is missing (want e.g. "500ms", or {} for the output's own)`},
		{in: `{}`},                    // the output's own length
		{in: `{"id":"p3"}`, id: "p3"}, // likewise
		{in: "500", wantErr: `bad value: pulse length "500": want a duration like "500ms"`},
		{in: "-1s", wantErr: `bad value: pulse length -1s: must be above 0 and at most 1h0m0s`},
		{in: "2h", wantErr: `bad value: pulse length 2h0m0s: must be above 0 and at most 1h0m0s`},
		{in: `{"for":"1s","x":1}`, wantErr: `bad value: malformed JSON: json: unknown field "x"`},
		{in: `{"for":"1s","x":1,"id":"p2"}`, id: "p2", wantErr: `bad value: malformed JSON: json: unknown field "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, id, err := ParsePulsePayload([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if id != tt.id {
					t.Fatalf("refused with id %q, want %q", id, tt.id)
				}
				return
			}
			if err != nil || d != tt.want || id != tt.id {
				t.Fatalf("got %v %q %v, want %v %q", d, id, err, tt.want, tt.id)
			}
		})
	}
}

func TestReadingJSON(t *testing.T) {
	ts := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	tests := []struct {
		r     Reading
		plain string
		typed string
	}{
		{
			r:     Reading{Name: "air.temperature", Value: Number(21.43), Unit: "°C", TS: ts, Seq: 1042},
			plain: `{"value":21.43,"unit":"°C","ts":"2026-11-25T11:00:00.123Z","seq":1042}`,
			typed: `{"type":"reading","name":"air.temperature","value":21.43,"unit":"°C","ts":"2026-11-25T11:00:00.123Z","seq":1042}`,
		},
		{
			r:     Reading{Name: "led", Value: Bool(true), TS: ts, Seq: 1},
			plain: `{"value":true,"ts":"2026-11-25T11:00:00.123Z","seq":1}`,
			typed: `{"type":"reading","name":"led","value":true,"ts":"2026-11-25T11:00:00.123Z","seq":1}`,
		},
		{
			r:     Reading{Name: "x", Value: Number(1e21), Unit: "a\"b\\\n", TS: ts, Seq: 7},
			plain: `{"value":1000000000000000000000,"unit":"a\"b\\\u000a","ts":"2026-11-25T11:00:00.123Z","seq":7}`,
			typed: `{"type":"reading","name":"x","value":1000000000000000000000,"unit":"a\"b\\\u000a","ts":"2026-11-25T11:00:00.123Z","seq":7}`,
		},
	}
	for _, tt := range tests {
		if got := string(tt.r.AppendJSON(nil)); got != tt.plain {
			t.Errorf("AppendJSON = %s, want %s", got, tt.plain)
		}
		if got := string(tt.r.AppendTypedJSON(nil)); got != tt.typed {
			t.Errorf("AppendTypedJSON = %s, want %s", got, tt.typed)
		}
	}
}

func TestAppendJSONAllocatesNothing(t *testing.T) {
	r := Reading{Name: "air.temperature", Value: Number(21.43), Unit: "°C", TS: time.Now(), Seq: 1042}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = r.AppendTypedJSON(buf[:0]) }); n != 0 {
		t.Fatalf("AppendTypedJSON allocates %v times per reading", n)
	}
}

func FuzzParseSetPayload(f *testing.F) {
	for _, s := range []string{"on", "off", "toggle", "0.5", `{"value":true,"id":"a"}`, `{"value":"on"}`, `{"value":1e400}`, "\x00", `{"value":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, _, err := ParseSetPayload(b)
		if err != nil {
			if !errors.Is(err, ErrBadValue) {
				t.Fatalf("error %v is not ErrBadValue", err)
			}
			return
		}
		if v.IsZero() {
			t.Fatalf("%q parsed without error into no value", b)
		}
		// Whatever parses must survive a round trip through its JSON form.
		again, _, err := ParseSetPayload(append(append([]byte(`{"value":`), v.AppendJSON(nil)...), '}'))
		if err != nil || again != v {
			t.Fatalf("%q → %v does not round-trip: %v %v", b, v, again, err)
		}
	})
}

func FuzzParsePulsePayload(f *testing.F) {
	for _, s := range []string{"500ms", `{"for":"1s"}`, "1h1s", "-0s"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, _, err := ParsePulsePayload(b)
		if err == nil && (d <= 0 || d > MaxPulse) {
			t.Fatalf("%q accepted as %v, outside (0, %v]", b, d, MaxPulse)
		}
	})
}

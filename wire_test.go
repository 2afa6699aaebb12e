package pibridge

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestWireMessages(t *testing.T) {
	points := []Point{{T: 1000, V: 1}, {T: 2000, V: 0.5}}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"error", AppendErrorMessage(nil, "", "bad"), `{"type":"error","error":"bad"}`},
		{"error with id", AppendErrorMessage(nil, "c\"1", "bad"), `{"type":"error","id":"c\"1","error":"bad"}`},
		{"ack ok", AppendAckMessage(nil, "c1", "relay", nil), `{"type":"ack","id":"c1","name":"relay","ok":true}`},
		{"ack no id no name", AppendAckMessage(nil, "", "", errors.New("x: no")), `{"type":"ack","ok":false,"error":"x: no"}`},
		{"ack read-only", AppendAckMessage(nil, "c2", "relay", fmt.Errorf("relay: %w", ErrReadOnly)),
			`{"type":"ack","id":"c2","name":"relay","ok":false,"error":"relay: read-only access: commands need the control token"}`},
		{"history message", AppendHistoryMessage(nil, "h", "t", points), `{"type":"history","id":"h","name":"t","points":[[1000,1],[2000,0.5]]}`},
		{"history message no id", AppendHistoryMessage(nil, "", "t", nil), `{"type":"history","name":"t","points":[]}`},
		{"history body", AppendHistoryJSON(nil, "t", points), `{"name":"t","points":[[1000,1],[2000,0.5]]}`},
		{"hello", AppendHelloStart(nil, false), `{"type":"hello","protocol":1,`},
		{"hello read-only", AppendHelloStart(nil, true), `{"type":"hello","protocol":1,"readonly":true,`},
		{"state entry", AppendStateEntry(nil, "relay", Reading{Name: "relay", Value: Bool(true), TS: time.UnixMilli(0).UTC(), Seq: 7}),
			`"relay":{"value":true,"ts":"1970-01-01T00:00:00.000Z","seq":7}`},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, tt.got, tt.want)
		}
	}
}

func TestWireMessagesDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 512)
	points := []Point{{T: 1, V: 2}}
	err := errors.New("relay: no")
	n := testing.AllocsPerRun(100, func() {
		b := AppendErrorMessage(buf[:0], "id", "msg")
		b = AppendAckMessage(b, "id", "relay", err)
		b = AppendHistoryMessage(b, "id", "relay", points)
		_ = AppendHelloStart(b, true)
	})
	if n != 0 {
		t.Fatalf("%v allocations per run, want 0", n)
	}
}

func TestParseSince(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "", want: 10 * time.Minute},
		{in: "90s", want: 90 * time.Second},
		{in: "24h", want: 24 * time.Hour},
		{in: "soon", wantErr: `since "soon": want a duration such as "10m"`},
		{in: "0s", wantErr: "since 0s: must be above 0 and at most 24h0m0s"},
		{in: "25h", wantErr: "since 25h0m0s: must be above 0 and at most 24h0m0s"},
	}
	for _, tt := range tests {
		d, err := ParseSince(tt.in)
		switch {
		case tt.wantErr != "":
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseSince(%q) = %v, want error %q", tt.in, err, tt.wantErr)
			}
		case err != nil || d != tt.want:
			t.Errorf("ParseSince(%q) = %v, %v; want %v", tt.in, d, err, tt.want)
		}
	}
}

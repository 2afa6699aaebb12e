package mqtt

import (
	"reflect"
	"testing"

	pibridge "pibridge"
)

// TestOutbox runs the same steps against both outboxes.
func TestOutbox(t *testing.T) {
	type step = outboxStep
	tests := []struct {
		name        string
		max         int
		steps       []step
		wantDropped uint64
	}{
		{"fifo", 10, []step{
			{"append", 3, 3},
			{"next", 0, uint64(1)},
			{"next", 1, uint64(2)},
			{"next", 3, uint64(0)},
			{"commit", 1, 2},
			{"next", 0, uint64(2)},
			{"commit", 3, 0},
			{"next", 0, uint64(0)},
		}, 0},
		{"overflow drops the oldest", 3, []step{
			{"append", 5, 3},
			{"next", 0, uint64(3)},
			{"next", 1, uint64(3)}, // the cursor survives its reading being dropped
			{"next", 4, uint64(5)},
			{"commit", 2, 3}, // committing dropped readings is a no-op
			{"commit", 4, 1},
		}, 2},
		{"grows past the first ring and shrinks", 1000, []step{
			{"append", 900, 900},
			{"next", 450, uint64(451)},
			{"commit", 899, 1},
			{"next", 0, uint64(900)},
		}, 0},
		{"max one", 1, []step{
			{"append", 4, 1},
			{"next", 0, uint64(4)},
		}, 3},
	}
	makers := []struct {
		name string
		make func(t *testing.T, max int) Outbox
	}{
		{"memory", func(_ *testing.T, max int) Outbox { return NewMemoryOutbox(max) }},
		{"disk", func(t *testing.T, max int) Outbox {
			o, err := running(OpenDiskOutbox(t.TempDir(), max, testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			return o
		}},
	}
	for _, mk := range makers {
		for _, tt := range tests {
			t.Run(mk.name+"/"+tt.name, func(t *testing.T) {
				testOutboxSteps(t, mk.make(t, tt.max), tt.steps, tt.wantDropped)
			})
		}
	}
}

type outboxStep struct {
	op   string // append N (seqs up to N), next after, commit seq
	arg  uint64
	want any // Next: seq (0: none); others: Len
}

func testOutboxSteps(t *testing.T, o Outbox, steps []outboxStep, wantDropped uint64) {
	t.Helper()
	var seq uint64
	for _, s := range steps {
		var got any
		switch s.op {
		case "append":
			for seq < s.arg {
				seq++
				o.Append(pibridge.Reading{Name: "x", Value: pibridge.Number(float64(seq)), Seq: seq})
			}
			got = o.Len()
		case "next":
			r, ok := o.Next(s.arg)
			if ok != (r.Seq != 0) || ok && r.Value.Float() != float64(r.Seq) {
				t.Fatalf("Next(%d) = %+v, %v", s.arg, r, ok)
			}
			got = r.Seq
		case "commit":
			o.Commit(s.arg)
			got = o.Len()
		}
		if !reflect.DeepEqual(got, s.want) {
			t.Fatalf("%s %d = %v, want %v", s.op, s.arg, got, s.want)
		}
	}
	if d := o.Dropped(); d != wantDropped {
		t.Errorf("Dropped = %d, want %d", d, wantDropped)
	}
}

package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestRunStagesStopsInOrder: each stage's ctx ends only once every part
// of the stage before has returned, whether ctx ends or a part fails; and
// runStages returns the part's error after all have returned.
func TestRunStagesStopsInOrder(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		failing bool // the last stage's part fails instead of ctx ending
	}{
		{"ctx ends", false},
		{"a part fails", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var order []string
			record := func(s string) {
				mu.Lock()
				order = append(order, s)
				mu.Unlock()
			}
			// slow keeps running a while after its ctx ends, so that a
			// later stage stopping too early would be seen.
			slow := func(name string) part {
				return func(ctx context.Context) error {
					<-ctx.Done()
					time.Sleep(20 * time.Millisecond)
					record(name)
					return nil
				}
			}
			early := func(context.Context) error { record("early"); return nil } // returns at once, stops nothing
			fail := make(chan struct{})
			last := func(ctx context.Context) error {
				select {
				case <-ctx.Done():
					record("last")
					return nil
				case <-fail:
					record("failed")
					return boom
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- runStages(ctx, []part{slow("a1"), slow("a2"), early}, []part{slow("b")}, nil, []part{last})
			}()
			if tc.failing {
				close(fail)
			} else {
				cancel()
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("runStages did not return")
			}
			if want := map[bool]error{false: nil, true: boom}[tc.failing]; !errors.Is(err, want) || (want == nil && err != nil) {
				t.Errorf("runStages = %v, want %v", err, want)
			}
			mu.Lock()
			defer mu.Unlock()
			i := slices.Index(order, "early")
			order = slices.Delete(order, i, i+1)
			if tc.failing {
				if order[0] != "failed" {
					t.Fatalf("order %q: the failing part first", order)
				}
				order = order[1:]
			}
			slices.Sort(order[:2]) // a1 and a2 stop together
			want := []string{"a1", "a2", "b"}
			if !tc.failing {
				want = append(want, "last")
			}
			if !slices.Equal(order, want) {
				t.Errorf("stop order %q, want %q", order, want)
			}
		})
	}
}

package rawio

import (
	"errors"
	"os"
	"testing"
	"time"
)

// TestConnReadSlack: with a slack, a read deadline that moves later by
// less than it stays put, one that moves further or earlier is applied
// with the slack added, and none passes early.
func TestConnReadSlack(t *testing.T) {
	skipUnsupported(t)
	a, _ := tcpPair(t)
	const slack = 50 * time.Millisecond
	c, err := NewConn(a, time.Second, slack)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(time.Minute)
	steps := []struct {
		name string
		ask  time.Time
		want time.Time
	}{
		{"first", base, base.Add(slack)},
		{"later within the slack", base.Add(slack / 2), base.Add(slack)},
		{"just at the slack", base.Add(slack), base.Add(slack)},
		{"beyond the slack", base.Add(2 * slack), base.Add(3 * slack)},
		{"earlier", base, base.Add(slack)},
		{"cleared", time.Time{}, time.Time{}},
		{"set again", base, base.Add(slack)},
	}
	for _, s := range steps {
		if err := c.SetReadDeadline(s.ask); err != nil {
			t.Fatal(err)
		}
		if !c.readUntil.Equal(s.want) {
			t.Errorf("%s: the socket's deadline is %v after the ask, want %v", s.name, c.readUntil.Sub(base), s.want.Sub(base))
		}
	}

	// The deadline never passes before what was asked.
	asked := time.Now().Add(100 * time.Millisecond)
	c.SetReadDeadline(asked)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want the deadline", err)
	}
	if now := time.Now(); now.Before(asked) {
		t.Fatalf("the read gave up %v before the deadline asked for", asked.Sub(now))
	}
}

// TestConnDueDeadlineUnblocks: a deadline already due (how a read is
// interrupted) applies as it is, not a slack later.
func TestConnDueDeadlineUnblocks(t *testing.T) {
	skipUnsupported(t)
	a, _ := tcpPair(t)
	c, err := NewConn(a, time.Second, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		read <- err
	}()
	c.SetReadDeadline(time.Now())
	select {
	case err := <-read:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want the deadline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a due deadline did not end the read: it was given the slack")
	}
}

// TestConnExactWithoutSlack: without a slack the deadline is what was asked.
func TestConnExactWithoutSlack(t *testing.T) {
	skipUnsupported(t)
	a, _ := tcpPair(t)
	c, err := NewConn(a, time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{time.Minute, time.Minute + time.Millisecond, time.Second} {
		ask := time.Now().Add(d)
		c.SetDeadline(ask)
		if !c.readUntil.Equal(ask) {
			t.Errorf("asked %v, the socket has %v", ask, c.readUntil)
		}
	}
}

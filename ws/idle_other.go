//go:build !linux

package ws

import (
	"errors"
	"sync/atomic"
	"time"
)

// idlePolling: without epoll, a reader never parks.
const idlePolling = false

type poller struct{ sweeps, parks atomic.Int64 }

func newPoller(time.Duration) (*poller, error) { return &poller{}, nil }

func (*poller) prepare(*idleConn) int           { return 0 }
func (*poller) arm(*idleConn, int32, int) error { return errors.New("no poller") }
func (*poller) forget(*idleConn)                {}
func (*poller) run()                            {}
func (*poller) close()                          {}
func (*poller) parked() int                     { return 0 }

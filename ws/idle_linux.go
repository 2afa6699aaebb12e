package ws

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// idlePolling: parked readers are watched by an epoll set.
const idlePolling = true

// poller watches the sockets of parked readers with one epoll set, which
// is itself waited on through the runtime's poller: no thread blocks.
type poller struct {
	f     *os.File // the epoll set, for waiting on it
	fd    int      // the same, for epoll_ctl (f.Fd would make f blocking)
	sweep time.Duration

	sweeps atomic.Int64 // tests: the poller must not spin
	parks  atomic.Int64 // tests

	mu    sync.Mutex
	slots []*idleConn // by slot; the epoll data of a socket is its slot
	free  []int32
}

func newPoller(sweep time.Duration) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &poller{f: os.NewFile(uintptr(fd), "epoll"), fd: fd, sweep: sweep}, nil
}

// prepare gives w a slot and says how to arm it; the reader calls it
// before it parks, while these fields are still its own.
func (p *poller) prepare(w *idleConn) (op int) {
	if w.slot < 0 {
		p.mu.Lock()
		if n := len(p.free); n > 0 {
			w.slot, p.free = p.free[n-1], p.free[:n-1]
		} else {
			w.slot = int32(len(p.slots))
			p.slots = append(p.slots, nil)
		}
		p.slots[w.slot] = w
		p.mu.Unlock()
	}
	if w.armed {
		return unix.EPOLL_CTL_MOD // a oneshot registration stays, disarmed
	}
	w.armed = true
	return unix.EPOLL_CTL_ADD
}

// arm registers w's socket for one readable event. The socket is reached
// through its RawConn, so it cannot be closed (and its number reused)
// meanwhile; once closed, the kernel forgets the registration.
func (p *poller) arm(w *idleConn, slot int32, op int) error {
	p.parks.Add(1)
	rc, err := w.TCPConn.SyscallConn()
	if err != nil {
		return err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: slot}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.fd, op, int(fd), &ev) }); err != nil {
		return err
	}
	return cerr
}

// forget gives w's slot back; its reader calls it as the connection ends.
func (p *poller) forget(w *idleConn) {
	if w.slot < 0 {
		return
	}
	p.mu.Lock()
	p.slots[w.slot] = nil
	p.free = append(p.free, w.slot)
	p.mu.Unlock()
	w.slot = -1
}

// run wakes parked readers whose socket became readable, and those whose
// read deadline has passed, until close.
func (p *poller) run() {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, 64)
	for {
		if err := p.f.SetReadDeadline(time.Now().Add(p.sweep)); err != nil {
			return // closed
		}
		n := 0
		err := rc.Read(func(fd uintptr) bool {
			var werr error
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || (werr != nil && werr != unix.EINTR)
		})
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			p.wakeExpired()
			continue
		case err != nil:
			return // closed
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			if s := int(ev.Fd); s < len(p.slots) && p.slots[s] != nil {
				p.slots[s].wake()
			}
		}
		p.mu.Unlock()
	}
}

func (p *poller) wakeExpired() {
	p.sweeps.Add(1)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.slots {
		if w != nil && w.state.Load() == readerParked && w.expired(now) {
			w.wake()
		}
	}
}

func (p *poller) close() { p.f.Close() }

// parked counts the parked readers.
func (p *poller) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, w := range p.slots {
		if w != nil && w.state.Load() == readerParked {
			n++
		}
	}
	return n
}

package gpio

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/host/v3/gpioioctl"
)

// GPIO character device uAPI v2 (linux/gpio.h), only what an output needs.
const (
	gpioV2LineFlagOutput         = 1 << 3
	gpioV2LineAttrIDOutputValues = 2
	gpioV2GetLineIoctl           = 3<<30 | unsafe.Sizeof(gpioV2LineRequest{})<<16 | 0xB4<<8 | 0x07
	gpioV2LineGetValuesIoctl     = 3<<30 | unsafe.Sizeof(gpioV2LineValues{})<<16 | 0xB4<<8 | 0x0E
	gpioV2LineSetValuesIoctl     = 3<<30 | unsafe.Sizeof(gpioV2LineValues{})<<16 | 0xB4<<8 | 0x0F
	gpioV2LinesMax               = 64
	gpioV2LineNumAttrsMax        = 10
	gpioMaxNameSize              = 32
)

type gpioV2LineConfigAttribute struct {
	id    uint32
	_     uint32
	value uint64 // flags, output values or debounce period, by id
	mask  uint64
}

type gpioV2LineRequest struct {
	offsets         [gpioV2LinesMax]uint32
	consumer        [gpioMaxNameSize]byte
	flags           uint64
	numAttrs        uint32
	_               [5]uint32
	attrs           [gpioV2LineNumAttrsMax]gpioV2LineConfigAttribute
	numLines        uint32
	eventBufferSize uint32
	_               [5]uint32
	fd              int32
}

type gpioV2LineValues struct {
	bits, mask uint64
}

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// lineOutput is an output on a GPIO character device line that asks the
// kernel for the line with its first level in the same request. periph's
// gpioioctl (host v3.8.5) requests a line as an input, switches it to an
// output (which drives it low) and only then sets the level: an output
// that must be high glitched low at every start, and its API has no way to
// pass the output value with the request. Everything but driving an
// output (names, inputs, edges) stays periph's.
type lineOutput struct {
	*gpioioctl.GPIOLine // name, number, String for logs and errors
	path                string
	offset              uint32

	mu    sync.Mutex
	fd    int // the line request; -1 until the first Out
	level pgpio.Level
}

// isLine reports whether p is a periph gpioioctl line.
func isLine(p pgpio.PinIO) bool {
	if rp, ok := p.(pgpio.RealPin); ok {
		p, _ = rp.Real().(pgpio.PinIO)
	}
	_, ok := p.(*gpioioctl.GPIOLine)
	return ok
}

// asLineOutput returns p as a lineOutput when it is a periph gpioioctl
// line, and p unchanged otherwise.
func asLineOutput(p pgpio.PinIO) pgpio.PinIO {
	r := p
	if rp, ok := p.(pgpio.RealPin); ok {
		r = rp.Real()
	}
	l, ok := r.(*gpioioctl.GPIOLine)
	if !ok {
		return p
	}
	for _, c := range gpioioctl.Chips {
		for _, cl := range c.Lines() {
			if cl == l {
				return &lineOutput{GPIOLine: l, path: c.Path(), offset: uint32(l.Number()), fd: -1}
			}
		}
	}
	return p
}

// Out drives the line; the first call requests it as an output already at l.
func (o *lineOutput) Out(l pgpio.Level) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var bits uint64
	if l {
		bits = 1
	}
	if o.fd < 0 {
		fd, err := o.request(bits)
		if err != nil {
			return err
		}
		o.fd = fd
	} else {
		v := gpioV2LineValues{bits: bits, mask: 1}
		if err := ioctl(uintptr(o.fd), gpioV2LineSetValuesIoctl, unsafe.Pointer(&v)); err != nil {
			return fmt.Errorf("set line value: %w", err)
		}
	}
	o.level = l
	return nil
}

func (o *lineOutput) request(bits uint64) (int, error) {
	chip, err := os.OpenFile(o.path, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer chip.Close()
	var req gpioV2LineRequest
	req.offsets[0] = o.offset
	req.numLines = 1
	copy(req.consumer[:gpioMaxNameSize-1], "pibridge")
	req.flags = gpioV2LineFlagOutput
	req.numAttrs = 1
	req.attrs[0] = gpioV2LineConfigAttribute{id: gpioV2LineAttrIDOutputValues, value: bits, mask: 1}
	if err := ioctl(chip.Fd(), gpioV2GetLineIoctl, unsafe.Pointer(&req)); err != nil {
		return -1, fmt.Errorf("line request: %w", err)
	}
	return int(req.fd), nil
}

// Read returns the level the line drives (the kernel reads an output line
// back as its driven value).
func (o *lineOutput) Read() pgpio.Level {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fd < 0 {
		return o.level
	}
	v := gpioV2LineValues{mask: 1}
	if err := ioctl(uintptr(o.fd), gpioV2LineGetValuesIoctl, unsafe.Pointer(&v)); err != nil {
		return o.level
	}
	return v.bits&1 == 1
}

var errOutputOnly = errors.New("the line is an output")

func (o *lineOutput) In(pgpio.Pull, pgpio.Edge) error { return errOutputOnly }
func (o *lineOutput) WaitForEdge(time.Duration) bool  { return false }
func (o *lineOutput) Halt() error                     { return nil }

// PWM: the GPIO character device has no PWM (periph's gpioioctl neither).
func (o *lineOutput) PWM(pgpio.Duty, physic.Frequency) error {
	return errors.New("no PWM on a GPIO character device line")
}

// headerChips are the labels of the GPIO chips whose line n is BCM GPIOn:
// the RP1 of a Pi 5, the SoC of a Pi 4, and of the Pi 0–3.
var headerChips = []string{"pinctrl-rp1", "pinctrl-bcm2711", "pinctrl-bcm2835"}

// headerLine returns the line of a header chip that is GPIOn, whatever the
// kernel named it, or nil.
func headerLine(name string) pgpio.PinIO {
	n, err := pinNumber(name)
	if err != nil {
		return nil
	}
	for _, label := range headerChips {
		for _, c := range gpioioctl.Chips {
			if c.Label() == label && n < c.LineCount() {
				return c.Lines()[n]
			}
		}
	}
	return nil
}

package pibridge

import (
	"time"

	"golang.org/x/sys/unix"
)

// kernelClock reads the kernel's NTP state with adjtimex(2), which any
// user may do: STA_UNSYNC is set until a time source (systemd-timesyncd,
// chrony, ntpd) disciplines the clock, and TIME_ERROR is returned when
// the estimated error has grown past 16 s.
func kernelClock() (synced, known bool, maxError time.Duration) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return true, false, 0
	}
	maxError = time.Duration(int64(tx.Maxerror)) * time.Microsecond
	return state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0, true, maxError
}

//go:build !linux

package gpio

import pgpio "periph.io/x/conn/v3/gpio"

// asLineOutput: GPIO character devices are Linux only.
func asLineOutput(p pgpio.PinIO) pgpio.PinIO { return p }

// headerLine: GPIO character devices are Linux only.
func headerLine(string) pgpio.PinIO { return nil }

// isLine: GPIO character devices are Linux only.
func isLine(pgpio.PinIO) bool { return false }

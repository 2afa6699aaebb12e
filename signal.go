package pibridge

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind says what a signal is and therefore which values it takes.
type Kind uint8

const (
	KindInput  Kind = iota + 1 // digital GPIO input, bool
	KindOutput                 // digital GPIO output, bool, writable
	KindPWM                    // duty cycle 0..1, writable
	KindSensor                 // number, read-only
)

var kindNames = [...]string{KindInput: "input", KindOutput: "output", KindPWM: "pwm", KindSensor: "sensor"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Writable reports whether commands may change a signal of this kind.
func (k Kind) Writable() bool { return k == KindOutput || k == KindPWM }

// Signal describes one named value the bridge knows.
type Signal struct {
	Name string
	Kind Kind
	Unit string
	// Pin and Source are for people reading the -check table and the logs:
	// the resolved pin name, or the sensor type and bus.
	Pin    string
	Source string
	// DeviceClass is the Home Assistant device class of a sensor quantity
	// (temperature, humidity, pressure, voltage), empty when none fits.
	DeviceClass string
	// Pulse is an output's default pulse length, used by a pulse command
	// that names none; 0 when the configuration gives none.
	Pulse time.Duration
}

// Topic returns the MQTT topic path of the signal: "air.temperature" is
// "air/temperature".
func (s Signal) Topic() string { return strings.ReplaceAll(s.Name, ".", "/") }

// Reserved names are device-level MQTT topics and cannot name a signal.
var reservedNames = map[string]bool{"status": true, "meta": true, "ack": true}

// ValidName checks a signal name, device id part or quantity: [a-z0-9_-],
// 1..max characters. Its error says why a name is not; the caller adds
// the field path (Problems.Add).
func ValidName(name string, max int) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if len(name) > max {
		return fmt.Errorf("%q is longer than %d characters", name, max)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%q: only a-z, 0-9, _ and - are allowed (found %q)", name, rune(c))
		}
	}
	return nil
}

// ValidSignalName checks a configured signal name: ValidName plus the
// reserved device topics.
func ValidSignalName(name string) error {
	if err := ValidName(name, 32); err != nil {
		return err
	}
	if reservedNames[name] {
		return fmt.Errorf("%q is reserved", name)
	}
	return nil
}

// Package gpio drives pins and sensors through periph.io, and simulates a
// board when there is none.
//
// A Board is built from a Config (the inputs, outputs, pwm and sensors
// sections of the bridge's YAML file). It describes its signals, emits
// readings through a pibridge.Emitter while Run is active, and moves outputs
// as a pibridge.Actuator. With board "sim" every pin is periph's own test
// double, gpiotest.Pin, and every hardware sensor a smooth random walk, so
// the whole bridge runs and is tested on any machine.
package gpio

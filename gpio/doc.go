// Package gpio drives pins and sensors through periph.io, and simulates a
// board (periph's gpiotest pins, random-walk sensors) when there is none,
// so the whole bridge runs and is tested on any machine.
package gpio

package gpio

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// walkModel is a bounded Ornstein-Uhlenbeck walk: it drifts back towards
// center at rate theta per second and wanders sigma per √second, so values
// look like a room's, whatever the sensor's interval. Over minutes a room
// walk spreads by sigma/√(2·theta): about ±0.5 °C, ±1.3 %, ±0.6 hPa.
type walkModel struct {
	center, lo, hi float64
	sigma, theta   float64
}

func modelFor(sensorType string, q quantity) walkModel {
	switch {
	case q.unit == "°C" && sensorType == TypeCPUTemp:
		return walkModel{center: 45, lo: 35, hi: 75, sigma: 0.3, theta: 0.02}
	case q.unit == "°C" && sensorType == TypeDS18B20:
		return walkModel{center: 18, lo: 5, hi: 30, sigma: 0.03, theta: 0.005}
	case q.unit == "°C":
		return walkModel{center: 21, lo: 10, hi: 35, sigma: 0.03, theta: 0.002}
	case q.unit == "%":
		return walkModel{center: 45, lo: 20, hi: 80, sigma: 0.08, theta: 0.002}
	case q.unit == "hPa":
		return walkModel{center: 1013, lo: 980, hi: 1040, sigma: 0.02, theta: 0.0005}
	case q.unit == "V":
		return walkModel{center: 1.65, lo: 0, hi: 3.3, sigma: 0.01, theta: 0.02}
	}
	return walkModel{center: 50, lo: 0, hi: 100, sigma: 0.5, theta: 0.01}
}

// walk simulates a sensor: one walk per quantity, one step per read.
type walk struct {
	rng    *rand.Rand
	models []walkModel
	x      []float64
	dt     float64 // seconds per step
}

func newWalk(seed, stream uint64, c SensorConfig, qs []quantity, interval time.Duration) *walk {
	w := &walk{rng: rand.New(rand.NewPCG(seed, stream)), dt: interval.Seconds()}
	for _, q := range qs {
		m := modelFor(c.Type, q)
		w.models = append(w.models, m)
		// Start near, not at, the centre: two simulated boards differ.
		w.x = append(w.x, m.center+(w.rng.Float64()-0.5)*(m.hi-m.lo)/20)
	}
	return w
}

// read takes one exact Ornstein-Uhlenbeck step of dt, which stays stable
// for any interval (a naive Euler step overshoots at long ones).
func (w *walk) read(_ context.Context, dst []float64) error {
	for i, m := range w.models {
		a := math.Exp(-m.theta * w.dt)
		sd := m.sigma * math.Sqrt((1-a*a)/(2*m.theta))
		x := m.center + (w.x[i]-m.center)*a + sd*w.rng.NormFloat64()
		w.x[i] = min(max(x, m.lo), m.hi)
		dst[i] = w.x[i]
	}
	return nil
}

func (w *walk) close() error { return nil }

package main

import (
	"context"
	"time"

	"pibridge"
	"pibridge/gpio"
	"pibridge/metrics"
	"pibridge/mqtt"
	"pibridge/ws"
)

// newMetrics feeds /metrics from the parts' own getters, read at scrape
// time; package metrics knows none of the parts.
func newMetrics(core *pibridge.Core, board *gpio.Board, client *mqtt.Client, live *ws.Server, alive func() bool) *metrics.Metrics {
	return metrics.New(metricsOptions(core, board, client, live, alive))
}

// metricsOptions are the getters /metrics reads; the panel's device page
// reads the same.
func metricsOptions(core *pibridge.Core, board *gpio.Board, client *mqtt.Client, live *ws.Server, alive func() bool) metrics.Options {
	return metrics.Options{
		Version: version,
		Core:    core,
		MQTT:    client.Stats,
		WS: func() metrics.WS {
			return metrics.WS{Clients: live.Clients(), SlowClosed: live.SlowClosed(), AuthFailures: live.AuthFailures()}
		},
		Sensors: func() []metrics.Sensor {
			stats := board.SensorStats()
			out := make([]metrics.Sensor, len(stats))
			for i, s := range stats {
				out[i] = metrics.Sensor{
					Name: s.Name, Type: s.Type, Reads: s.Reads, Errors: s.Errors,
					Failing: s.Failing, Stale: s.Stale, LastDuration: s.LastDuration,
				}
			}
			return out
		},
		Alive: alive,
	}
}

// observedActuator counts the commands that reach the board, by signal,
// op and the board's result; the core's ObserveCommands hook counts every
// command by the door it came through, refused ones included.
type observedActuator struct {
	pibridge.Actuator
	observe func(signal, op string, err error)
}

func (a observedActuator) Set(ctx context.Context, name string, v pibridge.Value) error {
	err := a.Actuator.Set(ctx, name, v)
	a.observe(name, "set", err)
	return err
}

func (a observedActuator) Pulse(ctx context.Context, name string, d time.Duration) error {
	err := a.Actuator.Pulse(ctx, name, d)
	a.observe(name, "pulse", err)
	return err
}

package web

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

// A panel opened seconds after the bridge started: air.pressure has three
// equal readings, cpu.temperature one. The y axes must fit those values
// (not 0–2000 and 0–75, uPlot's default for a flat series), and the lone
// cpu.temperature reading must be drawn as a dot.
func TestChartFromFirstReading(t *testing.T) {
	bridge := newFakeBridge()
	start := time.Now().Add(-2 * time.Second)
	ts := start.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	bridge.update(func(hello map[string]any) {
		hello["signals"] = []map[string]any{
			{"name": "air.pressure", "kind": "sensor", "unit": "hPa", "writable": false},
			{"name": "cpu.temperature", "kind": "sensor", "unit": "°C", "writable": false},
		}
		hello["state"] = map[string]any{
			"air.pressure":    map[string]any{"value": 1013.25, "unit": "hPa", "ts": ts, "seq": 3},
			"cpu.temperature": map[string]any{"value": 45.3, "unit": "°C", "ts": ts, "seq": 1},
		}
	})
	bridge.points = func(name string) [][2]float64 {
		if name != "air.pressure" {
			return [][2]float64{{float64(start.UnixMilli()), 45.3}}
		}
		var p [][2]float64
		for i := range 3 {
			p = append(p, [2]float64{float64(start.Add(time.Duration(i-2) * time.Second).UnixMilli()), 1013.25})
		}
		return p
	}
	srv := httptest.NewServer(bridge)
	t.Cleanup(srv.Close)
	b := startBrowser(t, srv.URL)
	b.waitFor(t, `pibridge.state.status === 'live'`)

	for _, c := range []struct {
		name     string
		value    float64
		points   int
		maxRange float64 // the widest y axis a person can still read the value on
	}{
		{"air.pressure", 1013.25, 3, 20},
		{"cpu.temperature", 45.3, 1, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			tile := fmt.Sprintf(`pibridge.state.tiles.get(%q)`, c.name)
			b.waitFor(t, fmt.Sprintf(`%[1]s.historyReplies >= 1 && %[1]s.chart.plot && %[1]s.chart.plot.data[0].length === %d`, tile, c.points))
			// Two frames: the scheduled draw has happened.
			eval[bool](t, b, `new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`)
			lo := eval[float64](t, b, tile+`.chart.plot.scales.y.min`)
			hi := eval[float64](t, b, tile+`.chart.plot.scales.y.max`)
			if !(lo < c.value && c.value < hi) || hi-lo > c.maxRange {
				t.Errorf("y axis %v–%v for a value of %v: want it around the value, at most %v wide", lo, hi, c.value, c.maxRange)
			}
			// Something is painted where the last point is: a line end or a dot.
			painted := eval[bool](t, b, fmt.Sprintf(`(() => {
				const u = %s.chart.plot;
				const n = u.data[0].length - 1;
				const x = Math.round(u.valToPos(u.data[0][n], 'x', true));
				const y = Math.round(u.valToPos(u.data[1][n], 'y', true));
				const px = u.ctx.getImageData(x - 1, y - 1, 3, 3).data;
				for (let i = 3; i < px.length; i += 4) if (px[i] > 0) return true;
				return false;
			})()`, tile))
			if !painted {
				t.Errorf("nothing drawn at the last %s point", c.name)
			}
		})
	}
}

package gateway

import (
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"pibridge"
	"pibridge/httpx"
	"pibridge/web"
)

//go:embed static
var static embed.FS

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	files := http.FileServerFS(sub)
	page := func(w http.ResponseWriter, r *http.Request) {
		if !g.hostOK(w, r) {
			return
		}
		web.SetSecurityHeaders(w.Header()) // the panel's: no inline script or style, nothing from another origin
		files.ServeHTTP(w, r)
	}
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /fleet/", func(w http.ResponseWriter, r *http.Request) {
		http.StripPrefix("/fleet", http.HandlerFunc(page)).ServeHTTP(w, r)
	})
	// The sign-in form is the panel's own script, so both pages share it.
	login := http.StripPrefix("/fleet", web.Handler())
	mux.HandleFunc("GET /fleet/login.js", func(w http.ResponseWriter, r *http.Request) {
		if g.hostOK(w, r) {
			login.ServeHTTP(w, r)
		}
	})
	mux.HandleFunc("GET /fleet/ws", func(w http.ResponseWriter, r *http.Request) { g.serveWS(w, r, nil) })
	mux.HandleFunc("GET /api/devices", g.serveDevices)
	mux.HandleFunc("POST /api/login", g.auth.serveLogin)
	mux.HandleFunc("POST /api/logout", g.auth.serveLogout)
	mux.HandleFunc("POST /d/{id}/api/login", g.auth.serveLogin)
	mux.HandleFunc("POST /d/{id}/api/logout", g.auth.serveLogout)
	mux.HandleFunc("GET /d/{id}/ws", g.device(func(w http.ResponseWriter, r *http.Request, d *device) { g.serveWS(w, r, d) }))
	mux.HandleFunc("GET /d/{id}/api/state", g.device(g.serveState))
	mux.HandleFunc("GET /d/{id}/api/history", g.device(g.serveHistory))
	mux.HandleFunc("POST /d/{id}/api/signals/{name}", g.device(g.serveSignal))
	mux.HandleFunc("GET /d/{id}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /d/{id}/{file...}", func(w http.ResponseWriter, r *http.Request) {
		if !g.hostOK(w, r) {
			return
		}
		id := r.PathValue("id")
		if g.deviceByID(id) == nil {
			writeError(w, http.StatusNotFound, pibridge.Clip(id)+": no such device")
			return
		}
		if g.deps.Panel == nil {
			writeError(w, http.StatusNotFound, "no panel in this build")
			return
		}
		http.StripPrefix("/d/"+id, g.deps.Panel).ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /healthz", g.serveHealth)
	mux.HandleFunc("GET /metrics", g.serveMetrics)
	return mux
}

// hostOK answers 421 and returns false for a Host that is not allowed.
func (g *Gateway) hostOK(w http.ResponseWriter, r *http.Request) bool {
	if g.auth.hostAllowed(r.Host) {
		return true
	}
	writeError(w, http.StatusMisdirectedRequest, "host is not allowed (http.allowed_hosts)")
	return false
}

// deviceByID returns a listed device, or nil.
func (g *Gateway) deviceByID(id string) *device {
	d := g.lookup(id)
	if d == nil {
		return nil
	}
	d.mu.Lock()
	listed := d.listed
	d.mu.Unlock()
	if !listed {
		return nil
	}
	return d
}

// device resolves /d/{id}/… and answers 404 for a device the gateway
// does not know.
func (g *Gateway) device(h func(http.ResponseWriter, *http.Request, *device)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d := g.deviceByID(r.PathValue("id"))
		if d == nil {
			if !g.hostOK(w, r) {
				return
			}
			writeError(w, http.StatusNotFound, pibridge.Clip(r.PathValue("id"))+": "+ErrUnknownDevice.Error())
			return
		}
		h(w, r, d)
	}
}

func (g *Gateway) serveDevices(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := g.auth.guard(w, r, false); !ok {
		return
	}
	b, _ := json.Marshal(struct {
		Name    string       `json:"name"`
		Devices []DeviceInfo `json:"devices"`
	}{g.cfg.Name, g.Devices()})
	httpx.WriteJSON(w, http.StatusOK, b)
}

// serveState is a bridge's /api/state for one device: its meta and state.
func (g *Gateway) serveState(w http.ResponseWriter, r *http.Request, d *device) {
	if _, _, ok := g.auth.guard(w, r, false); !ok {
		return
	}
	d.mu.Lock()
	b := make([]byte, 0, len(d.desc)+32+len(d.state)*96)
	b = append(b, '{')
	b = append(b, d.desc...)
	b = append(b, `,"status":`...)
	b = pibridge.AppendJSONString(b, d.viewLocked().Status)
	b = append(b, `,"state":`...)
	b = d.appendStateLocked(b)
	d.mu.Unlock()
	httpx.WriteJSON(w, http.StatusOK, append(b, '}'))
}

func (g *Gateway) serveHistory(w http.ResponseWriter, r *http.Request, d *device) {
	if _, _, ok := g.auth.guard(w, r, false); !ok {
		return
	}
	q := r.URL.Query()
	name := q.Get("name")
	if name == "" {
		writeError(w, http.StatusBadRequest, "name is missing")
		return
	}
	since, err := pibridge.ParseSince(q.Get("since"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	points, err := g.history(d, name, since)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, pibridge.AppendHistoryJSON(nil, name, points))
}

// serveSignal forwards POST /d/<id>/api/signals/<name> and answers with
// the signal's reading once the device has acknowledged.
func (g *Gateway) serveSignal(w http.ResponseWriter, r *http.Request, d *device) {
	rl, _, ok := g.auth.guard(w, r, false)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if rl != roleControl {
		writeError(w, http.StatusForbidden, pibridge.ErrReadOnly.Error())
		return
	}
	v, _, err := pibridge.ParseSetPayload(readBody(w, r))
	if err != nil {
		writeError(w, http.StatusBadRequest, pibridge.Clip(name)+": "+err.Error())
		return
	}
	d.mu.Lock()
	before := d.state[name].Seq
	d.mu.Unlock()
	if err := g.command(r.Context(), d, name, pibridge.OpSet, v, 0); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	// The echo usually follows the ack within milliseconds; answer with
	// it when it comes, else with the latest reading the gateway has.
	deadline := time.Now().Add(time.Second)
	for {
		d.mu.Lock()
		rd, had := d.state[name]
		d.mu.Unlock()
		if had && rd.Seq > before || time.Now().After(deadline) {
			if !had {
				httpx.WriteJSON(w, http.StatusOK, []byte(`{"ok":true}`))
				return
			}
			httpx.WriteJSON(w, http.StatusOK, rd.AppendJSON(nil))
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func statusOf(err error) int {
	var de *deviceError
	switch {
	case errors.Is(err, ErrUnknownDevice):
		return http.StatusNotFound
	case errors.Is(err, ErrOffline):
		return http.StatusConflict
	case errors.Is(err, ErrNoAnswer):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrNoBroker):
		return http.StatusServiceUnavailable
	case errors.As(err, &de):
		if strings.Contains(de.msg, pibridge.ErrBadValue.Error()) {
			return http.StatusBadRequest
		}
		return http.StatusConflict
	}
	if status, ok := httpx.Status(err); ok {
		return status
	}
	return http.StatusBadGateway
}

type healthReport struct {
	Status  string `json:"status"`
	MQTT    string `json:"mqtt"`
	Queue   int    `json:"queue"`
	Devices int    `json:"devices"`
	Online  int    `json:"online"`
}

func (g *Gateway) serveHealth(w http.ResponseWriter, _ *http.Request) {
	h := healthReport{Status: "ok", MQTT: "disconnected", Queue: len(g.inbox)}
	if g.Connected() {
		h.MQTT = "connected"
	}
	for _, d := range g.Devices() {
		h.Devices++
		if d.Online {
			h.Online++
		}
	}
	b, _ := json.Marshal(h)
	httpx.WriteJSON(w, http.StatusOK, b)
}

func (g *Gateway) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	var online, offline int
	for _, d := range g.Devices() {
		if d.Online {
			online++
		} else {
			offline++
		}
	}
	s := &g.stats
	var b []byte
	gauge := func(name, help string, v float64, labels string) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" gauge\n"+name+labels+" "...)
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
		b = append(b, '\n')
	}
	counter := func(name, help string, v uint64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" counter\n"+name+" "...)
		b = strconv.AppendUint(b, v, 10)
		b = append(b, '\n')
	}
	b = append(b, "# HELP pibridge_gateway_devices Devices the gateway follows, by status.\n# TYPE pibridge_gateway_devices gauge\n"...)
	b = append(b, "pibridge_gateway_devices{status=\"online\"} "+itoa(online)+"\npibridge_gateway_devices{status=\"offline\"} "+itoa(offline)+"\n"...)
	gauge("pibridge_mqtt_connected", "Whether the broker connection is up.", b2f(g.Connected()), "")
	counter("pibridge_mqtt_connects_total", "Connections made to the broker.", s.connects.Load())
	counter("pibridge_gateway_messages_total", "MQTT messages received.", s.messages.Load())
	counter("pibridge_gateway_readings_total", "Readings applied to the device table.", s.readings.Load())
	counter("pibridge_gateway_malformed_total", "Messages under the prefix that were not valid meta, status or readings.", s.junk.Load())
	counter("pibridge_gateway_dropped_total", "Messages dropped because the ingest queue stayed full.", s.dropped.Load())
	counter("pibridge_gateway_devices_refused_total", "Devices not followed because gateway.max_devices was reached.", s.overflow.Load())
	b = append(b, "# HELP pibridge_gateway_commands_total Commands forwarded, by outcome.\n# TYPE pibridge_gateway_commands_total counter\n"...)
	for i, n := range resultNames {
		b = append(b, "pibridge_gateway_commands_total{result=\""+n+"\"} "...)
		b = strconv.AppendUint(b, s.commands[i].Load(), 10)
		b = append(b, '\n')
	}
	counter("pibridge_gateway_command_rtt_microseconds_sum", "Total command round trip (publish to the device's ack).", s.rttSumMicros.Load())
	counter("pibridge_gateway_command_rtt_count", "Commands with a measured round trip.", s.rttCount.Load())
	gauge("pibridge_ws_clients", "Open WebSocket connections.", float64(g.nconns.Load()), "")
	counter("pibridge_ws_slow_clients_closed_total", "Browsers closed with 1008 because they fell behind.", s.slowClosed.Load())
	counter("pibridge_http_auth_failures_total", "Wrong tokens presented.", g.auth.failures.Load())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(b)
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// writeError answers with {"error":msg}; unlike a bridge's, the body ends
// without a newline.
func writeError(w http.ResponseWriter, code int, msg string) {
	httpx.WriteJSON(w, code, httpx.AppendError(nil, msg))
}

func readBody(w http.ResponseWriter, r *http.Request) []byte {
	b, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMessageSize))
	return b
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

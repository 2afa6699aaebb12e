package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"pibridge/internal/harness"
)

const junkConfig = embeddedHead + `outputs:
  - {name: led,   pin: GPIO22, initial: "off", safe: "off"}
  - {name: relay, pin: GPIO23, initial: "off", safe: "off"}
pwm:
  - {name: fan, pin: GPIO18, initial: 0, safe: 0}
sensors:
  - {name: air, type: bme280, address: 0x76, interval: 100ms}
`

// moved are the signals a flood must never move.
var moved = map[string]bool{"led": true, "relay": true, "fan": true}

// wsJunk are text frames that must each get one error or refused ack.
var wsJunk = []string{
	`{`, `not json`, `{"type":}`, `[]`, `null`, `"set"`, `42`, `{"type":"nope","id":"j"}`, `{"type":42}`,
	`{"type":"set"}`, `{"type":"set","name":"led"}`, `{"type":"set","name":"led","value":"maybe"}`,
	`{"type":"set","name":"led","value":2}`, `{"type":"set","name":"led","value":null}`, `{"type":"set","name":"led","value":{"on":true}}`,
	`{"type":"set","name":"air.temperature","value":1}`, `{"type":"set","name":"../../etc/passwd","value":true}`,
	`{"type":"set","name":"LED","value":true}`, `{"type":"set","name":"led/set","value":true}`,
	`{"type":"set","name":"fan","value":1.5}`, `{"type":"set","name":"fan","value":-1}`, `{"type":"set","name":"fan","value":"NaN"}`, `{"type":"set","name":"fan","value":1e999}`,
	`{"type":"pulse","name":"led","for":"-1s"}`, `{"type":"pulse","name":"led","for":"2h"}`, `{"type":"pulse","name":"led","for":"abc"}`, `{"type":"pulse","name":"led"}`,
	`{"type":"pulse","name":"fan","for":"1s"}`, `{"type":"history","name":"nope","since":"10m"}`, `{"type":"history","name":"air.temperature","since":"-5h"}`,
	`{"type":"subscribe","topics":["#"]}`, `{"type":"publish","topic":"pibridge/faults/led/set","payload":"on"}`,
	`{"type":"set","id":` + strings.Repeat("9", 1000) + `,"name":"led","value":true}`,
	strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
	`{"type":"set","name":"led","value":"` + strings.Repeat("x", 60000) + `"}`,
	`{"type":"set","id":"w1","name":"led","value":"maybe"}`, `{"type":"pulse","id":"w2","name":"fan","for":"1s"}`,
	`{"type":"set","id":"w3","name":"nope","value":true}`, `{"type":"set","id":"w4","name":"air.temperature","value":1}`,
}

// mqttJunk are /set and /pulse payloads (topic suffix, payload) that must
// each be refused.
var mqttJunk = [][2]string{
	{"led/set", "maybe"}, {"led/set", "2"}, {"led/set", "-1"}, {"led/set", "{"}, {"led/set", `{"value":"maybe","id":"j1"}`},
	{"led/set", `{"value":null,"id":"j2"}`}, {"led/set", `{"id":"j3"}`}, {"led/set", `{"value":true,"id":"j4","extra":1}`}, {"led/set", "\xff\xfe\x00on"},
	{"led/set", strings.Repeat("o", 100000)}, {"relay/set", "onn"}, {"relay/set", "yes"}, {"nope/set", "on"}, {"air/temperature/set", "1"},
	{"fan/set", "1.5"}, {"fan/set", "nan"}, {"fan/set", "inf"}, {"fan/set", "-0.1"}, {"fan/set", "toggle"},
	{"led/pulse", "abc"}, {"led/pulse", "-1s"}, {"led/pulse", "2h"}, {"led/pulse", `{"for":"x","id":"j5"}`}, {"fan/pulse", "1s"},
}

type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(k string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k]++
	c.mu.Unlock()
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

func (c *counter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, k := range sortedKeys(c.n) {
		parts = append(parts, fmt.Sprintf("%s %d", k, c.n[k]))
	}
	return strings.Join(parts, ", ")
}

// malformed is fault 5: every door flooded with malformed and oversize
// input for o.flood at once. The daemon must stay up, answer /healthz,
// keep its memory bounded, answer (count) every bad message, and never
// move an output.
func malformed(ctx context.Context, s *suite) (harness.Table, error) {
	dm, w, stop, err := watchedBridge(ctx, s, "f5", junkConfig)
	if err != nil {
		return harness.Table{}, err
	}
	defer stop()
	var movedReadings atomic.Int64
	var flooding atomic.Bool
	obs, err := observe(ctx, dm.WSURL, func(f *frame, _ []byte, _ time.Time) {
		if f.Type == "reading" && moved[f.Name] && flooding.Load() {
			movedReadings.Add(1)
		}
	})
	if err != nil {
		return harness.Table{}, err
	}
	defer obs.close()
	if err := harness.Sleep(ctx, time.Second); err != nil { // warm-up
		return harness.Table{}, err
	}
	state0, err := apiState(ctx, dm.HTTPURL)
	if err != nil {
		return harness.Table{}, err
	}
	mem0, err := harness.ReadMemory(dm.PID)
	if err != nil {
		return harness.Table{}, err
	}
	met0, err := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
	if err != nil {
		return harness.Table{}, err
	}

	fctx, stop := context.WithTimeout(ctx, s.o.flood)
	defer stop()
	flooding.Store(true)
	var g sync.WaitGroup
	var peakRSS atomic.Int64
	var healthOK, healthBad atomic.Int64
	g.Go(func() { // the watch: /healthz and RSS
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			if m, err := harness.ReadMemory(dm.PID); err == nil && m.RSS > peakRSS.Load() {
				peakRSS.Store(m.RSS)
			}
			if i%2 == 0 {
				if code, err := healthz(ctx, dm.HTTPURL, time.Second); err == nil && code == 200 {
					healthOK.Add(1)
				} else {
					healthBad.Add(1)
				}
			}
			select {
			case <-fctx.Done():
				return
			case <-t.C:
			}
		}
	})

	// WebSocket: junk text and binary frames, one reply awaited each.
	var wsSent, wsNoReply atomic.Int64
	var wsReplies counter
	var wsIDs idTally
	var wsFatal atomic.Value
	for k := range 6 {
		g.Go(func() {
			for fctx.Err() == nil {
				c, err := dialWS(fctx, dm.WSURL)
				if err != nil {
					if fctx.Err() == nil {
						wsFatal.Store(err)
					}
					return
				}
				wsJunkSession(fctx, c, k, &wsSent, &wsNoReply, &wsReplies, &wsIDs)
				c.Close()
			}
		})
	}
	// WebSocket: 1 MiB frames, text and binary, and text that is not
	// UTF-8, each on a new connection: each must end it with its close code.
	var oversize, badText counter
	big := bytes.Repeat([]byte("x"), 1<<20)
	for k := range 2 {
		g.Go(func() {
			for i := 0; fctx.Err() == nil; i++ {
				mt := websocket.TextMessage
				if (i+k)%2 == 1 {
					mt = websocket.BinaryMessage
				}
				if !closeOne(fctx, dm.WSURL, mt, big, &oversize) {
					return
				}
			}
		})
	}
	g.Go(func() {
		for fctx.Err() == nil && closeOne(fctx, dm.WSURL, websocket.TextMessage, []byte("\xff\xfe\xfd invalid utf-8"), &badText) {
		}
	})
	// MQTT: junk on /set and /pulse, retained "on" too.
	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + dm.MQTTAddr).
		SetClientID(fmt.Sprintf("faults-junk-%d", rand.Int64())).SetCleanSession(true).SetConnectTimeout(5 * time.Second))
	if err := await(ctx, pub.Connect(), "junk publisher connect"); err != nil {
		stop()
		g.Wait()
		return harness.Table{}, err
	}
	defer pub.Disconnect(100)
	var mqSent, mqWithID atomic.Int64
	var mqByTopic counter
	for k := range 2 {
		g.Go(func() {
			// mqttWindow publishes in flight at once, and now and then a
			// burst of mqttBurst: more than the bridge's command inbox
			// holds, so busy refusals are exercised too. A sustained flood
			// beyond what the bridge can answer would lose acks, counted
			// in pibridge_mqtt_acks_dropped_total: MQTT has no way to slow
			// a publisher down for one subscriber.
			const mqttWindow, mqttBurst = 8, 512
			toks := make([]paho.Token, 0, mqttBurst)
			sentJ := make([][2]string, 0, mqttBurst)
			for i, round := k, 0; fctx.Err() == nil; round++ {
				toks, sentJ = toks[:0], sentJ[:0]
				n := mqttWindow
				if round%64 == 63 {
					n = mqttBurst
				}
				for range n {
					j := mqttJunk[i%len(mqttJunk)]
					i += 2
					toks = append(toks, pub.Publish(base+"/"+j[0], 1, false, j[1]))
					sentJ = append(sentJ, j)
				}
				for n, tok := range toks {
					// Awaited on ctx, not fctx: a publish cut short at the
					// end could still reach the bridge and be answered.
					if await(ctx, tok, "junk publish") == nil {
						j := sentJ[n]
						mqSent.Add(1)
						mqByTopic.add(j[0])
						if strings.Contains(j[1], `"id":"j`) {
							mqWithID.Add(1)
						}
					}
				}
			}
		})
	}
	// HTTP: garbage requests, oversize headers, junk bodies.
	var httpCodes counter
	for k := range 4 {
		g.Go(func() {
			for i := k; fctx.Err() == nil; i += 4 {
				httpCodes.add(httpJunk(fctx, dm.HTTPURL, dm.HTTPAddr, i))
			}
		})
	}
	g.Wait()
	flooding.Store(false)
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	// The MQTT commands are answered asynchronously: wait for the acks
	// (or the dropped count) to add up, then take the figures.
	var met1 harness.Metrics
	sent := mqSent.Load()
	_ = poll(ctx, 15*time.Second, 100*time.Millisecond, "MQTT junk answered", func() (bool, error) {
		m, err := harness.Scrape(ctx, dm.HTTPURL+"/metrics")
		if err != nil {
			return false, err
		}
		met1 = m
		w.mu.Lock()
		n := int64(w.acksOK + w.acksBad)
		w.mu.Unlock()
		refused := int64(m.Sum("pibridge_commands_total", `source="mqtt"`) - met0.Sum("pibridge_commands_total", `source="mqtt"`))
		return n >= sent && refused >= sent, nil
	})
	if ctx.Err() != nil {
		return harness.Table{}, ctx.Err()
	}
	code, herr := healthz(ctx, dm.HTTPURL, 2*time.Second)
	state1, serr := apiState(ctx, dm.HTTPURL)
	var movedState []string
	for name := range moved {
		if serr != nil || state1[name].Seq != state0[name].Seq {
			movedState = append(movedState, name)
		}
	}
	w.mu.Lock()
	mqOK, mqRefused, mqAcksWithID, mqBusy := w.acksOK, w.acksBad, w.acksWithID, w.acksBusy
	var mqIDs int // distinct junk ids that came back; each was sent many times
	var lostIDs []string
	for _, id := range []string{"j1", "j2", "j3", "j4", "j5"} {
		if _, ok := w.acks[id]; ok {
			mqIDs++
		} else {
			lostIDs = append(lostIDs, id)
		}
	}
	var mqMoved int
	for _, r := range w.readings {
		if moved[r.Name] && r.Seq > state0[r.Name].Seq {
			mqMoved++
		}
	}
	w.mu.Unlock()
	mem1, _ := harness.ReadMemory(dm.PID)
	d := func(series string) float64 { return met1.Get(series) - met0.Get(series) }
	refusedMetric := func(src string) float64 {
		return met1.Sum("pibridge_commands_total", `source="`+src+`"`, `result="refused"`) - met0.Sum("pibridge_commands_total", `source="`+src+`"`, `result="refused"`)
	}
	okMetric := met1.Sum("pibridge_commands_total", `result="ok"`) - met0.Sum("pibridge_commands_total", `result="ok"`)
	mqDropped := int64(d("pibridge_mqtt_commands_dropped_total"))
	mqAcksDropped := int64(d("pibridge_mqtt_acks_dropped_total"))
	wsOK := wsReplies.get("ack ok")
	http2xx := httpCodes.get("2xx")
	http5xx := httpCodes.get("5xx")
	rssGrowth := peakRSS.Load() - mem0.RSS

	t := harness.Table{Title: fmt.Sprintf("fault 5: malformed and oversize input on every door for %s at once", s.o.flood)}
	t.Rows = append(t.Rows,
		harness.R("daemon alive, same pid", fmt.Sprint(!dm.Exited()), "true", harness.Verdict(!dm.Exited())),
		harness.R("/healthz during the flood: 200 within 1 s / not", fmt.Sprintf("%d / %d", healthOK.Load(), healthBad.Load()), "all 200", harness.Verdict(healthBad.Load() == 0 && healthOK.Load() > 0)),
		harness.R("/healthz after", fmt.Sprintf("%d %s", code, errString(herr)), "200", harness.Verdict(code == 200)),
		harness.R("RSS: before / peak / after", fmt.Sprintf("%s / %s / %s", harness.MiB(mem0.RSS), harness.MiB(peakRSS.Load()), harness.MiB(mem1.RSS)), "peak ≤ before + 64 MiB", harness.Verdict(rssGrowth <= 64<<20)),
		harness.R("outputs moved (led, relay, fan): WebSocket readings / MQTT readings / state seq changed", fmt.Sprintf("%d / %d / %v", movedReadings.Load(), mqMoved, movedState), "0 / 0 / []", harness.Verdict(movedReadings.Load() == 0 && mqMoved == 0 && len(movedState) == 0)),
		harness.R("commands carried out (pibridge_commands_total{result=\"ok\"})", fmt.Sprint(okMetric), "0", harness.Verdict(okMetric == 0)),
		harness.R("WebSocket junk frames sent / answered (error or refused ack) / unanswered", fmt.Sprintf("%d / %d / %d", wsSent.Load(), wsSent.Load()-wsNoReply.Load()-int64(wsOK), wsNoReply.Load()), "every one answered, none ok", harness.Verdict(wsNoReply.Load() == 0 && wsOK == 0 && wsSent.Load() > 0 && wsFatal.Load() == nil)),
		harness.R("WebSocket replies by kind", wsReplies.String(), "", ""),
		harness.R("WebSocket refused (metric pibridge_commands_total, source ws)", fmt.Sprint(refusedMetric("ws")), fmt.Sprintf("= refused acks (%d)", wsReplies.get("ack refused")), harness.Verdict(int(refusedMetric("ws")) == wsReplies.get("ack refused"))),
		harness.R("WebSocket 1 MiB frames: outcome", oversize.String(), "close 1009 each", harness.Verdict(oversize.get("close 1009") > 0 && oversize.get("close 1009") == sumCounter(&oversize))),
		harness.R("WebSocket text frames that are not UTF-8: outcome", badText.String(), "close 1007 each", harness.Verdict(badText.get("close 1007") > 0 && badText.get("close 1007") == sumCounter(&badText))),
		harness.R("WebSocket junk with an id (commands, unknown types): sent / answered with their id", fmt.Sprintf("%d / %d", wsIDs.sent.Load(), wsIDs.answered.Load()), "equal", harness.Verdict(wsIDs.sent.Load() > 0 && wsIDs.sent.Load() == wsIDs.answered.Load())),
		harness.R("MQTT junk published / refused acks (of which busy: queue full) / ok acks", fmt.Sprintf("%d / %d (%d) / %d", sent, mqRefused, mqBusy, mqOK), "refused = published, ok 0", harness.Verdict(mqOK == 0 && int64(mqRefused) == sent && sent > 0)),
		harness.R("MQTT junk with an id (j1…j5): published / acks with an id", fmt.Sprintf("%d / %d", mqWithID.Load(), mqAcksWithID), "equal: every command with an id answered", harness.Verdict(mqWithID.Load() > 0 && int64(mqAcksWithID) == mqWithID.Load())),
		harness.R("MQTT refused busy: pibridge_mqtt_commands_dropped_total / busy acks / busy acks not published", fmt.Sprintf("%d / %d / %d", mqDropped, mqBusy, mqAcksDropped), "dropped = busy acks, none unpublished", harness.Verdict(mqDropped == int64(mqBusy) && mqAcksDropped == 0)),
		harness.R("MQTT junk on air/temperature/set (a read-only quantity's /set topic): published", fmt.Sprint(mqByTopic.get("air/temperature/set")), "", ""),
		harness.R("MQTT junk ids (j1…j5, each sent many times) that came back in a refused ack", fmt.Sprintf("%d of 5 (%d sent with an id)", mqIDs, mqWithID.Load()), "5 (the ack carries the command's id)", harness.Verdict(mqIDs == 5)),
		harness.R("MQTT refused (metric pibridge_commands_total, source mqtt)", fmt.Sprint(refusedMetric("mqtt")), fmt.Sprintf("= refused acks (%d)", mqRefused), harness.Verdict(int(refusedMetric("mqtt")) == mqRefused)),
		harness.R("HTTP junk: responses by class", httpCodes.String(), "no 2xx, no 5xx", harness.Verdict(http2xx == 0 && http5xx == 0 && sumCounter(&httpCodes) > 0)),
		harness.R("HTTP refused (metric pibridge_commands_total, source http)", fmt.Sprint(refusedMetric("http")), "", ""),
	)
	if len(lostIDs) > 0 {
		var which []string
		for _, j := range mqttJunk {
			for _, id := range lostIDs {
				if strings.Contains(j[1], `"id":"`+id+`"`) {
					which = append(which, j[0]+" "+j[1])
				}
			}
		}
		t.Notes = append(t.Notes, fmt.Sprintf("refused without their id in the ack: %s", strings.Join(which, "; ")))
	}
	if v := wsFatal.Load(); v != nil {
		t.Notes = append(t.Notes, fmt.Sprintf("a WebSocket junk sender could not connect: %v", v))
	}
	if obs.err != nil {
		t.Notes = append(t.Notes, fmt.Sprintf("the observer's connection ended: %v", obs.err))
	}
	t.Notes = append(t.Notes,
		fmt.Sprintf("WebSocket: 6 connections cycling through %d junk text frames (bad JSON, unknown types, wrong field types, unwritable or unknown signals, out-of-range values, 20,000-deep nesting, 60 KB strings) and binary frames, one reply awaited each (5 s); 2 connections sending 1 MiB frames; 1 connection at a time sending a text frame that is not UTF-8 (closed 1007)", len(wsJunk)),
		fmt.Sprintf("MQTT: %d junk /set and /pulse payloads at QoS 1, 8 in flight per publisher and bursts of 512, none empty (an empty payload is how clearing a retained command looks: ignored without an ack by design) and none retained (MQTT 3.1.1 brokers forward a live retained publish with the retain flag cleared, so the bridge cannot tell it from a fresh command; only a stale one, delivered on subscribe, can be ignored)", len(mqttJunk)),
		"HTTP: raw garbage, a 20 KiB header, bad request lines, junk and 1 MiB bodies to POST /api/signals/…, unknown and unwritable signals, bad methods, junk history queries",
	)
	return t, nil
}

// idTally counts junk frames that carry an id and the replies that
// carry it back.
type idTally struct{ sent, answered atomic.Int64 }

func sumCounter(c *counter) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

// wsJunkSession sends junk on c, one reply awaited each, until ctx ends
// or the connection does.
func wsJunkSession(ctx context.Context, c *websocket.Conn, k int, sent, noReply *atomic.Int64, replies *counter, ids *idTally) {
	if _, _, err := c.ReadMessage(); err != nil { // the hello
		return
	}
	for i := k; ctx.Err() == nil; i++ {
		mt, msg := websocket.TextMessage, []byte(wsJunk[i%len(wsJunk)])
		if i%7 == 0 {
			mt, msg = websocket.BinaryMessage, []byte(`{"type":"set","name":"led","value":true}`)
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(mt, msg); err != nil {
			return
		}
		sent.Add(1)
		id := ""
		if mt == websocket.TextMessage {
			var probe struct{ ID string }
			if json.Unmarshal(msg, &probe) == nil {
				id = probe.ID
			}
		}
		if id != "" {
			ids.sent.Add(1)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				noReply.Add(1)
				replies.add("connection ended: " + closeText(err))
				return
			}
			var f frame
			if err := json.Unmarshal(b, &f); err != nil {
				replies.add("unreadable")
				break
			}
			if f.Type == "reading" {
				continue
			}
			if id != "" && f.ID == id {
				ids.answered.Add(1)
			}
			switch {
			case f.Type == "ack" && f.OK:
				replies.add("ack ok")
			case f.Type == "ack":
				replies.add("ack refused")
			default:
				replies.add(f.Type)
			}
			break
		}
	}
}

func closeText(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close %d", ce.Code)
	}
	return "no close frame"
}

// httpJunk sends the i-th kind of junk and returns the response's class.
func httpJunk(ctx context.Context, url, addr string, i int) string {
	switch i % 10 {
	case 0:
		return rawHTTP(addr, "\x00\x01\x02garbage\r\n\r\n")
	case 1:
		return rawHTTP(addr, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "+strings.Repeat("a", 20<<10)+"\r\n\r\n")
	case 2:
		return rawHTTP(addr, "GET /healthz HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n")
	case 3:
		return rawHTTP(addr, "POST /api/signals/led HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\non")
	case 4:
		return rawHTTP(addr, "GET /../../etc/passwd HTTP/1.1\r\nHost: evil.example\r\n\r\n")
	}
	var method, path, body string
	switch i % 10 {
	case 5:
		method, path, body = "POST", "/api/signals/led", []string{"maybe", "2", "{", `{"value":"x"}`, "", "\xff\xfe"}[i/10%6]
	case 6:
		method, path, body = "POST", "/api/signals/led", strings.Repeat("o", 1<<20)
	case 7:
		method, path, body = "POST", []string{"/api/signals/nope", "/api/signals/air.temperature", "/api/signals/..%2f..%2fetc", "/api/signals/fan"}[i/10%4], "1.5"
	case 8:
		method, path = []string{"PUT", "DELETE", "PATCH"}[i/10%3], "/api/signals/led"
		body = "on"
	default:
		method, path = "GET", []string{"/api/history?name=%00&since=junk", "/api/history?name=air.temperature&since=-1h", "/api/history", "/api/history?name=air.temperature&since=" + strings.Repeat("9", 100)}[i/10%4]
	}
	req, err := http.NewRequestWithContext(ctx, method, url+path, strings.NewReader(body))
	if err != nil {
		return "request error"
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "cut short"
		}
		return "transport error"
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return fmt.Sprintf("%dxx", resp.StatusCode/100)
}

// rawHTTP writes req on a new connection and returns the class of the
// status line, or what happened instead.
func rawHTTP(addr, req string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "dial error"
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "write error"
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "closed without a response"
	}
	f := strings.Fields(line)
	if len(f) < 2 || len(f[1]) != 3 {
		return "unreadable response"
	}
	if f[1] == "505" {
		return "505 (to HTTP/9.9)"
	}
	return f[1][:1] + "xx"
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// clipErr keeps an error short enough for a table cell.
func clipErr(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

// closeOne sends one frame on a new connection and counts how the server
// ended it; false when the connection could not be made.
func closeOne(ctx context.Context, url string, mt int, payload []byte, outcome *counter) bool {
	c, err := dialWS(ctx, url)
	if err != nil {
		if ctx.Err() == nil {
			outcome.add("dial error: " + clipErr(err))
		}
		return false
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.WriteMessage(mt, payload) // the server may close before it has all
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue // the hello
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			outcome.add(fmt.Sprintf("close %d", ce.Code))
		} else {
			outcome.add("no close frame")
		}
		return true
	}
}

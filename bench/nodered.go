package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"pibridge/internal/harness"
)

// Node-RED as the bridge's peer: the flow a Node-RED user would draw for
// the same job. Flow A: mqtt in (lab/#) → websocket out (/ws/lab); flow
// B, commands: websocket in (/ws/cmd) → mqtt out (lab/cmd). The editor
// and admin API are off (httpAdminRoot false); the flow runtime is not.

var errPortTaken = errors.New("port taken before the peer could bind it")

// spawnNodeRED starts Node-RED on a free port and waits until its flows
// have started.
func (e peerEnv) spawnNodeRED(ctx context.Context, red, userDir string, attempt int) (string, *proc, error) {
	addr, err := harness.FreePort()
	if err != nil {
		return "", nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	settings := filepath.Join(userDir, "settings.js")
	if err := os.WriteFile(settings, fmt.Appendf(nil, nodeREDSettings, port, userDir), 0o644); err != nil {
		return "", nil, err
	}
	p, err := spawn(e.d.Pin, []string{"node", red, "--settings", settings, "--userDir", userDir},
		[]string{"NODE_ENV=production"}, filepath.Join(userDir, fmt.Sprintf("node-red-%d.log", attempt)))
	if err != nil {
		return "", nil, err
	}
	// Ready once the log says the flows started and then the server
	// listens (red.js: RED.start(), then listen); a port clash is logged
	// ("Unable to listen") and Node-RED carries on without a server.
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(p.log)
		switch {
		case bytes.Contains(b, []byte("Unable to listen")):
			p.stop()
			return "", nil, fmt.Errorf("%s: %w", addr, errPortTaken)
		case bytes.Contains(b, []byte("Started flows")) && bytes.Contains(b, []byte("Server now running at")):
			return addr, p, nil
		}
		select {
		case <-p.done:
			return "", nil, fmt.Errorf("exited before its flows started; log: %s", harness.Tail(p.log))
		case <-ctx.Done():
			p.stop()
			return "", nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return "", nil, fmt.Errorf("flows not started after 60 s; log: %s", harness.Tail(p.log))
		}
	}
}

// nodeREDInstalled returns the version of node-red under prefix.
func nodeREDInstalled(prefix string) (string, error) {
	b, err := os.ReadFile(filepath.Join(prefix, "node_modules", "node-red", "package.json"))
	if err != nil {
		return "", err
	}
	var p struct{ Version string }
	if err := json.Unmarshal(b, &p); err != nil {
		return "", err
	}
	return p.Version, nil
}

const nodeREDSettings = `module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %s,
    httpAdminRoot: false,
    userDir: %q,
    flowFile: "flows.json",
    credentialSecret: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
    telemetry: { enabled: false },
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    editorTheme: { projects: { enabled: false } }
};
`

func nodeREDFlows(brokerHost, brokerPort string) ([]byte, error) {
	flows := []map[string]any{
		{"id": "tab", "type": "tab", "label": "bench"},
		{"id": "broker", "type": "mqtt-broker", "name": "mosquitto", "broker": brokerHost, "port": brokerPort,
			"clientid": "nodered-bench", "autoConnect": true, "usetls": false, "protocolVersion": "4",
			"keepalive": "60", "cleansession": true},
		// Flow A: MQTT in → WebSocket out.
		{"id": "mqttin", "type": "mqtt in", "z": "tab", "name": "lab", "topic": "lab/#", "qos": "0",
			"datatype": "utf8", "broker": "broker", "nl": false, "rap": true, "rh": 0, "inputs": 0,
			"wires": []any{[]any{"wsout"}}},
		{"id": "labws", "type": "websocket-listener", "path": "/ws/lab", "wholemsg": "false"},
		{"id": "wsout", "type": "websocket out", "z": "tab", "name": "", "server": "labws", "client": "", "wires": []any{}},
		// Flow B: commands, WebSocket in → MQTT out.
		{"id": "cmdws", "type": "websocket-listener", "path": "/ws/cmd", "wholemsg": "false"},
		{"id": "wsin", "type": "websocket in", "z": "tab", "name": "", "server": "cmdws", "client": "",
			"wires": []any{[]any{"mqttout"}}},
		{"id": "mqttout", "type": "mqtt out", "z": "tab", "name": "", "topic": "lab/cmd", "qos": "0",
			"retain": "false", "broker": "broker", "wires": []any{}},
	}
	return json.MarshalIndent(flows, "", "  ")
}

// startNodeRED runs Node-RED pinned to the daemon's cores with its own
// userDir, fed by a fresh mosquitto, and returns once its WebSocket path
// accepts connections.
func (e peerEnv) startNodeRED(ctx context.Context, tag string) (*subject, error) {
	v, err := nodeREDInstalled(e.o.nodeRED)
	if err != nil {
		return nil, fmt.Errorf("Node-RED not installed under %s (make bench installs it): %w", e.o.nodeRED, err)
	}
	userDir, err := os.MkdirTemp(e.scratch, tag+"-nodered-")
	if err != nil {
		return nil, err
	}
	m, err := e.broker(userDir)
	if err != nil {
		return nil, err
	}
	s := &subject{name: "Node-RED " + v, pubAddr: m.Addr, stops: []func(){m.Stop}}
	fail := func(err error) (*subject, error) { s.stop(); return nil, fmt.Errorf("Node-RED: %w", err) }
	red, err := filepath.Abs(filepath.Join(e.o.nodeRED, "node_modules", "node-red", "red.js"))
	if err != nil {
		return fail(err)
	}
	host, bport, _ := net.SplitHostPort(m.Addr)
	flows, err := nodeREDFlows(host, bport)
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(userDir, "flows.json"), flows, 0o644); err != nil {
		return fail(err)
	}
	// A free port can be taken before Node-RED binds it (the machine is
	// shared; clients take ephemeral ports): then it tries another.
	var addr string
	for attempt := 1; ; attempt++ {
		var p *proc
		addr, p, err = e.spawnNodeRED(ctx, red, userDir, attempt)
		if err == nil {
			s.pid, s.logPath = p.cmd.Process.Pid, p.log
			s.stops = append(s.stops, p.stop)
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			return fail(err)
		}
	}
	url := "ws://" + addr + "/ws/lab"
	s.dial = func(ctx context.Context, _ int) (receiver, error) { return dialNodeRED(ctx, url) }
	s.dialIdle = func(ctx context.Context, _ int) (io.Closer, error) {
		r, err := dialNodeRED(ctx, url)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	return s, nil
}

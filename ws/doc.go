// Package ws serves the browser-facing live API: the /ws WebSocket, the
// REST endpoints beside it, and the login that protects both.
//
// One Server subscribes to the core once. Each reading is framed once and
// the frame dropped into every client's mailbox, where the newest reading
// per signal replaces an older one still waiting, so a client that falls
// behind gets current values, never a stale backlog, and never slows the
// others. A connection has at most one writer goroutine, running only while
// its mailbox holds something, which sends all of it in one write;
// replies (acks, history, errors) and MQTT passthrough messages are never
// coalesced, keep their order and are bounded: a client that overflows
// them, or cannot take a frame within the write deadline, is closed with
// 1008 and counted (SlowClosed).
//
// Every /ws and /api/* request passes the same guard: the Host header must
// name this machine (DNS-rebinding defence, else 421), a browser Origin must
// be the page's own or listed (else 403), no token may ride in the URL
// (else 400), and when a token is configured or generated the request must
// prove it: Authorization: Bearer, the session cookie of POST /api/login,
// or — on /ws, where browsers cannot set headers — a first frame
// {"type":"auth","token":…} (else 401, or close 4401). Wrong tokens are
// counted per address, which then waits longer and longer (429, close
// 4429). The read_token sees everything and commands nothing. Protect
// puts the Host check in front of every other route too, and with
// http.tls redirects plain HTTP to https; Listen serves both on one port.
//
// The MQTT passthrough (subscribe, unsubscribe, publish) reaches the broker
// through a Passthrough that cmd/bridge wires in, for topic filters inside
// mqtt.bridge_allow only.
package ws

// Package ws serves the browser-facing live API: the /ws WebSocket and the
// REST endpoints beside it.
//
// One Server subscribes to the core once. Each reading is encoded once into
// a websocket.PreparedMessage and dropped into every client's mailbox, where
// the newest reading per signal replaces an older one still waiting, so a
// client that falls behind gets current values, never a stale backlog, and
// never slows the others. Each connection has exactly one writer goroutine;
// replies (acks, history, errors) are never coalesced, keep their order and
// are bounded: a client that overflows them, or cannot take a frame within
// the write deadline, is closed with 1008 and counted (SlowClosed).
//
// Every /ws and /api/* request passes the same guard: the Host header must
// name this machine (DNS-rebinding defence, else 421), a browser Origin must
// be the page's own or listed (else 403), and a configured token must come
// as Authorization: Bearer (else 401).
package ws

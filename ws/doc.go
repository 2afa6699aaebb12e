// Package ws serves the browser-facing live API: the /ws WebSocket, the
// REST endpoints beside it, and the login that protects both (README:
// WebSocket protocol, HTTP). Each client has a mailbox where the newest
// reading per signal wins, so a slow client never slows the others.
package ws

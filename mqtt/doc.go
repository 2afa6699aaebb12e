// Package mqtt publishes readings to an MQTT broker and takes commands from it;
// it can also embed a broker.
//
// A Client is the core's journal (pibridge.Journal): the core hands it
// every reading from a goroutine of its own, and it keeps them in an
// Outbox until the broker has acknowledged them: a DiskOutbox in state_dir (bbolt,
// group commit every 100 ms) so that they survive outages, restarts and
// crashes, or one in memory. One publisher goroutine sends them, retained,
// in seq order, with at most 20 awaiting their PUBACK; on a failure or a
// new connection it resends from the first unconfirmed reading. Delivery
// is at least once and in seq order of first arrival: after a failure
// some readings can arrive a second time (same seq). A reading counts as
// confirmed only when its token completed on the connection it was sent
// on: across a reconnect paho reports a resent message as done before the
// broker's PUBACK (paho #563), and the outbox must not let it go then.
//
// Commands arrive on P/D/<name>/set and P/D/<name>/pulse (subscribed at
// QoS 0, so the broker keeps none for an absent bridge), are copied by
// paho's handler into a bounded channel, executed one at a time in
// arrival order by a worker, and answered on P/D/ack. Retained commands
// are refused.
//
// The Client reconnects itself (connectLoop) instead of using paho's
// automatic reconnect; see there for why.
package mqtt

// Package mqtt publishes readings to an MQTT broker and takes commands from it;
// it can also embed a broker.
//
// A Client subscribes to the core's readings and keeps them in an Outbox
// until the broker has acknowledged them. One publisher goroutine sends
// them, retained, in seq order, with at most 20 awaiting their PUBACK; on
// a failure it resends from the first unconfirmed reading. Delivery is at
// least once and in seq order: after a failure some readings can arrive a
// second time (same seq). A reading counts as confirmed when paho says so;
// across a reconnect paho reports a resent message as done before the
// broker's PUBACK (paho #563), so a crash at that moment can lose up to 20
// readings that the outbox had already let go.
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

// Package mqtt publishes readings to an MQTT broker, in seq order and at
// least once through an outbox that survives restarts, takes commands
// from it (README: MQTT topics), and can embed a broker.
package mqtt

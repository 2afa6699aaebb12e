// Package pibridge is the vocabulary and the core of the bridge: signals,
// readings and commands, the value forms every door (MQTT, WebSocket, HTTP)
// accepts, the latest state, the history ring and the fan-out to subscribers.
//
// The adapters (gpio, mqtt, ws) import this package and never each other;
// cmd/bridge wires them together.
package pibridge

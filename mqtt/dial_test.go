package mqtt

import (
	"net"
	"testing"
)

// TestConnectOverWebSocket: the client opens paho's connections itself
// (dial.go); a ws:// broker works as with paho's own opener.
func TestConnectOverWebSocket(t *testing.T) {
	wsAddr := freeAddr(t)
	_, port, _ := net.SplitHostPort(wsAddr)
	runMosquitto(t, mosquittoOptions{extra: "listener " + port + "\nprotocol websockets\n"})
	core, _ := newCore(t)
	c, _ := startClient(t, core, "ws://"+wsAddr+"/mqtt", nil)
	eventually(t, "connected over ws://", c.Connected)
}

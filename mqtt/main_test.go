package mqtt

import (
	"log"
	"os"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestMain lets a developer see paho's own log: PAHO_LOG=/tmp/paho.log.
// With PIBRIDGE_MQTT_HELPER=bridge the test binary is a bridge for
// TestBridgeKilled instead.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "bridge" {
		os.Exit(helperBridge())
	}
	if path := os.Getenv("PAHO_LOG"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			log.Fatal(err)
		}
		l := log.New(f, "", log.Lmicroseconds)
		paho.ERROR, paho.CRITICAL, paho.WARN, paho.DEBUG = l, l, l, l
	}
	os.Exit(m.Run())
}

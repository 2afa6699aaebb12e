package harness

import "pibridge/internal/testkit"

// The benchmarks and the fault suite start mosquitto as the tests do.
type (
	Mosquitto        = testkit.Mosquitto
	MosquittoOptions = testkit.MosquittoOptions
)

// StartMosquitto is testkit.StartMosquitto.
var StartMosquitto = testkit.StartMosquitto

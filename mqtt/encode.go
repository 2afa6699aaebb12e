package mqtt

import (
	pibridge "pibridge"
)

// metaJSON is the retained payload of P/D/meta: the hello without state,
// from the same encoder as the hello so the two cannot drift apart.
func metaJSON(d pibridge.Device, signals []pibridge.Signal, run pibridge.RunInfo, clock pibridge.ClockState) []byte {
	b := pibridge.AppendDescription([]byte("{"), d, signals)
	b = pibridge.AppendRunJSON(append(b, ','), run)
	return append(pibridge.AppendClock(append(b, ','), clock), '}')
}

// ackJSON is the payload of P/D/ack: {"id":…,"name":…,"ok":true} or
// {…,"ok":false,"error":…}; id is left out when the command had none.
func ackJSON(id, name string, err error) []byte {
	b := make([]byte, 0, 64)
	b = append(b, '{')
	if id != "" {
		b = append(b, `"id":`...)
		b = pibridge.AppendJSONString(b, id)
		b = append(b, ',')
	}
	b = append(b, `"name":`...)
	b = pibridge.AppendJSONString(b, name)
	if err == nil {
		return append(b, `,"ok":true}`...)
	}
	b = append(b, `,"ok":false,"error":`...)
	b = pibridge.AppendJSONString(b, err.Error())
	return append(b, '}')
}

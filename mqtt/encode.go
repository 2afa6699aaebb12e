package mqtt

import (
	pibridge "pibridge"
)

// AppendSignalsJSON appends the signal list in the shape of the WebSocket
// hello (SPEC §5), which P/D/meta repeats:
// [{"name":"air.temperature","kind":"sensor","unit":"°C","writable":false},
// {"name":"fan","kind":"pwm","writable":true,"min":0,"max":1}].
//
// It belongs in the root package, next to Reading.AppendJSON, so that ws
// can share it; it lives here until it moves.
func AppendSignalsJSON(b []byte, signals []pibridge.Signal) []byte {
	b = append(b, '[')
	for i, s := range signals {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = pibridge.AppendJSONString(b, s.Name)
		b = append(b, `,"kind":`...)
		b = pibridge.AppendJSONString(b, s.Kind.String())
		if s.Unit != "" {
			b = append(b, `,"unit":`...)
			b = pibridge.AppendJSONString(b, s.Unit)
		}
		if s.Kind.Writable() {
			b = append(b, `,"writable":true`...)
		} else {
			b = append(b, `,"writable":false`...)
		}
		if s.Kind == pibridge.KindPWM {
			b = append(b, `,"min":0,"max":1`...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendDeviceJSON appends {"id":…,"name":…,"version":…}.
func appendDeviceJSON(b []byte, d pibridge.Device) []byte {
	b = append(b, `{"id":`...)
	b = pibridge.AppendJSONString(b, d.ID)
	b = append(b, `,"name":`...)
	b = pibridge.AppendJSONString(b, d.Name)
	b = append(b, `,"version":`...)
	b = pibridge.AppendJSONString(b, d.Version)
	return append(b, '}')
}

// metaJSON is the retained payload of P/D/meta: the hello without state.
func metaJSON(d pibridge.Device, signals []pibridge.Signal) []byte {
	b := append([]byte(nil), `{"device":`...)
	b = appendDeviceJSON(b, d)
	b = append(b, `,"signals":`...)
	b = AppendSignalsJSON(b, signals)
	return append(b, '}')
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

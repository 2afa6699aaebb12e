package pibridge

import "strconv"

// AppendDescription appends `"device":{…},"signals":[…]`: the part of the
// WebSocket hello, GET /api/state and the MQTT meta topic that describes
// the device. One encoder keeps the three identical (README: MQTT topics).
func AppendDescription(b []byte, d Device, signals []Signal) []byte {
	b = append(b, `"device":{"id":`...)
	b = AppendJSONString(b, d.ID)
	b = append(b, `,"name":`...)
	b = AppendJSONString(b, d.Name)
	b = append(b, `,"version":`...)
	b = AppendJSONString(b, d.Version)
	b = append(b, `},"signals":[`...)
	for i, s := range signals {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = AppendJSONString(b, s.Name)
		b = append(b, `,"kind":`...)
		b = AppendJSONString(b, s.Kind.String())
		if s.Unit != "" {
			b = append(b, `,"unit":`...)
			b = AppendJSONString(b, s.Unit)
		}
		b = append(b, `,"writable":`...)
		b = strconv.AppendBool(b, s.Kind.Writable())
		if s.Pulse > 0 {
			b = append(b, `,"pulse":`...)
			b = AppendJSONString(b, s.Pulse.String())
		}
		if s.Kind == KindPWM {
			b = append(b, `,"min":0,"max":1`...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

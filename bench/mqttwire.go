package main

// A minimal MQTT 3.1.1 client codec for the load generator: CONNECT,
// SUBSCRIBE and QoS 0 PUBLISH out, CONNACK, SUBACK and PUBLISH in. paho
// would do, but a client per connection with its goroutines and stores
// would weigh more than the brokers measured against it at 10,000
// connections, and its per-publish token caps the publisher's rate.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

const (
	pktConnect   = 1
	pktConnack   = 2
	pktPublish   = 3
	pktSubscribe = 8
	pktSuback    = 9
	pktPingresp  = 13
)

func appendRemaining(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func appendMQTTString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// mqttConnect is a CONNECT with a clean session and a 10-minute
// keep-alive (no pings needed within a scenario).
func mqttConnect(clientID string) []byte {
	n := 10 + 2 + len(clientID)
	b := appendRemaining([]byte{pktConnect << 4}, n)
	b = appendMQTTString(b, "MQTT")
	b = append(b, 4, 0x02, 0x02, 0x58) // level 4, clean session, keep-alive 600 s
	return appendMQTTString(b, clientID)
}

// mqttSubscribe subscribes to filter at QoS 0 with packet id 1.
func mqttSubscribe(filter string) []byte {
	b := appendRemaining([]byte{pktSubscribe<<4 | 0x02}, 2+2+len(filter)+1)
	b = append(b, 0, 1)
	b = appendMQTTString(b, filter)
	return append(b, 0)
}

// appendPublish appends a QoS 0 PUBLISH.
func appendPublish(b []byte, topic string, payload []byte) []byte {
	b = appendRemaining(append(b, pktPublish<<4), 2+len(topic)+len(payload))
	b = appendMQTTString(b, topic)
	return append(b, payload...)
}

// mqttReader splits a byte stream into MQTT packets.
type mqttReader struct {
	r   *bufio.Reader
	buf []byte
}

// next returns the next packet's type and body; body is valid until the
// next call.
func (m *mqttReader) next() (byte, []byte, error) {
	h, err := m.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		c, err := m.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(c&0x7f) * mult
		if c&0x80 == 0 {
			break
		}
		if mult *= 128; i == 3 {
			return 0, nil, errors.New("mqtt: malformed remaining length")
		}
	}
	if cap(m.buf) < n {
		m.buf = make([]byte, n)
	}
	m.buf = m.buf[:n]
	if _, err := io.ReadFull(m.r, m.buf); err != nil {
		return 0, nil, err
	}
	return h >> 4, m.buf, nil
}

// publishPayload returns a PUBLISH body's payload. Every subscription
// here is QoS 0, so the broker sends QoS 0: no packet id.
func publishPayload(body []byte) ([]byte, error) {
	if len(body) < 2 {
		return nil, errors.New("mqtt: short PUBLISH")
	}
	i := 2 + (int(body[0])<<8 | int(body[1]))
	if i > len(body) {
		return nil, errors.New("mqtt: PUBLISH topic past its end")
	}
	return body[i:], nil
}

// expect reads packets until one of type want, failing on anything but
// PUBLISH or PINGRESP in between.
func (m *mqttReader) expect(want byte) ([]byte, error) {
	for {
		t, body, err := m.next()
		if err != nil {
			return nil, err
		}
		switch t {
		case want:
			if want == pktConnack && (len(body) < 2 || body[1] != 0) {
				return nil, fmt.Errorf("mqtt: CONNACK refused (%x)", body)
			}
			if want == pktSuback && (len(body) < 3 || body[2] == 0x80) {
				return nil, fmt.Errorf("mqtt: SUBACK refused (%x)", body)
			}
			return body, nil
		case pktPublish, pktPingresp:
		default:
			return nil, fmt.Errorf("mqtt: packet type %d while waiting for %d", t, want)
		}
	}
}

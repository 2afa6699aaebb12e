package ws

import "encoding/binary"

// Server frames are framed here, not by gorilla: a reading is framed once
// for every client (gorilla's PreparedMessage costs 5.8 KB in 9 pieces per
// message), and a client's writer sends everything its mailbox holds in one
// write instead of one syscall per frame. Server frames are never masked,
// never fragmented and never compressed, so a frame is a 2-, 4- or 10-byte
// header and the payload.

// maxFrameHeader is the longest server frame header (64-bit length).
const maxFrameHeader = 10

const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xa
	finBit  = 0x80
)

// newFrame returns a frame to append a payload to: it starts with room for
// the header, which seal fills in once the length is known, so a message is
// built and framed in one allocation.
func newFrame(payloadCap int) []byte {
	return make([]byte, maxFrameHeader, maxFrameHeader+payloadCap)
}

// seal writes the header of a frame made by newFrame (payload appended) and
// returns the frame.
func seal(b []byte, op byte) []byte {
	n := len(b) - maxFrameHeader
	var f []byte
	switch {
	case n < 126:
		f = b[maxFrameHeader-2:]
		f[1] = byte(n)
	case n <= 0xffff:
		f = b[maxFrameHeader-4:]
		f[1] = 126
		binary.BigEndian.PutUint16(f[2:], uint16(n))
	default:
		f = b[:]
		f[1] = 127
		binary.BigEndian.PutUint64(f[2:], uint64(n))
	}
	f[0] = finBit | op
	return f
}

// textFrame seals a text frame made by newFrame.
func textFrame(b []byte) []byte { return seal(b, opText) }

// controlFrame frames a ping or pong; data is at most 125 bytes (gorilla
// enforces that for what it reads).
func controlFrame(op byte, data string) []byte {
	b := make([]byte, 2, 2+len(data))
	b[0] = finBit | op
	b[1] = byte(len(data))
	return append(b, data...)
}

// pingFrame is an empty ping; shared, never written to.
var pingFrame = controlFrame(opPing, "")

// framePayload returns the payload of a frame made by seal: for tests and
// for the few places that need the message back.
func framePayload(f []byte) []byte {
	switch f[1] & 0x7f {
	case 126:
		return f[4:]
	case 127:
		return f[10:]
	}
	return f[2:]
}

package stream

import (
	"encoding/binary"
	"errors"
)

// Packet layout (big endian), padded with zeros to the configured size:
//
//	0..3    magic "MWS1"
//	4..7    stream id
//	8..15   sequence number, from 0
//	16..23  send time, Unix nanoseconds
const (
	HeaderLen = 24
	magic     = "MWS1"
)

// Packet is the decoded header of one stream packet.
type Packet struct {
	ID   uint32
	Seq  uint64
	Sent int64 // Unix nanoseconds
}

var errNotStream = errors.New("stream: not a stream packet")

// Encode writes p's header into buf (len(buf) >= HeaderLen) and zeroes the
// rest of it.
func (p Packet) Encode(buf []byte) {
	copy(buf, magic)
	binary.BigEndian.PutUint32(buf[4:], p.ID)
	binary.BigEndian.PutUint64(buf[8:], p.Seq)
	binary.BigEndian.PutUint64(buf[16:], uint64(p.Sent))
	clear(buf[HeaderLen:])
}

// Decode parses a packet's header.
func Decode(b []byte) (Packet, error) {
	if len(b) < HeaderLen || string(b[:4]) != magic {
		return Packet{}, errNotStream
	}
	return Packet{
		ID:   binary.BigEndian.Uint32(b[4:]),
		Seq:  binary.BigEndian.Uint64(b[8:]),
		Sent: int64(binary.BigEndian.Uint64(b[16:])),
	}, nil
}

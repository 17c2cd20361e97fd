package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format, all integers big-endian, fixed length PacketLen (48 bytes):
//
//	0  magic "MWP1"
//	4  type (1 = request, 2 = reply)
//	5  3 reserved bytes, must be zero
//	8  session id (uint64): chosen by the prober per tunnel instance, so
//	   replies to an earlier session of the same tunnel are not matched
//	16 sequence (uint64)
//	24 sender transmit timestamp (int64 ns on the sender's monotonic clock)
//	32 reflector receive timestamp (int64 ns on the reflector's clock)
//	40 reflector transmit timestamp (int64 ns on the reflector's clock)
//
// Requests and replies have the same length, so a reflector never
// amplifies; a request must carry zero reflector timestamps. Only the
// difference of the two reflector timestamps is used (the reflector's
// processing time), so the two clocks need not agree.

// PacketLen is the length of every probe packet.
const PacketLen = 48

// Magic starts every probe packet.
const Magic = "MWP1"

// Type is the packet type.
type Type uint8

// Packet types.
const (
	TypeRequest Type = 1
	TypeReply   Type = 2
)

func (t Type) String() string {
	switch t {
	case TypeRequest:
		return "request"
	case TypeReply:
		return "reply"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Packet is a decoded probe packet.
type Packet struct {
	Type      Type
	Session   uint64
	Seq       uint64
	SenderTx  int64 // ns, sender's clock
	ReflectRx int64 // ns, reflector's clock; zero in requests
	ReflectTx int64 // ns, reflector's clock; zero in requests
}

// Errors returned by Unmarshal and Marshal, wrapped with detail.
var (
	ErrLength = errors.New("probe: bad packet length")
	ErrMagic  = errors.New("probe: bad magic")
	ErrType   = errors.New("probe: bad packet type")
	ErrFormat = errors.New("probe: malformed packet")
)

// Validate reports whether p can be put on the wire.
func (p Packet) Validate() error {
	switch p.Type {
	case TypeRequest:
		if p.ReflectRx != 0 || p.ReflectTx != 0 {
			return fmt.Errorf("%w: request with reflector timestamps", ErrFormat)
		}
	case TypeReply:
	default:
		return fmt.Errorf("%w: %d", ErrType, uint8(p.Type))
	}
	return nil
}

// Marshal appends the wire form of p to b.
func (p Packet) Marshal(b []byte) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return b, err
	}
	b = append(b, Magic...)
	b = append(b, byte(p.Type), 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, p.Session)
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(p.SenderTx))
	b = binary.BigEndian.AppendUint64(b, uint64(p.ReflectRx))
	b = binary.BigEndian.AppendUint64(b, uint64(p.ReflectTx))
	return b, nil
}

// Unmarshal decodes b strictly: exact length, magic, known type, zero
// reserved bytes, and zero reflector timestamps in a request. Every
// accepted b is the canonical encoding of the returned packet.
func Unmarshal(b []byte) (Packet, error) {
	if len(b) != PacketLen {
		return Packet{}, fmt.Errorf("%w: %d bytes, want %d", ErrLength, len(b), PacketLen)
	}
	if string(b[:4]) != Magic {
		return Packet{}, fmt.Errorf("%w: %q", ErrMagic, b[:4])
	}
	if b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return Packet{}, fmt.Errorf("%w: reserved bytes set", ErrFormat)
	}
	p := Packet{
		Type:      Type(b[4]),
		Session:   binary.BigEndian.Uint64(b[8:]),
		Seq:       binary.BigEndian.Uint64(b[16:]),
		SenderTx:  int64(binary.BigEndian.Uint64(b[24:])),
		ReflectRx: int64(binary.BigEndian.Uint64(b[32:])),
		ReflectTx: int64(binary.BigEndian.Uint64(b[40:])),
	}
	if err := p.Validate(); err != nil {
		return Packet{}, err
	}
	return p, nil
}

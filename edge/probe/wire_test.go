package probe

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func mustMarshal(t testing.TB, p Packet) []byte {
	t.Helper()
	b, err := p.Marshal(nil)
	if err != nil {
		t.Fatalf("Marshal(%+v): %v", p, err)
	}
	return b
}

func TestWireRoundTrip(t *testing.T) {
	for _, p := range []Packet{
		{Type: TypeRequest},
		{Type: TypeRequest, Session: 1, Seq: 2, SenderTx: 3},
		{Type: TypeReply, Session: ^uint64(0), Seq: ^uint64(0), SenderTx: -1, ReflectRx: 1 << 62, ReflectTx: -(1 << 63)},
	} {
		b := mustMarshal(t, p)
		if len(b) != PacketLen {
			t.Errorf("%+v: %d bytes", p, len(b))
		}
		got, err := Unmarshal(b)
		if err != nil || got != p {
			t.Errorf("Unmarshal(Marshal(%+v)) = %+v, %v", p, got, err)
		}
	}
}

// TestWireLayout pins the byte layout so a change to it is deliberate.
func TestWireLayout(t *testing.T) {
	b := mustMarshal(t, Packet{Type: TypeReply, Session: 0x0102030405060708, Seq: 9, SenderTx: 10, ReflectRx: 11, ReflectTx: 12})
	want := "4d57503102000000" + "0102030405060708" + "0000000000000009" + "000000000000000a" + "000000000000000b" + "000000000000000c"
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("layout\n got %s\nwant %s", got, want)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	good := mustMarshal(t, Packet{Type: TypeReply, Session: 1, Seq: 2, SenderTx: 3, ReflectRx: 4, ReflectTx: 5})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrLength},
		{"short", good[:PacketLen-1], ErrLength},
		{"long", append(bytes.Clone(good), 0), ErrLength},
		{"magic", mod(func(b []byte) []byte { b[3] = '2'; return b }), ErrMagic},
		{"type 0", mod(func(b []byte) []byte { b[4] = 0; return b }), ErrType},
		{"type 3", mod(func(b []byte) []byte { b[4] = 3; return b }), ErrType},
		{"reserved", mod(func(b []byte) []byte { b[7] = 1; return b }), ErrFormat},
		{"request with reflector rx", mod(func(b []byte) []byte { b[4] = 1; return b }), ErrFormat},
	} {
		if _, err := Unmarshal(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := (Packet{Type: 7}).Marshal(nil); !errors.Is(err, ErrType) {
		t.Errorf("Marshal type 7: %v", err)
	}
	if _, err := (Packet{Type: TypeRequest, ReflectTx: 1}).Marshal(nil); !errors.Is(err, ErrFormat) {
		t.Errorf("Marshal request with reflector tx: %v", err)
	}
}

// FuzzUnmarshal: Unmarshal never panics; whatever it accepts re-encodes to
// the same bytes (the encoding is canonical); and a packet built from the
// fuzzed integers round-trips when valid.
func FuzzUnmarshal(f *testing.F) {
	f.Add(mustMarshal(f, Packet{Type: TypeRequest, Session: 1, Seq: 2, SenderTx: 3}), uint8(1), uint64(1), uint64(2), int64(3), int64(0), int64(0))
	f.Add(mustMarshal(f, Packet{Type: TypeReply, Session: 1, Seq: 2, SenderTx: 3, ReflectRx: 4, ReflectTx: 5}), uint8(2), uint64(0), uint64(0), int64(-1), int64(4), int64(5))
	f.Add([]byte("MWP1"), uint8(0), uint64(0), uint64(0), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, typ uint8, session, seq uint64, tx, rrx, rtx int64) {
		if p, err := Unmarshal(b); err == nil {
			again, err := p.Marshal(nil)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("accepted %x as %+v but it re-encodes to %x, %v", b, p, again, err)
			}
		}
		p := Packet{Type: Type(typ), Session: session, Seq: seq, SenderTx: tx, ReflectRx: rrx, ReflectTx: rtx}
		enc, err := p.Marshal(nil)
		if err != nil {
			return
		}
		got, err := Unmarshal(enc)
		if err != nil || got != p {
			t.Fatalf("round trip of %+v: %+v, %v", p, got, err)
		}
	})
}

package dataplane

import "testing"

// The model below is exact arithmetic of the encapsulation, kept in a test
// because the product never computes an MTU: it uses DefaultMTU or the
// topology's value. Its job is to prove DefaultMTU safe
// (TestDefaultMTUIsConservative) and to answer "what fits on underlay X"
// for docs/edge.md.

// Overhead (test-only: the product uses the fixed DefaultMTU, see its
// comment) is the per-packet cost of carrying an inner IPv4 packet over GRE
// protected by ESP in transport mode, the meshwan encapsulation:
//
//	outer IP | [UDP (NAT-T)] | ESP hdr | IV | GRE | inner packet | pad | padlen | next | ICV
//	                                         \______ encrypted, aligned to Align ______/
//
// Transport mode adds no second IP header: ESP sits between the outer IP
// header (the GRE packet's own) and the GRE header.
type Overhead struct {
	OuterIP   int // 20 for IPv4, 40 for IPv6
	NATT      int // 8 when ESP is UDP-encapsulated (NAT-T, port 4500), else 0
	ESPHeader int // SPI (4) + sequence number (4)
	IV        int // 8 for AES-GCM (RFC 4106), 16 for AES-CBC
	GRE       int // 4: basic GRE header, no key, no sequence, no checksum
	Trailer   int // pad length (1) + next header (1)
	Align     int // the encrypted part is padded to a multiple of this: 4 for GCM, 16 for AES-CBC
	ICV       int // integrity check value: 16 for GCM-16, 12 for HMAC-SHA1-96, 16 for HMAC-SHA256-128
}

// Encapsulation presets. ESPAESGCM16 matches the default ESP proposal
// (aes256gcm16-modp2048: the PFS group adds no ESP bytes); the CBC ones
// match the seed's "AES SHA" policies.
var (
	ESPAESGCM16     = Overhead{OuterIP: 20, ESPHeader: 8, IV: 8, GRE: 4, Trailer: 2, Align: 4, ICV: 16}
	ESPAESCBCSHA1   = Overhead{OuterIP: 20, ESPHeader: 8, IV: 16, GRE: 4, Trailer: 2, Align: 16, ICV: 12}
	ESPAESCBCSHA256 = Overhead{OuterIP: 20, ESPHeader: 8, IV: 16, GRE: 4, Trailer: 2, Align: 16, ICV: 16}
)

// WithNATT returns o with UDP encapsulation (8 bytes) added.
func (o Overhead) WithNATT() Overhead { o.NATT = 8; return o }

// WithIPv6Outer returns o with a 40-byte outer IPv6 header.
func (o Overhead) WithIPv6Outer() Overhead { o.OuterIP = 40; return o }

// Worst is the largest number of bytes the encapsulation can add to an
// inner packet: every fixed header plus the maximum padding (Align-1).
// underlay - Worst is a safe MTU that ignores where the padding falls.
func (o Overhead) Worst() int {
	return o.OuterIP + o.NATT + o.ESPHeader + o.IV + o.GRE + o.Trailer + (o.Align - 1) + o.ICV
}

// GREMTU returns the largest GRE link MTU (the largest inner IP packet)
// whose encrypted, encapsulated form fits in one underlay packet of
// underlayMTU bytes, taking the ESP padding exactly into account. It
// returns 0 when nothing fits.
//
// For a 1500-byte underlay: AES-GCM 1442 (1434 with NAT-T), AES-CBC 1434
// (1426 with NAT-T); the worst-case bound (underlay - Worst()) is 1439 for
// GCM. DefaultMTU (1400) stays below all of them on purpose: it leaves room
// for a PPPoE or VLAN-tagged-to-1496 underlay and for the peer choosing a
// CBC proposal, so one value works everywhere.
func GREMTU(underlayMTU int, o Overhead) int {
	align := o.Align
	if align < 1 {
		align = 1
	}
	// Bytes available for the aligned, encrypted part (GRE + inner + pad + trailer).
	avail := underlayMTU - o.OuterIP - o.NATT - o.ESPHeader - o.IV - o.ICV
	if avail <= 0 {
		return 0
	}
	inner := avail/align*align - o.Trailer - o.GRE
	if inner < 0 {
		return 0
	}
	return inner
}

func TestGREMTU(t *testing.T) {
	tests := []struct {
		name     string
		underlay int
		o        Overhead
		want     int
	}{
		{"gcm 1500", 1500, ESPAESGCM16, 1442},
		{"gcm 1500 nat-t", 1500, ESPAESGCM16.WithNATT(), 1434},
		{"gcm 1500 ipv6 outer", 1500, ESPAESGCM16.WithIPv6Outer(), 1422},
		{"gcm 1500 ipv6 outer nat-t", 1500, ESPAESGCM16.WithIPv6Outer().WithNATT(), 1414},
		{"gcm pppoe 1492 nat-t", 1492, ESPAESGCM16.WithNATT(), 1426},
		{"cbc-sha1 1500", 1500, ESPAESCBCSHA1, 1434},
		{"cbc-sha256 1500", 1500, ESPAESCBCSHA256, 1434},
		{"cbc-sha256 1500 nat-t", 1500, ESPAESCBCSHA256.WithNATT(), 1418},
		{"jumbo gcm", 9000, ESPAESGCM16, 8942},
		{"too small", 40, ESPAESGCM16, 0},
		{"zero", 0, ESPAESGCM16, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := GREMTU(tc.underlay, tc.o); got != tc.want {
				t.Errorf("GREMTU(%d) = %d, want %d", tc.underlay, got, tc.want)
			}
		})
	}
}

// TestGREMTUAgainstReference checks GREMTU against a slow, obviously
// correct model: build every inner size, pad it as ESP does, and keep the
// largest that fits.
func TestGREMTUAgainstReference(t *testing.T) {
	wire := func(inner int, o Overhead) int {
		payload := o.GRE + inner + o.Trailer
		for payload%o.Align != 0 {
			payload++
		}
		return o.OuterIP + o.NATT + o.ESPHeader + o.IV + payload + o.ICV
	}
	for _, o := range []Overhead{ESPAESGCM16, ESPAESGCM16.WithNATT(), ESPAESCBCSHA1, ESPAESCBCSHA256.WithIPv6Outer().WithNATT()} {
		for underlay := 60; underlay <= 1600; underlay++ {
			want := 0
			for inner := 0; inner <= underlay; inner++ {
				if wire(inner, o) <= underlay {
					want = inner
				}
			}
			if want == 0 && wire(0, o) > underlay {
				want = 0
			}
			if got := GREMTU(underlay, o); got != want {
				t.Fatalf("GREMTU(%d, %+v) = %d, reference %d", underlay, o, got, want)
			}
		}
	}
}

// TestDefaultMTUIsConservative: the product default fits every
// encapsulation we may meet on a 1500-byte underlay, and on PPPoE with
// NAT-T, and it is within 50 bytes of the exact GCM value (the "1400-ish").
func TestDefaultMTUIsConservative(t *testing.T) {
	for _, o := range []Overhead{ESPAESGCM16, ESPAESGCM16.WithNATT(), ESPAESCBCSHA1.WithNATT(), ESPAESCBCSHA256.WithIPv6Outer().WithNATT()} {
		if got := GREMTU(1500, o); got < DefaultMTU {
			t.Errorf("GREMTU(1500, %+v) = %d < DefaultMTU %d", o, got, DefaultMTU)
		}
	}
	if got := GREMTU(1492, ESPAESCBCSHA256.WithNATT()); got < DefaultMTU {
		t.Errorf("PPPoE + NAT-T + CBC: %d < %d", got, DefaultMTU)
	}
	if w := 1500 - ESPAESGCM16.Worst(); w != 1439 || w < DefaultMTU || w-DefaultMTU > 50 {
		t.Errorf("worst-case GCM MTU = %d, want 1439", w)
	}
	if m := (Tunnel{}).EffectiveMTU(); m != DefaultMTU {
		t.Errorf("EffectiveMTU of zero tunnel = %d", m)
	}
	if m := (Tunnel{MTU: 1380}).MSS(); m != 1340 {
		t.Errorf("MSS = %d, want 1340", m)
	}
}

// TestUnderlayMinus90Fits proves the rule docs/edge.md gives operators for
// small underlays: an MTU of underlay - 90 fits every IPv4 encapsulation
// meshwan can meet, with or without NAT-T, at every underlay size.
func TestUnderlayMinus90Fits(t *testing.T) {
	for _, o := range []Overhead{ESPAESGCM16, ESPAESCBCSHA1, ESPAESCBCSHA256} {
		for _, o := range []Overhead{o, o.WithNATT()} {
			if o.Worst() > 90 {
				t.Errorf("%+v: worst-case overhead %d > 90", o, o.Worst())
			}
			for u := MinMTU + 90; u <= MaxMTU; u++ {
				if got := GREMTU(u, o); got < u-90 {
					t.Fatalf("GREMTU(%d, %+v) = %d < %d", u, o, got, u-90)
				}
			}
		}
	}
}

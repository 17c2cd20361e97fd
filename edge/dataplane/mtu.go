package dataplane

// DefaultMTU is the GRE link MTU meshwan uses when a Tunnel does not say
// otherwise (Tunnel.MTU == 0). It is the seed's recommended value and it is
// deliberately conservative: GREMTU shows it fits every encapsulation in
// this file on a 1500-byte underlay, including NAT-T and an IPv6 outer
// header, and even on a 1492-byte PPPoE underlay with NAT-T.
const DefaultMTU = 1400

// MinMTU and MaxMTU bound Tunnel.MTU. 576 is the smallest datagram every
// IPv4 host must accept; 9000 covers jumbo-frame underlays.
const (
	MinMTU = 576
	MaxMTU = 9000
)

// Overhead is the per-packet cost of carrying an inner IPv4 packet over GRE
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
// (aes256gcm16-modp2048: the PFS group adds no ESP bytes); the CBC ones match the seed's "AES SHA" policies.
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

// EffectiveMTU is the MTU the link must have: t.MTU, or DefaultMTU when
// t.MTU is 0.
func (t Tunnel) EffectiveMTU() int {
	if t.MTU == 0 {
		return DefaultMTU
	}
	return t.MTU
}

// MSS is the TCP maximum segment size that fits the tunnel without
// fragmentation: the link MTU minus the IPv4 (20) and TCP (20) headers.
// The firewall clamps SYNs crossing the link to it.
func (t Tunnel) MSS() int { return t.EffectiveMTU() - 40 }

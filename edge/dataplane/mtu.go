package dataplane

// DefaultMTU is the GRE link MTU meshwan uses when a Tunnel does not say
// otherwise (Tunnel.MTU == 0). It is the seed's recommended value and it is
// deliberately conservative: TestDefaultMTUIsConservative (mtu_test.go,
// with an exact model of the GRE + ESP transport-mode overhead) proves it
// fits every encapsulation meshwan proposes on a 1500-byte underlay,
// including NAT-T and an IPv6 outer header, and even on a 1492-byte PPPoE
// underlay with NAT-T. Nothing computes the MTU at run time: an underlay
// smaller than that needs Tunnel.MTU set in the topology.
const DefaultMTU = 1400

// MinMTU and MaxMTU bound Tunnel.MTU. 576 is the smallest datagram every
// IPv4 host must accept; 9000 covers jumbo-frame underlays.
const (
	MinMTU = 576
	MaxMTU = 9000
)

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

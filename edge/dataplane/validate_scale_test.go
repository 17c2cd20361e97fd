package dataplane

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// hubState is a hub's state: tunnels to n spokes (one remote LAN each,
// underlays in 20.0.0.0/8, /30s in 10.255.0.0/16) and lans local LAN
// prefixes in 172.16.0.0/12 style space (10.0.0.0/9).
func hubState(n, lans int) Desired {
	d := Desired{Site: "hub"}
	for i := range lans {
		d.LANPrefixes = append(d.LANPrefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 10 & 0x7f), byte(i >> 2), byte(i&3) << 6}), 26))
	}
	for i := range n {
		net := netip.AddrFrom4([4]byte{10, 255, byte(i >> 6), byte(i&63) << 2})
		li := netip.PrefixFrom(net.Next(), 30)
		d.Tunnels = append(d.Tunnels, Tunnel{
			ID: fmt.Sprintf("hub.inet1~s%05d.inet1", i), LinkName: LinkName(li),
			LocalUnderlay: netip.MustParseAddr("198.51.100.1"), RemoteUnderlay: netip.AddrFrom4([4]byte{20, byte(i >> 16), byte(i >> 8), byte(i)}),
			LocalInner: li, RemoteInner: li.Addr().Next(), RemoteSite: fmt.Sprintf("s%05d", i),
			RemoteLANs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + i>>8&0xf), byte(i), 0}), 24)},
			PSK:        make([]byte, 32), IPsec: IPsecPolicy{IKEProposal: "aes256-sha256-modp2048", ESPProposal: "aes256gcm16", IKELifetime: 8 * time.Hour, ESPLifetime: time.Hour, DPDInterval: 30 * time.Second},
		})
	}
	return d
}

// TestValidateHubScales validates a hub of 5,000 tunnels with 20,000 local
// LAN prefixes (the size that took seconds with pairwise checks): it is
// accepted, and the cross checks still find one bad prefix among them.
func TestValidateHubScales(t *testing.T) {
	d := hubState(5000, 20000)
	start := time.Now()
	if err := d.Validate(); err != nil {
		t.Fatalf("good hub state refused: %.300v", err)
	}
	t.Logf("5,000 tunnels, 20,000 LAN prefixes: Validate took %v", time.Since(start))
	d.LANPrefixes = append(d.LANPrefixes, netip.MustParsePrefix("20.0.19.0/24")) // contains spoke 4864's underlay
	if err := d.Validate(); err == nil {
		t.Fatal("a LAN containing a spoke's underlay was accepted")
	}
}

// BenchmarkValidateHub: go test -run x -bench ValidateHub ./edge/dataplane/
func BenchmarkValidateHub(b *testing.B) {
	d := hubState(5000, 20000)
	for b.Loop() {
		if err := d.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

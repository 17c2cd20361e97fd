package intent_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/edge/dataplane"
)

// TestTransitAcceptedOnlyWhereEdgesAccept checks one rule on both sides:
// for random spoke LANs and transit prefixes, the controller accepts the
// pair (Topology.CheckTransit) exactly when the spoke's edge accepts a
// desired state whose tunnel to the hub carries that transit prefix
// (dataplane.Desired.Validate).
func TestTransitAcceptedOnlyWhereEdgesAccept(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	rnd := func(bits int) netip.Prefix {
		a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), 0})
		return netip.PrefixFrom(a, bits).Masked()
	}
	underlay := netip.MustParseAddr("20.0.0.2")
	for range 2000 {
		lan := rnd(8 + r.IntN(17))
		transit := rnd(8 + r.IntN(17))
		if r.IntN(10) == 0 { // sometimes a summary around the hub's address
			transit = netip.PrefixFrom(underlay, 8+r.IntN(17)).Masked()
		}
		spoke := intent.Site{Name: "br1", Role: intent.RoleSpoke, LANPrefixes: []netip.Prefix{lan},
			Transports: []intent.Transport{{Name: "inet1", Addr: netip.MustParseAddr("20.0.0.1")}}}
		hub := intent.Site{Name: "hq", Role: intent.RoleHub, LANPrefixes: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")},
			Transports: []intent.Transport{{Name: "inet1", Addr: underlay}}}
		top := intent.Topology{Mode: intent.ModeHubAndSpoke, TransitPrefixes: []netip.Prefix{transit}}
		ctl := top.CheckTransit(spoke) == nil && top.CheckTransit(hub) == nil
		d := dataplane.Desired{Site: "br1", LANPrefixes: []netip.Prefix{lan}, Tunnels: []dataplane.Tunnel{{
			ID: "hq.inet1~br1.inet1", LinkName: dataplane.LinkName(netip.MustParsePrefix("192.168.255.2/30")),
			LocalUnderlay: spoke.Transports[0].Addr, RemoteUnderlay: underlay,
			LocalInner: netip.MustParsePrefix("192.168.255.2/30"), RemoteInner: netip.MustParseAddr("192.168.255.1"),
			RemoteSite: "hq", RemoteLANs: []netip.Prefix{hub.LANPrefixes[0], transit}, PSK: make([]byte, 32),
			LocalTransport: "inet1", RemoteTransport: "inet1",
		}}}
		edge := d.Validate() == nil
		if ctl != edge {
			t.Fatalf("LAN %s, transit %s: controller accepts=%v, edge accepts=%v (%v)", lan, transit, ctl, edge, d.Validate())
		}
	}
}

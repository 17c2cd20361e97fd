package bgp

import (
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
)

// This file is the whole mapping from our domain types to GoBGP's API
// structs; every function is pure. GoBGP's generated structs stop here
// (house style: generated types stop at the boundary).

var familyIPv4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// globalFor is the StartBgp request: multipath on, IPv4 unicast only.
//
// UseMultiplePaths makes GoBGP keep every path that ties with the best one
// on local-pref, AS-path length, origin and MED (table.Path.Compare), so
// two hubs announcing a spoke's prefix with AS paths [A1 C] and [A2 C]
// give an ECMP route. Pitfall: GoBGP stores this and the route selection
// options in package variables written by every StartBgp, so every
// speaker in one process shares them; meshwan runs one per process, and
// all of ours set the same values.
func globalFor(c Config) *api.Global {
	g := &api.Global{
		Asn:        c.ASN,
		RouterId:   c.RouterID.String(),
		ListenPort: c.ListenPort,
		// An index into GoBGP's oc.IntToAfiSafiTypeMap, not afi<<16|safi:
		// 0 is ipv4-unicast.
		Families:         []uint32{0},
		UseMultiplePaths: true,
	}
	for _, a := range c.ListenAddrs {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	return g
}

// peerFor is the AddPeer request for n (normalised).
//
// eBGP specifics, all GoBGP's defaults for an external peer: the next hop
// of everything we send is our session address (next-hop-self; GoBGP
// rewrites it for non-local paths and fills it for our own, which we add
// with 0.0.0.0), our ASN is prepended, MED of learned paths is not
// passed on, and the session uses TTL 1 (the peer is on the /30, no
// multihop). Routes learned from one eBGP peer are re-advertised to the
// others, which is what makes a hub carry spoke-to-spoke routes; AS-path
// loop detection drops what comes back.
//
// Graceful restart (RFC 4724) is on for IPv4 unicast with restartTime;
// without the notification extension (RFC 8538), so a NOTIFICATION
// (Stop, a deleted neighbor) still withdraws at once. restarting sets the
// Restart State bit: the agent restarted and kept forwarding, so peers
// keep our routes until our End-of-RIB.
func peerFor(n Neighbor, restartTime time.Duration, restarting bool) *api.Peer {
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: n.Addr.String(),
			PeerAsn:         n.ASN,
			Description:     n.Description,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(n.HoldTime / time.Second),
			KeepaliveInterval: uint64(n.KeepAlive / time.Second),
			ConnectRetry:      uint64(connectRetry / time.Second),
		}},
		Transport: &api.Transport{
			PassiveMode: n.Passive,
			RemotePort:  uint32(n.Port),
		},
		GracefulRestart: &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(restartTime / time.Second),
			DeferralTime:    uint32(deferralTime / time.Second),
			LocalRestarting: restarting,
		},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: familyIPv4, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}},
	}
	if n.LocalAddr.IsValid() {
		p.Transport.LocalAddress = n.LocalAddr.String()
	}
	return p
}

// pathFor is the AddPath request body announcing prefix p as ours:
// origin IGP, next hop 0.0.0.0 (GoBGP puts our session address there
// for each peer).
func pathFor(p netip.Prefix) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0})
	if err != nil {
		return nil, err
	}
	nh, err := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: familyIPv4, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
}

// LAN peer policy. GoBGP v3 applies import/export policies per peer only
// to route-server clients, so ours are global and pick LAN peers with a
// neighbor set:
//
//	import: from a neighbor in lanSetName -> reject (default accept)
//	export: to a neighbor in lanSetName, a locally originated route -> reject
//
// Pitfalls, both from internal/pkg/table/policy.go:
//   - an EMPTY neighbor set matches every neighbor (NeighborCondition.
//     Evaluate returns true for an empty list), which would reject every
//     route; the set therefore always holds lanSetSentinel, an address no
//     peer can have;
//   - AddDefinedSet with replace=true swaps the set object while the
//     statements keep pointing at the old one; members are therefore only
//     appended (AddDefinedSet, replace=false) and removed
//     (DeleteDefinedSet, all=false), which edit the set in place.
const (
	lanSetName       = "meshwan-lan-peers"
	lanSetSentinel   = "255.255.255.255/32"
	lanImportPolicy  = "meshwan-lan-import"
	lanExportPolicy  = "meshwan-lan-export"
	globalPolicyName = "global"
)

func lanSet(addrs ...netip.Addr) *api.DefinedSet {
	s := &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: lanSetName}
	for _, a := range addrs {
		s.List = append(s.List, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return s
}

func lanPolicies() []*api.Policy {
	inLAN := &api.MatchSet{Type: api.MatchSet_ANY, Name: lanSetName}
	reject := &api.Actions{RouteAction: api.RouteAction_REJECT}
	return []*api.Policy{
		{Name: lanImportPolicy, Statements: []*api.Statement{{
			Name:       lanImportPolicy + "-reject",
			Conditions: &api.Conditions{NeighborSet: inLAN},
			Actions:    reject,
		}}},
		{Name: lanExportPolicy, Statements: []*api.Statement{{
			Name:       lanExportPolicy + "-no-local",
			Conditions: &api.Conditions{NeighborSet: inLAN, RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    reject,
		}}},
	}
}

func lanAssignments() []*api.PolicyAssignment {
	return []*api.PolicyAssignment{
		{Name: globalPolicyName, Direction: api.PolicyDirection_IMPORT,
			Policies: []*api.Policy{{Name: lanImportPolicy}}, DefaultAction: api.RouteAction_ACCEPT},
		{Name: globalPolicyName, Direction: api.PolicyDirection_EXPORT,
			Policies: []*api.Policy{{Name: lanExportPolicy}}, DefaultAction: api.RouteAction_ACCEPT},
	}
}

package ctl

import (
	"slices"

	"github.com/meshwan/meshwan/controller/intent"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// Domain types (what a network file parses into) to the API's types.

func siteToPB(s intent.Site) *pb.Site {
	out := &pb.Site{Name: s.Name, Asn: s.ASN, Role: pb.SiteRole_SITE_ROLE_SPOKE}
	if s.Hub() {
		out.Role = pb.SiteRole_SITE_ROLE_HUB
	}
	for _, t := range s.Transports {
		addr := intent.Dynamic
		if !t.Dynamic {
			addr = t.Addr.String()
		}
		out.Transports = append(out.Transports, &pb.Transport{Name: t.Name, Address: addr})
	}
	for _, p := range s.LANPrefixes {
		out.LanPrefixes = append(out.LanPrefixes, p.String())
	}
	return out
}

func topologyToPB(t intent.Topology) *pb.Topology {
	out := &pb.Topology{Mtu: uint32(t.MTU),
		Ipsec: &pb.IPsecPolicy{IkeProposal: t.IPsec.IKEProposal, IkeLifetimeSeconds: uint32(t.IPsec.IKELifetime.Seconds()),
			EspProposal: t.IPsec.ESPProposal, EspLifetimeSeconds: uint32(t.IPsec.ESPLifetime.Seconds()), DpdSeconds: uint32(t.IPsec.DPD.Seconds())}}
	switch t.Mode {
	case intent.ModeFullMesh:
		out.Mode = pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH
	case intent.ModeHubAndSpoke:
		out.Mode = pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE
	}
	switch t.Match {
	case intent.MatchSameName:
		out.TransportMatch = pb.TransportMatch_TRANSPORT_MATCH_SAME_NAME
	case intent.MatchAllPairs:
		out.TransportMatch = pb.TransportMatch_TRANSPORT_MATCH_ALL_PAIRS
	}
	switch t.Routing {
	case intent.RoutingStatic:
		out.Routing = pb.RoutingMode_ROUTING_MODE_STATIC
	case intent.RoutingBGP:
		out.Routing = pb.RoutingMode_ROUTING_MODE_BGP
	}
	p := t.PathPolicy
	pp := &pb.PathPolicy{ProbeIntervalMs: uint32(p.ProbeInterval.Milliseconds()), DownAfter: uint32(p.DownAfter), UpAfter: uint32(p.UpAfter),
		HoldDownMs: uint32(p.HoldDown.Milliseconds()), Disabled: p.Disabled}
	for _, s := range p.SLAs {
		pp.SlaClasses = append(pp.SlaClasses, &pb.SLAClass{Name: s.Name, MaxRttMs: intent.Millis(s.MaxRTT), MaxLossPct: s.MaxLossPct,
			MaxJitterMs: intent.Millis(s.MaxJitter), TransportPreference: slices.Clone(s.Transports), DampingMs: uint32(s.Damping.Milliseconds())})
	}
	for _, c := range p.Classes {
		tc := &pb.TrafficClass{Name: c.Name, SlaClass: c.SLA, Protocol: c.Protocol}
		for _, d := range c.DSCP {
			tc.Dscp = append(tc.Dscp, uint32(d))
		}
		for _, r := range c.Ports {
			tc.Ports = append(tc.Ports, r.String())
		}
		for _, d := range c.Destinations {
			tc.Destinations = append(tc.Destinations, d.String())
		}
		pp.TrafficClasses = append(pp.TrafficClasses, tc)
	}
	out.PathPolicy = pp
	for _, x := range t.TransitPrefixes {
		out.TransitPrefixes = append(out.TransitPrefixes, x.String())
	}
	return out
}

package api

import (
	"fmt"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/validity"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/meshwan/meshwan/controller/enroll"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Conversions between the API's generated types and the domain types.
// Parsing from the wire names the field on error.

func siteFromPB(s *pb.Site) (intent.Site, error) {
	if s == nil {
		return intent.Site{}, fmt.Errorf("%w: site: missing", intent.ErrInvalid)
	}
	out := intent.Site{Name: s.GetName(), ASN: s.GetAsn()}
	switch s.GetRole() {
	case pb.SiteRole_SITE_ROLE_HUB:
		out.Role = intent.RoleHub
	case pb.SiteRole_SITE_ROLE_SPOKE, pb.SiteRole_SITE_ROLE_UNSPECIFIED:
		out.Role = intent.RoleSpoke
	default:
		return intent.Site{}, fmt.Errorf("%w: site.role: unknown value %d", intent.ErrInvalid, s.GetRole())
	}
	for i, t := range s.GetTransports() {
		tr, err := intent.ParseTransportAddr(fmt.Sprintf("site.transports[%d].address", i), t.GetAddress())
		if err != nil {
			return intent.Site{}, err
		}
		tr.Name = t.GetName()
		out.Transports = append(out.Transports, tr)
	}
	for i, p := range s.GetLanPrefixes() {
		pfx, err := intent.ParsePrefix(fmt.Sprintf("site.lan_prefixes[%d]", i), p)
		if err != nil {
			return intent.Site{}, err
		}
		out.LANPrefixes = append(out.LANPrefixes, pfx)
	}
	return out, nil
}

func siteToPB(s intent.Site, st *health.Status) *pb.Site {
	out := &pb.Site{Name: s.Name, Asn: s.ASN, Role: pb.SiteRole_SITE_ROLE_SPOKE}
	if s.Hub() {
		out.Role = pb.SiteRole_SITE_ROLE_HUB
	}
	for _, t := range s.Transports {
		out.Transports = append(out.Transports, transportToPB(t))
	}
	for _, p := range s.LANPrefixes {
		out.LanPrefixes = append(out.LanPrefixes, p.String())
	}
	if st != nil {
		out.Status = statusToPB(*st)
	}
	return out
}

func transportToPB(t intent.Transport) *pb.Transport {
	addr := intent.Dynamic
	if !t.Dynamic {
		addr = t.Addr.String()
	}
	return &pb.Transport{Name: t.Name, Address: addr}
}

func statusToPB(st health.Status) *pb.SiteStatus {
	out := &pb.SiteStatus{AgentVersion: st.Agent, AppliedVersion: st.Report.AppliedVersion}
	switch st.State {
	case health.Up:
		out.State = pb.EdgeState_EDGE_STATE_UP
	case health.Down:
		out.State = pb.EdgeState_EDGE_STATE_DOWN
	default:
		out.State = pb.EdgeState_EDGE_STATE_NEVER_SEEN
	}
	if !st.LastSeen.IsZero() {
		out.LastSeen = timestamppb.New(st.LastSeen)
	}
	for _, t := range st.Report.Tunnels {
		out.Tunnels = append(out.Tunnels, tunnelStatusToPB(t))
	}
	out.BgpPeers = bgpPeersToPB(st.Report.BGPPeers)
	out.ClassPaths = classPathsToPB(st.Report.ClassPaths)
	return out
}

var tunnelStates = map[string]pb.TunnelState{
	"up": pb.TunnelState_TUNNEL_STATE_UP, "degraded": pb.TunnelState_TUNNEL_STATE_DEGRADED, "down": pb.TunnelState_TUNNEL_STATE_DOWN,
}

func tunnelStatusToPB(t health.TunnelStatus) *pb.TunnelStatus {
	return &pb.TunnelStatus{TunnelId: t.TunnelID, State: tunnelStates[t.State], LinkUp: t.LinkUp, IkeState: t.IKEState,
		ChildState: t.ChildState, BytesIn: t.BytesIn, BytesOut: t.BytesOut, PacketsIn: t.PacketsIn, PacketsOut: t.PacketsOut, Detail: t.Detail,
		Probed: t.Probed, ProbeState: t.ProbeState, RttMs: t.RTTMillis, RttP99Ms: t.RTTP99Millis, JitterMs: t.JitterMillis,
		LossPct: t.LossPct, Transitions: t.Transitions, Usable: t.Usable, PskSerial: t.PSKSerial}
}

func tunnelStatusFromPB(t *pb.TunnelStatus) health.TunnelStatus {
	state := ""
	for k, v := range tunnelStates {
		if v == t.GetState() {
			state = k
		}
	}
	return health.TunnelStatus{TunnelID: clip(t.GetTunnelId()), State: state, LinkUp: t.GetLinkUp(), IKEState: clip(t.GetIkeState()),
		ChildState: clip(t.GetChildState()), BytesIn: t.GetBytesIn(), BytesOut: t.GetBytesOut(), PacketsIn: t.GetPacketsIn(),
		PacketsOut: t.GetPacketsOut(), Detail: validity.Clip(t.GetDetail(), maxDetail),
		Probed: t.GetProbed(), ProbeState: clip(t.GetProbeState()), RTTMillis: figure(t.GetRttMs()), RTTP99Millis: figure(t.GetRttP99Ms()),
		JitterMillis: figure(t.GetJitterMs()), LossPct: min(figure(t.GetLossPct()), 100), Transitions: t.GetTransitions(), Usable: t.GetUsable(),
		PSKSerial: t.GetPskSerial()}
}

// figure cleans a measured figure an edge sends: NaN, infinities and
// negative values (which JSON cannot hold or which mean nothing) become 0.
func figure(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}

func classPathsToPB(cs []health.ClassPath) []*pb.ClassPath {
	var out []*pb.ClassPath
	for _, c := range cs {
		out = append(out, &pb.ClassPath{TrafficClass: c.TrafficClass, RemoteSite: c.RemoteSite, TunnelId: c.TunnelID, MeetsSla: c.MeetsSLA})
	}
	return out
}

func classPathsFromPB(cs []*pb.ClassPath) []health.ClassPath {
	var out []health.ClassPath
	for _, c := range cs {
		out = append(out, health.ClassPath{TrafficClass: clip(c.GetTrafficClass()), RemoteSite: clip(c.GetRemoteSite()), TunnelID: clip(c.GetTunnelId()), MeetsSLA: c.GetMeetsSla()})
	}
	return out
}

// reportLimits bounds what one report may hold, from the number of tunnels
// the site has: an edge reports one status per tunnel, one BGP peer per
// tunnel plus its LAN peers, and one path per traffic class and remote
// site. Without a bound one 4 MiB message of empty entries became a
// 90 MB report held in memory (found by FuzzSyncRequest's author).
type reportLimits struct{ tunnels, bgpPeers, classPaths int }

// slack covers tunnels added or removed since the edge's last state.
const reportSlack = 16

func limitsFor(tunnels int) reportLimits {
	t := tunnels + reportSlack
	return reportLimits{tunnels: t, bgpPeers: t + 256, classPaths: t * dataplane.MaxClasses}
}

// reportFromPB converts an edge's report, keeping at most lim's entries of
// each list (the rest is dropped, not an error: a report is advisory).
func reportFromPB(agentVersion string, r *pb.EdgeReport, lim reportLimits) health.Report {
	rep := health.Report{AgentVersion: validity.Clip(agentVersion, 64), AppliedVersion: r.GetAppliedVersion(),
		BGPPeers: bgpPeersFromPB(first(r.GetBgpPeers(), lim.bgpPeers)), ClassPaths: classPathsFromPB(first(r.GetClassPaths(), lim.classPaths))}
	for _, t := range first(r.GetTunnels(), lim.tunnels) {
		rep.Tunnels = append(rep.Tunnels, tunnelStatusFromPB(t))
	}
	return rep
}

// Bounds of the strings an edge reports: ids, names and states are short
// by construction (a tunnel id is at most dataplane.MaxIDLen bytes); a
// detail is a human-readable reason.
const (
	maxReportString = 128
	maxDetail       = 512
)

func clip(s string) string { return validity.Clip(s, maxReportString) }

func first[T any](s []T, n int) []T { return s[:min(len(s), n)] }

func topologyFromPB(t *pb.Topology) (intent.Topology, error) {
	if t == nil {
		return intent.Topology{}, fmt.Errorf("%w: topology: missing", intent.ErrInvalid)
	}
	out := intent.Topology{MTU: int(t.GetMtu())}
	switch t.GetMode() {
	case pb.TopologyMode_TOPOLOGY_MODE_UNSPECIFIED:
	case pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH:
		out.Mode = intent.ModeFullMesh
	case pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE:
		out.Mode = intent.ModeHubAndSpoke
	default:
		return intent.Topology{}, fmt.Errorf("%w: topology.mode: unknown value %d", intent.ErrInvalid, t.GetMode())
	}
	switch t.GetTransportMatch() {
	case pb.TransportMatch_TRANSPORT_MATCH_UNSPECIFIED, pb.TransportMatch_TRANSPORT_MATCH_SAME_NAME:
		out.Match = intent.MatchSameName
	case pb.TransportMatch_TRANSPORT_MATCH_ALL_PAIRS:
		out.Match = intent.MatchAllPairs
	default:
		return intent.Topology{}, fmt.Errorf("%w: topology.transport_match: unknown value %d", intent.ErrInvalid, t.GetTransportMatch())
	}
	switch t.GetRouting() {
	case pb.RoutingMode_ROUTING_MODE_UNSPECIFIED, pb.RoutingMode_ROUTING_MODE_STATIC:
		out.Routing = intent.RoutingStatic
	case pb.RoutingMode_ROUTING_MODE_BGP:
		out.Routing = intent.RoutingBGP
	default:
		return intent.Topology{}, fmt.Errorf("%w: topology.routing: unknown value %d", intent.ErrInvalid, t.GetRouting())
	}
	if p := t.GetIpsec(); p != nil {
		out.IPsec = intent.IPsec{
			IKEProposal: p.GetIkeProposal(), IKELifetime: time.Duration(p.GetIkeLifetimeSeconds()) * time.Second,
			ESPProposal: p.GetEspProposal(), ESPLifetime: time.Duration(p.GetEspLifetimeSeconds()) * time.Second,
			DPD: time.Duration(p.GetDpdSeconds()) * time.Second,
		}
	}
	if p := t.GetPathPolicy(); p != nil {
		pp, err := pathPolicyFromPB(p)
		if err != nil {
			return intent.Topology{}, err
		}
		out.PathPolicy = pp
	}
	for i, x := range t.GetTransitPrefixes() {
		pfx, err := intent.ParsePrefix(fmt.Sprintf("topology.transit_prefixes[%d]", i), x)
		if err != nil {
			return intent.Topology{}, err
		}
		out.TransitPrefixes = append(out.TransitPrefixes, pfx)
	}
	return out, nil
}

// pathPolicyFromPB parses what the wire form can hold but the domain
// cannot (non-finite milliseconds, DSCP above 63, port and prefix text);
// intent.Topology.Validate checks the rest.
func pathPolicyFromPB(p *pb.PathPolicy) (intent.PathPolicy, error) {
	const f = "topology.path_policy."
	out := intent.PathPolicy{
		ProbeInterval: time.Duration(p.GetProbeIntervalMs()) * time.Millisecond,
		DownAfter:     int(p.GetDownAfter()), UpAfter: int(p.GetUpAfter()),
		HoldDown: time.Duration(p.GetHoldDownMs()) * time.Millisecond,
		Disabled: p.GetDisabled(),
	}
	for i, s := range p.GetSlaClasses() {
		field := fmt.Sprintf("%ssla_classes[%d].", f, i)
		rtt, err := intent.MillisDuration(field+"max_rtt_ms", s.GetMaxRttMs())
		if err != nil {
			return intent.PathPolicy{}, err
		}
		jitter, err := intent.MillisDuration(field+"max_jitter_ms", s.GetMaxJitterMs())
		if err != nil {
			return intent.PathPolicy{}, err
		}
		out.SLAs = append(out.SLAs, intent.SLAClass{Name: s.GetName(), MaxRTT: rtt, MaxLossPct: s.GetMaxLossPct(),
			MaxJitter: jitter, Transports: slices.Clone(s.GetTransportPreference()),
			Damping: time.Duration(s.GetDampingMs()) * time.Millisecond})
	}
	for i, c := range p.GetTrafficClasses() {
		field := fmt.Sprintf("%straffic_classes[%d].", f, i)
		tc := intent.TrafficClass{Name: c.GetName(), SLA: c.GetSlaClass(), Protocol: c.GetProtocol()}
		for j, d := range c.GetDscp() {
			v, err := intent.ParseDSCP(fmt.Sprintf("%sdscp[%d]", field, j), d)
			if err != nil {
				return intent.PathPolicy{}, err
			}
			tc.DSCP = append(tc.DSCP, v)
		}
		for j, s := range c.GetPorts() {
			r, err := intent.ParsePortRange(fmt.Sprintf("%sports[%d]", field, j), s)
			if err != nil {
				return intent.PathPolicy{}, err
			}
			tc.Ports = append(tc.Ports, r)
		}
		for j, s := range c.GetDestinations() {
			pfx, err := intent.ParseDestination(fmt.Sprintf("%sdestinations[%d]", field, j), s)
			if err != nil {
				return intent.PathPolicy{}, err
			}
			tc.Destinations = append(tc.Destinations, pfx)
		}
		out.Classes = append(out.Classes, tc)
	}
	return out, nil
}

func pathPolicyToPB(p intent.PathPolicy) *pb.PathPolicy {
	out := &pb.PathPolicy{ProbeIntervalMs: uint32(p.ProbeInterval.Milliseconds()), DownAfter: uint32(p.DownAfter), UpAfter: uint32(p.UpAfter),
		HoldDownMs: uint32(p.HoldDown.Milliseconds()), Disabled: p.Disabled}
	for _, s := range p.SLAs {
		out.SlaClasses = append(out.SlaClasses, &pb.SLAClass{Name: s.Name, MaxRttMs: intent.Millis(s.MaxRTT), MaxLossPct: s.MaxLossPct,
			MaxJitterMs: intent.Millis(s.MaxJitter), TransportPreference: slices.Clone(s.Transports),
			DampingMs: uint32(s.Damping.Milliseconds())})
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
		out.TrafficClasses = append(out.TrafficClasses, tc)
	}
	return out
}

func ipsecToPB(p intent.IPsec) *pb.IPsecPolicy {
	return &pb.IPsecPolicy{IkeProposal: p.IKEProposal, IkeLifetimeSeconds: uint32(p.IKELifetime.Seconds()),
		EspProposal: p.ESPProposal, EspLifetimeSeconds: uint32(p.ESPLifetime.Seconds()), DpdSeconds: uint32(p.DPD.Seconds())}
}

func topologyToPB(t intent.Topology) *pb.Topology {
	out := &pb.Topology{Mtu: uint32(t.MTU), Ipsec: ipsecToPB(t.IPsec), TransportMatch: pb.TransportMatch_TRANSPORT_MATCH_SAME_NAME}
	switch t.Mode {
	case intent.ModeFullMesh:
		out.Mode = pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH
	case intent.ModeHubAndSpoke:
		out.Mode = pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE
	}
	if t.Match == intent.MatchAllPairs {
		out.TransportMatch = pb.TransportMatch_TRANSPORT_MATCH_ALL_PAIRS
	}
	out.Routing = routingToPB(t.Routing)
	out.PathPolicy = pathPolicyToPB(t.PathPolicy)
	for _, p := range t.TransitPrefixes {
		out.TransitPrefixes = append(out.TransitPrefixes, p.String())
	}
	return out
}

func routingToPB(r intent.Routing) pb.RoutingMode {
	if r == intent.RoutingBGP {
		return pb.RoutingMode_ROUTING_MODE_BGP
	}
	return pb.RoutingMode_ROUTING_MODE_STATIC
}

func bgpPeersToPB(ps []health.BGPPeer) []*pb.BGPPeerStatus {
	var out []*pb.BGPPeerStatus
	for _, p := range ps {
		out = append(out, &pb.BGPPeerStatus{Neighbor: p.Neighbor, Asn: p.ASN, TunnelId: p.TunnelID, State: p.State,
			Received: p.Received, Accepted: p.Accepted, Advertised: p.Advertised})
	}
	return out
}

func bgpPeersFromPB(ps []*pb.BGPPeerStatus) []health.BGPPeer {
	var out []health.BGPPeer
	for _, p := range ps {
		out = append(out, health.BGPPeer{Neighbor: clip(p.GetNeighbor()), ASN: p.GetAsn(), TunnelID: clip(p.GetTunnelId()), State: clip(p.GetState()),
			Received: p.GetReceived(), Accepted: p.GetAccepted(), Advertised: p.GetAdvertised()})
	}
	return out
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return intent.Dynamic
	}
	return a.String()
}

func tunnelToPB(t network.TunnelView) *pb.Tunnel {
	end := func(e network.EndView) *pb.TunnelEnd {
		return &pb.TunnelEnd{Site: e.Site, Transport: e.Transport, UnderlayAddress: addrString(e.Underlay), InnerAddress: e.Inner.String(), Asn: e.ASN}
	}
	out := &pb.Tunnel{Id: t.ID, A: end(t.AEnd), B: end(t.BEnd), Prefix: t.Prefix.String(), CreatedAt: timestamppb.New(t.CreatedAt),
		PskSerial: t.Serial(), PskRotation: t.PSKRotation, Initiator: string(t.InitiatorSide())}
	if !t.PSKRotatedAt.IsZero() {
		out.PskRotatedAt = timestamppb.New(t.PSKRotatedAt)
	}
	return out
}

func tokenToPB(t enroll.Token, secret string) *pb.EnrollmentToken {
	return &pb.EnrollmentToken{Id: t.ID, Site: t.Site, CreatedAt: timestamppb.New(t.CreatedAt), ExpiresAt: timestamppb.New(t.ExpiresAt),
		Used: t.Used(), Revoked: t.Revoked, Secret: secret, Claim: t.Claim}
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var deviceStates = map[string]pb.DeviceState{
	enroll.DevicePending: pb.DeviceState_DEVICE_STATE_PENDING, enroll.DeviceApproved: pb.DeviceState_DEVICE_STATE_APPROVED,
	enroll.DeviceEnrolled: pb.DeviceState_DEVICE_STATE_ENROLLED, enroll.DeviceRejected: pb.DeviceState_DEVICE_STATE_REJECTED,
}

func deviceToPB(d enroll.Device) *pb.Device {
	return &pb.Device{DeviceId: d.ID, State: deviceStates[d.State], Site: d.Site, PublicKeySha256: d.KeyHash, Hostname: d.Hostname,
		ClaimTokenId: d.TokenID, RemoteAddress: d.RemoteAddr, FirstSeen: tsOrNil(d.FirstSeen), LastSeen: tsOrNil(d.LastSeen), ExpiresAt: tsOrNil(d.ExpiresAt)}
}

func identityToPB(e enroll.Edge) *pb.SiteIdentity {
	return &pb.SiteIdentity{Site: e.Site, Serial: e.Serial, NotAfter: tsOrNil(e.NotAfter), EnrolledAt: tsOrNil(e.EnrolledAt),
		RenewedAt: tsOrNil(e.RenewedAt), Revoked: e.Revoked, DeviceId: e.DeviceID}
}

func desiredToPB(d network.DesiredState) *pb.DesiredState {
	out := &pb.DesiredState{Version: d.Version, Site: d.Site.Name, Asn: d.Site.ASN, Mtu: uint32(d.Topology.MTU), Ipsec: ipsecToPB(d.Topology.IPsec),
		Routing: routingToPB(d.Topology.Routing), PathPolicy: pathPolicyToPB(d.Topology.PathPolicy.WithDefaults())}
	for _, p := range d.Site.LANPrefixes {
		out.LanPrefixes = append(out.LanPrefixes, p.String())
	}
	for _, t := range d.Tunnels {
		et := &pb.EdgeTunnel{Id: t.ID, LocalTransport: t.LocalTransport, LocalUnderlay: t.LocalUnderlay.String(),
			RemoteSite: t.RemoteSite, RemoteTransport: t.RemoteTransport, RemoteUnderlay: t.RemoteUnderlay.String(),
			LocalInner: t.LocalInner.String(), RemoteInner: t.RemoteInner.String(), RemoteAsn: t.RemoteASN, Psk: t.PSK,
			AcceptPsks: t.AcceptPSKs, PskSerial: t.PSKSerial, Role: pb.TunnelRole_TUNNEL_ROLE_RESPONDER}
		if t.Initiator {
			et.Role = pb.TunnelRole_TUNNEL_ROLE_INITIATOR
		}
		for _, p := range t.RemoteLANs {
			et.RemoteLanPrefixes = append(et.RemoteLanPrefixes, p.String())
		}
		out.Tunnels = append(out.Tunnels, et)
	}
	return out
}

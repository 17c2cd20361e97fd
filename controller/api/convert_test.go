package api

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/topology"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/proto"
)

func wirePolicy() *pb.PathPolicy {
	return &pb.PathPolicy{ProbeIntervalMs: 50, DownAfter: 4, UpAfter: 2, HoldDownMs: 3000, Disabled: true,
		SlaClasses: []*pb.SLAClass{
			{Name: "realtime", MaxRttMs: 150.5, MaxLossPct: 2, MaxJitterMs: 30, TransportPreference: []string{"inet1", "inet2"}, DampingMs: 1000},
			{Name: "bulk", DampingMs: 2000},
		},
		TrafficClasses: []*pb.TrafficClass{
			{Name: "voice", SlaClass: "realtime", Dscp: []uint32{46, 34}, Protocol: "udp", Ports: []string{"5004-5005", "5060"},
				Destinations: []string{"10.0.0.0/8", "0.0.0.0/0"}},
			{Name: "bulk", SlaClass: "bulk", Protocol: "tcp"},
		}}
}

// TestPathPolicyRoundTrip: wire -> domain -> wire keeps every field.
func TestPathPolicyRoundTrip(t *testing.T) {
	in := &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, PathPolicy: wirePolicy()}
	top, err := topologyFromPB(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Validate(nil); err != nil {
		t.Fatalf("the converted policy does not validate: %v", err)
	}
	if got := pathPolicyToPB(top.PathPolicy); !proto.Equal(got, in.PathPolicy) {
		t.Errorf("round trip:\n got %v\nwant %v", got, in.PathPolicy)
	}
	// No policy on the wire: the zero policy; out again with defaults.
	top, _ = topologyFromPB(&pb.Topology{})
	if top.PathPolicy.ProbeInterval != 0 || top.PathPolicy.SLAs != nil {
		t.Errorf("no policy became %+v", top.PathPolicy)
	}
	want := &pb.PathPolicy{ProbeIntervalMs: 100, DownAfter: 5, UpAfter: 3, HoldDownMs: 2000}
	if got := topologyToPB(top.WithDefaults()).PathPolicy; !proto.Equal(got, want) {
		t.Errorf("defaults on the wire: %v, want %v", got, want)
	}
	d := desiredToPB(network.DesiredState{Topology: intent.Topology{}})
	if !proto.Equal(d.PathPolicy, want) {
		t.Errorf("desired state policy %v, want the defaults %v", d.PathPolicy, want)
	}
}

// TestPathPolicyFromWireRefuses what the domain cannot hold, naming the
// field.
func TestPathPolicyFromWireRefuses(t *testing.T) {
	cases := map[string]func(p *pb.PathPolicy){
		"topology.path_policy.sla_classes[0].max_rtt_ms":          func(p *pb.PathPolicy) { p.SlaClasses[0].MaxRttMs = math.NaN() },
		"topology.path_policy.sla_classes[1].max_jitter_ms":       func(p *pb.PathPolicy) { p.SlaClasses[1].MaxJitterMs = math.Inf(1) },
		"topology.path_policy.traffic_classes[0].dscp[1]":         func(p *pb.PathPolicy) { p.TrafficClasses[0].Dscp[1] = 300 },
		"topology.path_policy.traffic_classes[0].ports[1]":        func(p *pb.PathPolicy) { p.TrafficClasses[0].Ports[1] = "http" },
		"topology.path_policy.traffic_classes[0].destinations[0]": func(p *pb.PathPolicy) { p.TrafficClasses[0].Destinations[0] = "10.0.0.1/8" },
	}
	for field, edit := range cases {
		p := wirePolicy()
		edit(p)
		_, err := topologyFromPB(&pb.Topology{PathPolicy: p})
		if !errors.Is(err, intent.ErrInvalid) || !strings.Contains(err.Error(), field+":") {
			t.Errorf("%s: err = %v, want ErrInvalid naming it", field, err)
		}
	}
}

// TestReportFromPB: every new status field arrives, figures that JSON
// cannot hold are cleaned, and the report survives its etcd encoding.
func TestReportFromPB(t *testing.T) {
	rep := reportFromPB("v1", &pb.EdgeReport{AppliedVersion: 3,
		Tunnels: []*pb.TunnelStatus{{TunnelId: "t", State: pb.TunnelState_TUNNEL_STATE_DEGRADED, Probed: true, ProbeState: "up",
			RttMs: 12.5, RttP99Ms: math.Inf(1), JitterMs: math.NaN(), LossPct: 250, Transitions: 4, Usable: true}},
		ClassPaths: []*pb.ClassPath{{TrafficClass: "voice", RemoteSite: "hub", TunnelId: "t", MeetsSla: true}}}, limitsFor(1))
	want := health.TunnelStatus{TunnelID: "t", State: "degraded", Probed: true, ProbeState: "up", RTTMillis: 12.5, LossPct: 100, Transitions: 4, Usable: true}
	if len(rep.Tunnels) != 1 || rep.Tunnels[0] != want {
		t.Errorf("tunnel status %+v, want %+v", rep.Tunnels, want)
	}
	if len(rep.ClassPaths) != 1 || rep.ClassPaths[0] != (health.ClassPath{TrafficClass: "voice", RemoteSite: "hub", TunnelID: "t", MeetsSLA: true}) {
		t.Errorf("class paths %+v", rep.ClassPaths)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("report cannot be stored: %v", err)
	}
	st := statusToPB(health.Status{State: health.Up, Report: rep})
	if len(st.Tunnels) != 1 || st.Tunnels[0].RttMs != 12.5 || st.Tunnels[0].ProbeState != "up" || !st.Tunnels[0].Usable ||
		st.Tunnels[0].State != pb.TunnelState_TUNNEL_STATE_DEGRADED || len(st.ClassPaths) != 1 || st.ClassPaths[0].TunnelId != "t" {
		t.Errorf("SiteStatus %v", st)
	}
	// The stored form uses snake_case keys and omits what is unset.
	raw, _ := json.Marshal(health.TunnelStatus{TunnelID: "t", State: "up", Probed: true, RTTMillis: 1})
	if s := string(raw); !strings.Contains(s, `"rtt_ms":1`) || strings.Contains(s, "loss_pct") || strings.Contains(s, "usable") {
		t.Errorf("stored tunnel status %s", s)
	}
}

// TestReportBounded: a report cannot hold more entries than the site's
// tunnels explain, nor long strings (one 4 MiB message of empty statuses
// once became a 90 MB report).
func TestReportBounded(t *testing.T) {
	r := &pb.EdgeReport{}
	for range 10000 {
		r.Tunnels = append(r.Tunnels, &pb.TunnelStatus{TunnelId: strings.Repeat("x", 1<<12), Detail: strings.Repeat("d", 1<<16)})
		r.BgpPeers = append(r.BgpPeers, &pb.BGPPeerStatus{Neighbor: "10.255.0.2"})
	}
	rep := reportFromPB(strings.Repeat("v", 1<<20), r, limitsFor(4))
	if len(rep.Tunnels) != 4+reportSlack || len(rep.BGPPeers) != 4+reportSlack+256 {
		t.Fatalf("kept %d tunnels and %d BGP peers for a site of 4 tunnels", len(rep.Tunnels), len(rep.BGPPeers))
	}
	if len(rep.AgentVersion) > 64 || len(rep.Tunnels[0].TunnelID) > maxReportString || len(rep.Tunnels[0].Detail) > maxDetail {
		t.Fatalf("strings not bounded: agent %d, tunnel id %d, detail %d bytes", len(rep.AgentVersion), len(rep.Tunnels[0].TunnelID), len(rep.Tunnels[0].Detail))
	}
}

// Key rotation fields cross the API boundary: the tunnel's serial and
// phase (never a key), an edge's accepted keys and serial, and the
// serial an edge reports.
func TestRotationFieldsConvert(t *testing.T) {
	tv := network.TunnelView{Tunnel: network.Tunnel{ID: "a.x~b.x", PSKSerial: 3, PSKRotation: network.RotationCommitted,
		SealedPSK: []byte("sealed"), SealedAcceptPSK: []byte("sealed-too")}}
	p := tunnelToPB(tv)
	if p.PskSerial != 3 || p.PskRotation != "committed" || p.PskRotatedAt != nil {
		t.Errorf("tunnel %v", p)
	}
	if old := tunnelToPB(network.TunnelView{}); old.PskSerial != 1 {
		t.Errorf("a record without a serial reads as %d, want 1", old.PskSerial)
	}
	d := desiredToPB(network.DesiredState{Tunnels: []network.EdgeTunnel{{ID: "t", PSK: []byte("k1"), AcceptPSKs: [][]byte{[]byte("k2")}, PSKSerial: 2}}})
	if et := d.Tunnels[0]; et.PskSerial != 2 || len(et.AcceptPsks) != 1 || string(et.AcceptPsks[0]) != "k2" {
		t.Errorf("edge tunnel %v", et)
	}
	rep := reportFromPB("v1", &pb.EdgeReport{Tunnels: []*pb.TunnelStatus{{TunnelId: "t", PskSerial: 7}}}, limitsFor(1))
	if rep.Tunnels[0].PSKSerial != 7 || statusToPB(health.Status{State: health.Up, Report: rep}).Tunnels[0].PskSerial != 7 {
		t.Errorf("reported serial %+v", rep.Tunnels[0])
	}
}

// TestInitiatorConverts: the admin API shows a tunnel's initiator ("a"
// for a record written before it existed), and each end's desired state
// says whether that end initiates or responds.
func TestInitiatorConverts(t *testing.T) {
	for _, tc := range []struct {
		stored topology.Side
		want   string
	}{{"", "a"}, {topology.SideA, "a"}, {topology.SideB, "b"}} {
		if got := tunnelToPB(network.TunnelView{Tunnel: network.Tunnel{Initiator: tc.stored}}).Initiator; got != tc.want {
			t.Errorf("stored initiator %q shows as %q, want %q", tc.stored, got, tc.want)
		}
	}
	d := desiredToPB(network.DesiredState{Tunnels: []network.EdgeTunnel{{ID: "i", Initiator: true}, {ID: "r"}}})
	if d.Tunnels[0].Role != pb.TunnelRole_TUNNEL_ROLE_INITIATOR || d.Tunnels[1].Role != pb.TunnelRole_TUNNEL_ROLE_RESPONDER {
		t.Errorf("roles %v %v, want initiator and responder", d.Tunnels[0].Role, d.Tunnels[1].Role)
	}
}

package daemon_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// docsTopology is the path policy example of docs/api.md, read from the
// page so that the documented request is the tested one.
func docsTopology(t *testing.T) string {
	t.Helper()
	page, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(page), "/v1/topology -d '")
	body, _, ok2 := strings.Cut(after, "\n}'")
	if !ok || !ok2 {
		t.Fatal("docs/api.md: no `curl -X PUT ... /v1/topology -d '{...}'` example")
	}
	return body + "\n}"
}

func rest(t *testing.T, e *env, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.d.HTTPAddr.String()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.d.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPathPolicyAPI: a path policy set over REST (the docs' example) comes
// back from GetTopology over gRPC and REST with the defaults filled in, and
// reaches the edges' desired state; before it is set, edges get the
// defaults.
func TestPathPolicyAPI(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hub", true, 1), site("br1", false, 2))
	stream := syncStream(t, e, e.enroll(t, "br1"))
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	defaults := &pb.PathPolicy{ProbeIntervalMs: 100, DownAfter: 5, UpAfter: 3, HoldDownMs: 2000}
	if !proto.Equal(first.PathPolicy, defaults) {
		t.Errorf("desired state without a policy carries %v, want the defaults %v", first.PathPolicy, defaults)
	}

	code, body := rest(t, e, "PUT", "/v1/topology", docsTopology(t))
	if code != 200 {
		t.Fatalf("PUT /v1/topology: %d %s", code, body)
	}
	want := &pb.PathPolicy{ProbeIntervalMs: 100, DownAfter: 5, UpAfter: 3, HoldDownMs: 2000,
		SlaClasses: []*pb.SLAClass{
			{Name: "realtime", MaxRttMs: 150, MaxLossPct: 2, MaxJitterMs: 30, TransportPreference: []string{"inet1", "inet2"}, DampingMs: 2000},
			{Name: "bulk", MaxLossPct: 10, TransportPreference: []string{"inet2", "inet1"}, DampingMs: 2000},
		},
		TrafficClasses: []*pb.TrafficClass{
			{Name: "voice", SlaClass: "realtime", Protocol: "udp", Ports: []string{"5004-5005"}},
			{Name: "voice-dscp", SlaClass: "realtime", Dscp: []uint32{46}},
			{Name: "bulk", SlaClass: "bulk", Protocol: "tcp"},
		}}
	var put pb.Topology
	if err := protojson.Unmarshal([]byte(body), &put); err != nil || !proto.Equal(put.PathPolicy, want) {
		t.Errorf("PUT answered %s (%v), want path_policy %v", body, err, want)
	}
	got, err := e.admin.GetTopology(e.ctx, &pb.GetTopologyRequest{})
	if err != nil || !proto.Equal(got.PathPolicy, want) {
		t.Errorf("GetTopology: %v %v, want path_policy %v", got, err, want)
	}
	code, body = rest(t, e, "GET", "/v1/topology", "")
	var rt struct {
		PathPolicy struct {
			TrafficClasses []struct {
				Ports []string `json:"ports"`
			} `json:"traffic_classes"`
		} `json:"path_policy"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &rt) != nil || len(rt.PathPolicy.TrafficClasses) != 3 || rt.PathPolicy.TrafficClasses[0].Ports[0] != "5004-5005" {
		t.Errorf("GET /v1/topology: %d %s", code, body)
	}

	// The edge gets a new desired state with the policy.
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(next.PathPolicy, want) {
		t.Errorf("desired state carries %v, want %v", next.PathPolicy, want)
	}
}

// TestBadPathPolicyRefused: every bad policy is refused with
// InvalidArgument naming the field, over gRPC and REST, and leaves the
// stored topology unchanged.
func TestBadPathPolicyRefused(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hub", true, 1), site("br1", false, 2))
	good := &pb.PathPolicy{SlaClasses: []*pb.SLAClass{{Name: "realtime", MaxRttMs: 150}},
		TrafficClasses: []*pb.TrafficClass{{Name: "voice", SlaClass: "realtime", Protocol: "udp", Ports: []string{"5060"}}}}
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, PathPolicy: good}}); err != nil {
		t.Fatal(err)
	}
	bad := func(edit func(p *pb.PathPolicy)) *pb.Topology {
		p := proto.Clone(good).(*pb.PathPolicy)
		edit(p)
		return &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, PathPolicy: p}
	}
	cases := []struct {
		name  string
		top   *pb.Topology
		field string
	}{
		{"interval", bad(func(p *pb.PathPolicy) { p.ProbeIntervalMs = 5 }), "topology.path_policy.probe_interval_ms: 5 is outside 20..10000"},
		{"down_after", bad(func(p *pb.PathPolicy) { p.DownAfter = 1 }), "topology.path_policy.down_after"},
		{"up_after", bad(func(p *pb.PathPolicy) { p.UpAfter = 500 }), "topology.path_policy.up_after"},
		{"hold-down", bad(func(p *pb.PathPolicy) { p.HoldDownMs = 700000 }), "topology.path_policy.hold_down_ms"},
		{"SLA name", bad(func(p *pb.PathPolicy) { p.SlaClasses[0].Name = "Real Time" }), "topology.path_policy.sla_classes[0].name"},
		{"negative RTT", bad(func(p *pb.PathPolicy) { p.SlaClasses[0].MaxRttMs = -1 }), "topology.path_policy.sla_classes[0].max_rtt_ms"},
		{"loss", bad(func(p *pb.PathPolicy) { p.SlaClasses[0].MaxLossPct = 101 }), "topology.path_policy.sla_classes[0].max_loss_pct"},
		{"damping", bad(func(p *pb.PathPolicy) { p.SlaClasses[0].DampingMs = 600001 }), "topology.path_policy.sla_classes[0].damping_ms"},
		{"transport twice", bad(func(p *pb.PathPolicy) { p.SlaClasses[0].TransportPreference = []string{"inet1", "inet1"} }), "topology.path_policy.sla_classes[0].transport_preference[1]"},
		{"unknown SLA class", bad(func(p *pb.PathPolicy) {
			p.TrafficClasses = append(p.TrafficClasses, &pb.TrafficClass{Name: "video", SlaClass: "gold"})
		}), `topology.path_policy.traffic_classes[1].sla_class: "gold" is not a defined SLA class`},
		{"DSCP", bad(func(p *pb.PathPolicy) { p.TrafficClasses[0].Dscp = []uint32{64} }), "topology.path_policy.traffic_classes[0].dscp[0]"},
		{"protocol", bad(func(p *pb.PathPolicy) { p.TrafficClasses[0].Protocol = "gre" }), "topology.path_policy.traffic_classes[0].protocol"},
		{"ports without protocol", bad(func(p *pb.PathPolicy) { p.TrafficClasses[0].Protocol = "" }), "topology.path_policy.traffic_classes[0].ports"},
		{"port", bad(func(p *pb.PathPolicy) { p.TrafficClasses[0].Ports = []string{"5060", "70000"} }), "topology.path_policy.traffic_classes[0].ports[1]"},
		{"destination", bad(func(p *pb.PathPolicy) { p.TrafficClasses[0].Destinations = []string{"10.1.2.3/16"} }), "topology.path_policy.traffic_classes[0].destinations[0]"},
	}
	before, err := e.admin.GetTopology(e.ctx, &pb.GetTopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: tc.top})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Errorf("gRPC: got %v, want InvalidArgument naming %q", err, tc.field)
			}
			raw, _ := protojson.Marshal(tc.top)
			code, body := rest(t, e, "PUT", "/v1/topology", string(raw))
			if code != 400 || !strings.Contains(body, strings.ReplaceAll(tc.field, `"`, `\"`)) {
				t.Errorf("REST: %d %s, want 400 naming %q", code, body, tc.field)
			}
		})
	}
	after, err := e.admin.GetTopology(e.ctx, &pb.GetTopologyRequest{})
	if err != nil || !proto.Equal(before, after) {
		t.Errorf("refused policies changed the topology:\nbefore %v\nafter  %v", before, after)
	}
	if ts, _ := e.admin.ListTunnels(e.ctx, &pb.ListTunnelsRequest{}); len(ts.GetTunnels()) != 1 {
		t.Errorf("%d tunnels after refused hub-and-spoke changes, want the mesh's 1", len(ts.GetTunnels()))
	}
}

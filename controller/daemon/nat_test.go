package daemon_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/api"
	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/edge/dataplane/validity"
	"github.com/meshwan/meshwan/edge/syncer"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// hostAddr is an IPv4 address of this host usable as a WAN underlay (not
// loopback): a connection to it arrives from it, as a connection through
// a NAT arrives from the NAT's public address.
func hostAddr(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err == nil && p.Addr().Is4() && validity.Underlay(p.Addr()) == nil {
			return p.Addr()
		}
	}
	t.Skip("no non-loopback IPv4 address on this host to connect from")
	return netip.Addr{}
}

// syncVia opens a Sync stream for cert, naming egress (unless "") as the
// transport the connection leaves by, with a Hello reporting transports,
// and returns the first desired state sent. The stream ends with the call.
func syncVia(t *testing.T, e *env, cert tls.Certificate, egress string, transports map[string]string) *pb.DesiredState {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if egress != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, syncer.EgressTransportKey, egress)
	}
	stream, err := pb.NewEdgeServiceClient(dial(t, e.d, &cert)).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.Hello{AgentVersion: "test"}
	for name, a := range transports {
		hello.Transports = append(hello.Transports, &pb.Transport{Name: name, Address: a})
	}
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	st, err := stream.Recv()
	if err != nil {
		t.Fatalf("the stream ended: %v", err)
	}
	return st
}

// TestNATAddressLearntFromConnection: an edge behind NAT reports the
// private address it sees on its interface and names the transport its
// controller connection leaves by; the controller records, for that
// dynamic transport, the address the connection comes from (the NAT's
// public one), and the hub's desired state follows it without operator
// action. An edge that names no transport (older agent) gets its own
// report recorded as before; the other dynamic transports keep their
// reported addresses; a static transport records nothing.
func TestNATAddressLearntFromConnection(t *testing.T) {
	if api.EgressTransportKey != syncer.EgressTransportKey {
		t.Fatalf("controller reads metadata %q, the edge sends %q", api.EgressTransportKey, syncer.EgressTransportKey)
	}
	host := hostAddr(t)
	e := startWith(t, "10.255.0.0/16", func(c *daemon.Config) { c.GRPCListen = netip.AddrPortFrom(host, 0).String() })
	br1 := site("br1", false, 2)
	br1.Transports = []*pb.Transport{{Name: "inet1", Address: "dynamic"}, {Name: "lte", Address: "dynamic"}}
	e.mustCreate(t, site("hq", true, 1), br1)
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}}); err != nil {
		t.Fatal(err)
	}
	br1Cert, hqCert := e.enroll(t, "br1"), e.enroll(t, "hq")
	stored := func(site string) map[string]netip.Addr {
		var m map[string]netip.Addr
		e.d.Net.Read(func(s *network.Snapshot) { m = s.Observed[site] })
		return m
	}
	hqTunnelToBR1 := func(what string) string {
		st := edgeAccepts(t, what, syncVia(t, e, hqCert, "", nil))
		for _, tun := range st.Desired.Tunnels {
			if tun.RemoteSite == "br1" {
				return tun.RemoteUnderlay.String()
			}
		}
		return "none"
	}

	// An older edge: its own report is all there is.
	syncVia(t, e, br1Cert, "", map[string]string{"inet1": "203.0.113.20", "lte": "203.0.113.9"})
	if got := stored("br1"); got["inet1"].String() != "203.0.113.20" || got["lte"].String() != "203.0.113.9" {
		t.Fatalf("without an egress transport: stored %v, want the reported addresses", got)
	}
	if got := hqTunnelToBR1("hq, br1 self-reported"); got != "203.0.113.20" {
		t.Fatalf("hq's tunnel to br1 goes to %s, want 203.0.113.20", got)
	}

	// Behind NAT: the edge sees 10.0.0.9 on inet1's interface; the
	// connection arrives from host.
	edgeAccepts(t, "br1 behind NAT", syncVia(t, e, br1Cert, "inet1", map[string]string{"inet1": "10.0.0.9", "lte": "203.0.113.9"}))
	if got := stored("br1"); got["inet1"] != host || got["lte"].String() != "203.0.113.9" {
		t.Fatalf("behind NAT: stored %v, want inet1 %s (the connection's) and lte 203.0.113.9 (reported)", got, host)
	}
	if got := hqTunnelToBR1("hq after br1 connected through NAT"); got != host.String() {
		t.Fatalf("hq's tunnel to br1 goes to %s, want the connection's address %s", got, host)
	}

	// A static transport's connection address is not recorded.
	syncVia(t, e, hqCert, "inet1", map[string]string{"inet1": "198.51.100.1"})
	if got := stored("hq"); len(got) != 0 {
		t.Fatalf("hq (static) has observed addresses %v, want none", got)
	}
}

// TestUnjoinedPairsShown: two sites whose only transports are dynamic get
// no tunnel in a full mesh; GetTopology, SetTopology's answer, the REST
// topology and /metrics name the pair, and hub-and-spoke (through the
// hub) leaves none.
func TestUnjoinedPairsShown(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	b1, b2 := site("b1", false, 2), site("b2", false, 3)
	b1.Transports = []*pb.Transport{{Name: "inet1", Address: "dynamic"}}
	b2.Transports = []*pb.Transport{{Name: "inet1", Address: "dynamic"}}
	e.mustCreate(t, site("hq", true, 1), b1, b2)
	set, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH,
		Unjoined: []*pb.SitePair{{A: "ignored", B: "on input"}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []*pb.SitePair{{A: "b1", B: "b2"}}
	got, err := e.admin.GetTopology(e.ctx, &pb.GetTopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for what, u := range map[string][]*pb.SitePair{"SetTopology": set.GetUnjoined(), "GetTopology": got.GetUnjoined()} {
		if len(u) != 1 || !proto.Equal(u[0], want[0]) {
			t.Errorf("%s unjoined = %v, want %v", what, u, want)
		}
	}
	code, body := e.get(t, "/v1/topology", e.d.AdminToken)
	var rest pb.Topology
	if err := protojson.Unmarshal([]byte(body), &rest); code != 200 || err != nil || len(rest.GetUnjoined()) != 1 || !proto.Equal(rest.GetUnjoined()[0], want[0]) {
		t.Errorf("GET /v1/topology: %d %v %s, want unjoined b1~b2", code, err, body)
	}
	if _, body := e.get(t, "/metrics", ""); !strings.Contains(body, "meshwan_unjoined_site_pairs 1\n") {
		t.Errorf("/metrics lacks meshwan_unjoined_site_pairs 1")
	}
	hs, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs.GetUnjoined()) != 0 {
		t.Errorf("hub-and-spoke unjoined = %v, want none (spokes reach each other through hq)", hs.GetUnjoined())
	}
	if _, body := e.get(t, "/metrics", ""); !strings.Contains(body, "meshwan_unjoined_site_pairs 0\n") {
		t.Errorf("/metrics lacks meshwan_unjoined_site_pairs 0 after hub-and-spoke")
	}
}

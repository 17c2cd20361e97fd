package daemon_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/edge/syncer"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// helloWith opens a Sync stream for cert whose Hello reports addrs for
// transport inet1, and returns the first desired state the controller
// sends: the stream keeps working after the Hello. The stream ends with
// the call.
func helloWith(t *testing.T, e *env, cert tls.Certificate, addr string) *pb.DesiredState {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := pb.NewEdgeServiceClient(dial(t, e.d, &cert)).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.Hello{AgentVersion: "test", Transports: []*pb.Transport{{Name: "inet1", Address: addr}}}
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	st, err := stream.Recv()
	if err != nil {
		t.Fatalf("reporting %s: the stream ended: %v", addr, err)
	}
	return st
}

// edgeAccepts converts a desired state as the edge does and validates it.
func edgeAccepts(t *testing.T, what string, d *pb.DesiredState) syncer.State {
	t.Helper()
	st, err := syncer.FromPB(d)
	if err != nil {
		t.Fatalf("%s: FromPB: %v", what, err)
	}
	if err := st.Desired.Validate(); err != nil {
		t.Fatalf("%s: the edge refuses its state: %v", what, err)
	}
	return st
}

// TestEdgeReportedAddressValidated: an enrolled edge reports addresses for
// its dynamic transport over a real Sync stream. A good one is stored and
// reaches the peers; a bad one (loopback, unspecified, multicast, another
// site's underlay, a tunnel-pool address, an address inside a peer's LAN,
// garbage) leaves the stored address unchanged, does not end the edge's
// stream, shows up as a dashboard event, and leaves the peers' desired
// states unchanged and valid.
func TestEdgeReportedAddressValidated(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	br1 := site("br1", false, 2)
	br1.Transports[0].Address = "dynamic"
	e.mustCreate(t, site("hq", true, 1), br1, site("br2", false, 3))
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH}}); err != nil {
		t.Fatal(err)
	}
	br1Cert, hqCert := e.enroll(t, "br1"), e.enroll(t, "hq")

	stored := func() netip.Addr {
		var a netip.Addr
		e.d.Net.Read(func(s *network.Snapshot) { a = s.Observed["br1"]["inet1"] })
		return a
	}
	good := "203.0.113.9"
	edgeAccepts(t, "br1 reporting "+good, helloWith(t, e, br1Cert, good))
	if got := stored(); got.String() != good {
		t.Fatalf("stored address %v, want %s", got, good)
	}
	peerTunnel := func(what string) string {
		st := edgeAccepts(t, what, helloWith(t, e, hqCert, "198.51.100.1"))
		for _, tun := range st.Desired.Tunnels {
			if tun.RemoteSite == "br1" {
				return tun.RemoteUnderlay.String()
			}
		}
		t.Fatalf("%s: hq has no tunnel to br1", what)
		return ""
	}
	if got := peerTunnel("hq after a good report"); got != good {
		t.Fatalf("hq's tunnel to br1 goes to %s, want %s", got, good)
	}

	for _, bad := range []string{"127.0.0.1", "0.0.0.0", "224.0.0.1", "198.51.100.3" /* br2 */, "10.255.0.5" /* pool */, "10.3.0.7" /* br2's LAN */, "10.2.0.1" /* its own LAN */, "not-an-address-" + strings.Repeat("x", 500)} {
		edgeAccepts(t, "br1 after reporting "+bad[:min(len(bad), 20)], helloWith(t, e, br1Cert, bad))
		if got := stored(); got.String() != good {
			t.Errorf("after reporting %.20s: stored address %v, want %s kept", bad, got, good)
		}
		found := false
		for _, ev := range e.d.Events.Recent() {
			if strings.Contains(ev.What, "br1") && strings.Contains(ev.What, "refused") && strings.Contains(ev.What, bad[:min(len(bad), 20)]) {
				found = true
				if len(ev.What) > 600 {
					t.Errorf("event of %d bytes: it quotes unbounded input", len(ev.What))
				}
			}
		}
		if !found {
			t.Errorf("reporting %.20s: no refusal event", bad)
		}
		if got := peerTunnel("hq after br1 reported " + bad[:min(len(bad), 20)]); got != good {
			t.Errorf("after reporting %.20s: hq's tunnel to br1 goes to %s, want %s", bad, got, good)
		}
	}
	got := e.d.Net.RefusedAddresses()
	if got < 7 {
		t.Errorf("RefusedAddresses = %d, want at least 7", got)
	}
	resp, err := http.Get("http://" + e.d.HTTPAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{fmt.Sprintf("meshwan_reported_addresses_refused_total %d", got), "meshwan_intent_violations 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

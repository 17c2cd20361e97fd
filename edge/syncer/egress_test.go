package syncer

import (
	"net/netip"
	"testing"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/metadata"
)

func TestEgressTransport(t *testing.T) {
	a := netip.MustParseAddr
	tr := map[string]netip.Addr{"inet1": a("172.16.1.2"), "lte": a("10.64.0.7"), "lte2": a("10.64.0.7")}
	for _, c := range []struct {
		local netip.Addr
		want  string
	}{
		{a("172.16.1.2"), "inet1"},
		{a("10.64.0.7"), "lte"}, // two transports on one address: the first by name
		{a("192.0.2.6"), ""},    // a management link
		{netip.Addr{}, ""},
	} {
		if got := EgressTransport(tr, c.local); got != c.want {
			t.Errorf("EgressTransport(%v) = %q, want %q", c.local, got, c.want)
		}
	}
}

// TestEgressAddrFollowsRoute: the source address towards a loopback
// controller is a loopback address (the kernel's choice, no packet sent).
func TestEgressAddrFollowsRoute(t *testing.T) {
	if got := egressAddr(t.Context(), "127.0.0.1:7400"); got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("egressAddr = %v, want 127.0.0.1", got)
	}
}

// TestTransportsReportedAndLocalized: with Config.Transports, the Hello
// reports every transport's interface address, the stream's metadata
// names the transport whose address is the source towards the
// controller, and a desired state whose underlay for that transport is
// not the interface's (a NAT's public address) reaches the agent with
// the tunnel running from the interface's address and identified by the
// public one.
func TestTransportsReportedAndLocalized(t *testing.T) {
	ca := newTestCA(t)
	addr, es := startServer(t, ca)
	lo, lte := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("203.0.113.9")
	r := run(t, Config{Controller: addr, Identity: ca.validIdentity(t),
		Transports: func() map[string]netip.Addr { return map[string]netip.Addr{"inet1": lo, "lte": lte} }})
	c := nextCall(t, es)
	got := map[string]string{}
	for _, tr := range c.hello.GetTransports() {
		got[tr.GetName()] = tr.GetAddress()
	}
	if len(got) != 2 || got["inet1"] != "127.0.0.1" || got["lte"] != "203.0.113.9" {
		t.Errorf("Hello transports %v, want inet1 127.0.0.1 and lte 203.0.113.9", got)
	}
	md, _ := metadata.FromIncomingContext(c.stream.Context())
	if v := md.Get(EgressTransportKey); len(v) != 1 || v[0] != "inet1" {
		t.Errorf("metadata %s = %v, want [inet1] (the transport on the source address towards the controller)", EgressTransportKey, v)
	}
	st := minimalState(1, "h1")
	st.Tunnels = []*pb.EdgeTunnel{{Id: "hub.inet1~hq.inet1", LocalUnderlay: "198.51.100.6", RemoteUnderlay: "198.51.100.2",
		LocalInner: "10.255.0.2/30", RemoteInner: "10.255.0.1", LocalTransport: "inet1", RemoteTransport: "inet1", RemoteSite: "hub"}}
	if err := c.stream.Send(st); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-r.s.Updates():
		tn := s.Desired.Tunnels[0]
		if tn.LocalUnderlay != lo || tn.PublicUnderlay != netip.MustParseAddr("198.51.100.6") || tn.Passive {
			t.Errorf("tunnel local %s public %s passive %v; want 127.0.0.1, 198.51.100.6, active", tn.LocalUnderlay, tn.PublicUnderlay, tn.Passive)
		}
	case <-time.After(wait):
		t.Fatal("no desired state")
	}
}

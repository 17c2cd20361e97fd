package syncer

import (
	"net/netip"
	"testing"
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

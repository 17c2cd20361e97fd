package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestLocalize(t *testing.T) {
	a := netip.MustParseAddr
	show := func(d Desired) string {
		var b strings.Builder
		for _, t := range d.Tunnels {
			fmt.Fprintf(&b, "%s local=%s public=%s passive=%v\n", t.ID, t.LocalUnderlay, t.PublicUnderlay, t.Passive)
		}
		return b.String()
	}
	sent := Desired{Tunnels: []Tunnel{
		// behind NAT: the controller sends the NAT's public address
		{ID: "hub.inet1~br1.inet1", LocalTransport: "inet1", LocalUnderlay: a("198.51.100.6"), Passive: true},
		// a public address on the interface
		{ID: "hub.lte~br1.lte", LocalTransport: "lte", LocalUnderlay: a("203.0.113.9"), Passive: true},
		// a transport not given with --transport
		{ID: "hub.mpls~br1.mpls", LocalTransport: "mpls", LocalUnderlay: a("100.64.0.6"), Passive: true},
	}}
	iface := map[string]netip.Addr{"inet1": a("172.16.1.2"), "lte": a("203.0.113.9")}
	got := Localize(sent, iface)
	want := `hub.inet1~br1.inet1 local=172.16.1.2 public=198.51.100.6 passive=false
hub.lte~br1.lte local=203.0.113.9 public=invalid IP passive=true
hub.mpls~br1.mpls local=100.64.0.6 public=invalid IP passive=true
`
	if s := show(got); s != want {
		t.Errorf("Localize:\n%s\nwant:\n%s", s, want)
	}
	if sent.Tunnels[0].LocalUnderlay != a("198.51.100.6") {
		t.Errorf("Localize modified its input")
	}
	if id := got.Tunnels[0].LocalIdentity(); id != a("198.51.100.6") {
		t.Errorf("LocalIdentity behind NAT = %s, want the public address", id)
	}
	if id := got.Tunnels[1].LocalIdentity(); id != a("203.0.113.9") {
		t.Errorf("LocalIdentity = %s, want the underlay", id)
	}
	// Idempotent; a renumbered private address is followed; the NAT gone
	// (the interface now holds the public address) restores the tunnel.
	if s := show(Localize(got, iface)); s != want {
		t.Errorf("Localize twice:\n%s\nwant:\n%s", s, want)
	}
	renum := Localize(got, map[string]netip.Addr{"inet1": a("172.16.1.6")})
	if tn := renum.Tunnels[0]; tn.LocalUnderlay != a("172.16.1.6") || tn.PublicUnderlay != a("198.51.100.6") {
		t.Errorf("renumbered: local %s public %s, want 172.16.1.6 and 198.51.100.6", tn.LocalUnderlay, tn.PublicUnderlay)
	}
	gone := Localize(got, map[string]netip.Addr{"inet1": a("198.51.100.6")})
	if tn := gone.Tunnels[0]; tn.LocalUnderlay != a("198.51.100.6") || tn.PublicUnderlay.IsValid() {
		t.Errorf("no NAT any more: local %s public %s, want 198.51.100.6 and none", tn.LocalUnderlay, tn.PublicUnderlay)
	}
}

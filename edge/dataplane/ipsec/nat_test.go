package ipsec

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane"
)

// TestBehindNATConnection: a tunnel localized behind NAT runs from the
// interface's address and identifies itself (and owns its PSK) by the
// public address the peer expects.
func TestBehindNATConnection(t *testing.T) {
	sent := dataplane.Desired{Tunnels: []dataplane.Tunnel{{ID: "hub.inet1~br1.inet1", LocalTransport: "inet1",
		LocalUnderlay: netip.MustParseAddr("198.51.100.6"), RemoteUnderlay: netip.MustParseAddr("198.51.100.2"), Passive: true}}}
	tn := dataplane.Localize(sent, map[string]netip.Addr{"inet1": netip.MustParseAddr("172.16.1.2")}).Tunnels[0]
	c := connConfigOf(tn)
	if !slices.Equal(c.LocalAddrs, []string{"172.16.1.2"}) || !slices.Equal(c.RemoteAddrs, []string{"198.51.100.2"}) {
		t.Errorf("addrs local %v remote %v, want 172.16.1.2 and 198.51.100.2", c.LocalAddrs, c.RemoteAddrs)
	}
	if c.Local.ID != "198.51.100.6" || c.Remote.ID != "198.51.100.2" {
		t.Errorf("ids local %s remote %s, want 198.51.100.6 (public) and 198.51.100.2", c.Local.ID, c.Remote.ID)
	}
	if c.Children[ChildName].StartAction != "trap|start" {
		t.Errorf("start_action %q: the end behind NAT must initiate", c.Children[ChildName].StartAction)
	}
	if o := secretOf(tn).Owners; !slices.Equal(o, []string{"198.51.100.6", "198.51.100.2"}) {
		t.Errorf("secret owners %v, want the two identities", o)
	}
	if !(observedConn{localAddrs: c.LocalAddrs, remoteAddrs: c.RemoteAddrs, children: []string{ChildName}}).matches(tn) {
		t.Error("the loaded connection does not match its tunnel: it would be reloaded on every apply")
	}
}

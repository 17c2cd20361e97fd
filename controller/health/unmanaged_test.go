package health

import (
	"reflect"
	"testing"
	"time"
)

// TestManagedEnds: an unmanaged site's tunnels are shown as their managed
// far ends report them (with the far end's BGP session over each); a far
// end that is down, not reporting the tunnel yet, or unmanaged too leaves
// the tunnel unknown with the reason; the site is never down or never
// seen.
func TestManagedEnds(t *testing.T) {
	at := time.Date(2026, 12, 3, 19, 0, 0, 0, time.UTC)
	all := map[string]Status{
		"hub": {State: Up, Report: Report{Site: "hub", UpdatedAt: at,
			Tunnels: []TunnelStatus{
				{TunnelID: "hub.inet1~remote.inet1", State: "up", LinkUp: true, IKEState: "ESTABLISHED", ChildState: "INSTALLED", Probed: true, ProbeState: "up", RTTMillis: 12, Usable: true},
				{TunnelID: "hub.inet1~other.inet1", State: "up"},
			},
			BGPPeers: []BGPPeer{{Neighbor: "10.255.0.2", ASN: 65002, TunnelID: "hub.inet1~remote.inet1", State: "established", Received: 1}, {Neighbor: "10.255.0.6", TunnelID: "hub.inet1~other.inet1"}}}},
		"hub2":   {State: Up, Report: Report{Site: "hub2", UpdatedAt: at.Add(-time.Second)}},
		"hub3":   {State: Down, LastSeen: at},
		"remote": {State: Unmanaged},
		"tp2":    {State: Unmanaged},
	}
	got := ManagedEnds(map[string]string{
		"hub.inet1~remote.inet1":  "hub",
		"hub2.inet1~remote.inet1": "hub2",
		"hub3.inet1~remote.inet1": "hub3",
		"remote.inet1~tp2.inet1":  "tp2",
		"remote.inet1~tp9.inet1":  "tp9", // no status at all: never seen
	}, all)
	want := Status{State: Unmanaged, Report: Report{UpdatedAt: at,
		Tunnels: []TunnelStatus{
			{TunnelID: "hub.inet1~remote.inet1", State: "up", LinkUp: true, IKEState: "ESTABLISHED", ChildState: "INSTALLED", Probed: true, ProbeState: "up", RTTMillis: 12, Usable: true, Detail: "as reported by hub"},
			{TunnelID: "hub2.inet1~remote.inet1", State: TunnelUnknown, Detail: "the edge of hub2 does not report this tunnel yet"},
			{TunnelID: "hub3.inet1~remote.inet1", State: TunnelUnknown, Detail: "the edge of hub3 is not connected"},
			{TunnelID: "remote.inet1~tp2.inet1", State: TunnelUnknown, Detail: "both ends are unmanaged: nothing reports this tunnel"},
			{TunnelID: "remote.inet1~tp9.inet1", State: TunnelUnknown, Detail: "the edge of tp9 is not connected"},
		},
		BGPPeers: []BGPPeer{{Neighbor: "10.255.0.2", ASN: 65002, TunnelID: "hub.inet1~remote.inet1", State: "established", Received: 1}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// The registry's shared report is not modified.
	if all["hub"].Report.Tunnels[0].Detail != "" {
		t.Error("ManagedEnds wrote into the far end's report")
	}
}

package syncer

import (
	"testing"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// TestFromPBPassiveFollowsRole: the controller's role decides which end
// is passive, whatever the inner addresses say (a tunnel created with the
// B end, which holds the higher address, as initiator); without a role (an
// older controller) the end with the higher inner address is passive, as
// before.
func TestFromPBPassiveFollowsRole(t *testing.T) {
	low, high := "10.255.0.1/30", "10.255.0.2/30"
	tests := []struct {
		name        string
		local       string
		remote      string
		role        pb.TunnelRole
		wantPassive bool
	}{
		{"initiator with the lower address", low, "10.255.0.2", pb.TunnelRole_TUNNEL_ROLE_INITIATOR, false},
		{"initiator with the higher address", high, "10.255.0.1", pb.TunnelRole_TUNNEL_ROLE_INITIATOR, false},
		{"responder with the lower address", low, "10.255.0.2", pb.TunnelRole_TUNNEL_ROLE_RESPONDER, true},
		{"responder with the higher address", high, "10.255.0.1", pb.TunnelRole_TUNNEL_ROLE_RESPONDER, true},
		{"older controller, lower address initiates", low, "10.255.0.2", pb.TunnelRole_TUNNEL_ROLE_UNSPECIFIED, false},
		{"older controller, higher address responds", high, "10.255.0.1", pb.TunnelRole_TUNNEL_ROLE_UNSPECIFIED, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tun := tunnelPB("a.inet1~b.inet1", tc.local, tc.remote, "20.0.0.2")
			tun.Role = tc.role
			st, err := FromPB(&pb.DesiredState{Version: 1, Site: "a", Mtu: 1400, Tunnels: []*pb.EdgeTunnel{tun}})
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Desired.Tunnels[0].Passive; got != tc.wantPassive {
				t.Errorf("Passive = %v, want %v", got, tc.wantPassive)
			}
		})
	}
}

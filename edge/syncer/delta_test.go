package syncer

import (
	"errors"
	"slices"
	"testing"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

func tunnelPB(id, inner, remoteInner, underlay string) *pb.EdgeTunnel {
	return &pb.EdgeTunnel{Id: id, LocalTransport: "inet1", LocalUnderlay: "20.0.0.1", RemoteSite: id, RemoteTransport: "inet1",
		RemoteUnderlay: underlay, LocalInner: inner, RemoteInner: remoteInner, Psk: make([]byte, 32)}
}

// TestFoldAppliesDeltasToTheHeldState checks the delta rules: a delta
// applies only to the state whose hash is its base, replaces and adds
// tunnels by id, removes the listed ones, carries the header's MTU to the
// tunnels it does not resend, and a delta on another base is refused
// (the syncer then reconnects for a full state).
func TestFoldAppliesDeltasToTheHeldState(t *testing.T) {
	s := &Syncer{}
	full := &pb.DesiredState{Version: 1, Site: "hub", Mtu: 1400, StateHash: []byte("h1"), Tunnels: []*pb.EdgeTunnel{
		tunnelPB("a", "10.255.0.1/30", "10.255.0.2", "20.0.0.2"),
		tunnelPB("b", "10.255.0.5/30", "10.255.0.6", "20.0.0.3"),
		tunnelPB("c", "10.255.0.9/30", "10.255.0.10", "20.0.0.4"),
	}}
	st, err := s.fold(full)
	if err != nil {
		t.Fatal(err)
	}
	s.held = &st
	delta := &pb.DesiredState{Version: 2, Site: "hub", Mtu: 1380, BaseHash: []byte("h1"), StateHash: []byte("h2"),
		Tunnels:        []*pb.EdgeTunnel{tunnelPB("b", "10.255.0.5/30", "10.255.0.6", "20.9.9.9"), tunnelPB("d", "10.255.0.13/30", "10.255.0.14", "20.0.0.5")},
		RemovedTunnels: []string{"a"}}
	st, err = s.fold(delta)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tun := range st.Desired.Tunnels {
		ids = append(ids, tun.ID)
		if tun.MTU != 1380 {
			t.Errorf("tunnel %s MTU %d, want the delta's 1380", tun.ID, tun.MTU)
		}
	}
	if !slices.Equal(ids, []string{"b", "c", "d"}) {
		t.Fatalf("tunnels after the delta %v, want [b c d]", ids)
	}
	if got := st.Desired.Tunnels[0].RemoteUnderlay.String(); got != "20.9.9.9" {
		t.Errorf("tunnel b underlay %s, want the delta's 20.9.9.9", got)
	}
	if string(st.Hash) != "h2" || st.Version != 2 {
		t.Errorf("state hash %q version %d, want h2 and 2", st.Hash, st.Version)
	}
	if err := st.Desired.Validate(); err != nil {
		t.Errorf("folded state refused: %v", err)
	}
	s.held = &st
	// "What you hold is current" keeps the held state as it is.
	same, err := s.fold(&pb.DesiredState{Version: 9, BaseHash: []byte("h2"), StateHash: []byte("h2")})
	if err != nil || same.Version != 2 || len(same.Desired.Tunnels) != 3 {
		t.Errorf("confirmation: version %d, %d tunnels, %v; want the held state (version 2, 3 tunnels)", same.Version, len(same.Desired.Tunnels), err)
	}
	if _, err := s.fold(&pb.DesiredState{Version: 3, BaseHash: []byte("h1")}); !errors.Is(err, errBase) {
		t.Errorf("delta on a state not held: %v, want errBase", err)
	}
	s.held = nil
	if _, err := s.fold(delta); !errors.Is(err, errBase) {
		t.Errorf("delta with nothing held: %v, want errBase", err)
	}
}

package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
)

// PeerStatus is the observed state of one BGP session.
type PeerStatus struct {
	Addr        netip.Addr
	ASN         uint32
	Description string
	Interface   string
	LAN         bool
	// State is the FSM state in lower case: idle, connect, active,
	// opensent, openconfirm, established.
	State string
	// Uptime is how long the session has been established; 0 otherwise.
	Uptime time.Duration
	// Received counts the IPv4 prefixes the peer sent us (GoBGP's
	// Adj-RIB-In), Accepted those of them in our RIB after loop checks and
	// the import policy (a LAN peer's are all rejected: 0), Advertised
	// what we send it.
	Received, Accepted, Advertised uint64
	// PeerRestarting: the session dropped without a NOTIFICATION and the
	// peer's routes are kept, marked stale, for its restart time.
	PeerRestarting bool
}

func (p PeerStatus) String() string {
	return fmt.Sprintf("%v as %d %s rcvd %d accepted %d adv %d", p.Addr, p.ASN, p.State, p.Received, p.Accepted, p.Advertised)
}

// Status reports every configured session, sorted by address. It changes
// nothing.
func (s *Speaker) Status(ctx context.Context) ([]PeerStatus, error) {
	peers, _ := s.neighbors()
	// GoBGP's own "accepted" counter counts what survived the AS-loop
	// check only, not the import policy; count the RIB instead.
	dests, err := s.rib(ctx)
	if err != nil {
		return nil, fmt.Errorf("bgp status: %w", err)
	}
	inRIB := map[string]uint64{}
	for _, d := range dests {
		for _, p := range d.Paths {
			inRIB[p.NeighborIp]++
		}
	}
	var out []PeerStatus
	err = s.bgp.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := peerStatus(p, peers, time.Now())
		st.Accepted = inRIB[p.GetConf().GetNeighborAddress()]
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("bgp status: %w", err)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Addr.Compare(b.Addr) })
	return out, nil
}

func peerStatus(p *api.Peer, conf map[netip.Addr]Neighbor, now time.Time) PeerStatus {
	var st PeerStatus
	st.Addr, _ = netip.ParseAddr(p.GetConf().GetNeighborAddress())
	st.ASN = p.GetConf().GetPeerAsn()
	if n, ok := conf[st.Addr]; ok {
		st.Description, st.Interface, st.LAN = n.Description, n.Interface, n.LAN
	}
	state := p.GetState().GetSessionState()
	st.State = strings.ToLower(state.String())
	if state == api.PeerState_ESTABLISHED {
		if up := p.GetTimers().GetState().GetUptime(); up != nil {
			st.Uptime = now.Sub(up.AsTime()).Truncate(time.Second)
		}
	}
	st.PeerRestarting = p.GetGracefulRestart().GetPeerRestarting()
	for _, af := range p.AfiSafis {
		f := af.GetConfig().GetFamily()
		if f.GetAfi() != api.Family_AFI_IP || f.GetSafi() != api.Family_SAFI_UNICAST {
			continue
		}
		st.Received = af.GetState().GetReceived()
		st.Advertised = af.GetState().GetAdvertised()
	}
	// GoBGP counts the End-of-RIB marker it sends a graceful-restart peer
	// as one advertised path (getBestFromLocal appends it).
	if st.Advertised > 0 && remoteHasGR(p) {
		st.Advertised--
	}
	return st
}

func remoteHasGR(p *api.Peer) bool {
	return slices.ContainsFunc(p.GetState().GetRemoteCap(), func(c *anypb.Any) bool {
		return c.MessageIs(&api.GracefulRestartCapability{})
	})
}

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/steer"
	"github.com/meshwan/meshwan/edge/syncer"
)

// Routing runs the embedded BGP speaker when the desired state asks for
// BGP, and stops it when it does not. The speaker is created lazily with
// the site's ASN and re-created if the ASN changes.
//
// Invariant: Routing never calls Stop on the way out of the process; an
// agent restart must look like a BGP graceful restart (peers keep our
// routes, the next speaker adopts the kernel routes it finds), and Stop
// would send a Cease that makes peers withdraw at once.
type Routing struct {
	Logger *slog.Logger
	// ListenPort is the BGP port (0 = 179).
	ListenPort int32
	// LANPeers are routers on the site's LAN that peer with the edge: they
	// learn the overlay's routes; what they announce is not passed on.
	LANPeers []bgp.Neighbor

	mu      sync.Mutex
	speaker *bgp.Speaker
	asn     uint32

	// ribMu guards rib, the speaker's newest RIB. It is not mu: Stop,
	// called with mu held, waits for the speaker's OnRIB.
	ribMu sync.Mutex
	rib   bgp.RIB
}

// Apply reconciles the speaker with d.
func (r *Routing) Apply(ctx context.Context, d dataplane.Desired) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !d.BGP {
		if r.speaker != nil {
			r.speaker.Stop() // routing switched to static: withdraw for real
			r.speaker = nil
			r.setRIB(bgp.RIB{})
		}
		return nil
	}
	if r.speaker != nil && r.asn != d.ASN {
		r.speaker.Stop()
		r.speaker = nil
		r.setRIB(bgp.RIB{})
	}
	if r.speaker == nil {
		s, err := bgp.Start(ctx, bgp.Config{ASN: d.ASN, RouterID: routerID(d), ListenPort: r.ListenPort, Logger: r.Logger, OnRIB: r.setRIB})
		if err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
		r.speaker, r.asn = s, d.ASN
	}
	remote := make(map[string]uint32, len(d.Tunnels))
	for _, t := range d.Tunnels {
		remote[t.ID] = t.RemoteASN
	}
	bd, err := bgp.FromDataplane(d.ASN, d, remote)
	if err != nil {
		return err
	}
	for _, p := range r.LANPeers {
		p.LAN = true
		bd.Neighbors = append(bd.Neighbors, p)
	}
	return r.speaker.Apply(ctx, bd)
}

// Status reports the BGP sessions (none when BGP is off).
func (r *Routing) Status(ctx context.Context) ([]syncer.BGPPeer, error) {
	r.mu.Lock()
	s := r.speaker
	r.mu.Unlock()
	if s == nil {
		return nil, nil
	}
	ps, err := s.Status(ctx)
	var out []syncer.BGPPeer
	for _, p := range ps {
		out = append(out, syncer.BGPPeer{Neighbor: p.Addr.String(), ASN: p.ASN, TunnelID: p.Description, State: p.State,
			Received: p.Received, Accepted: p.Accepted, Advertised: p.Advertised})
	}
	return out, err
}

func (r *Routing) setRIB(rib bgp.RIB) {
	r.ribMu.Lock()
	defer r.ribMu.Unlock()
	r.rib = rib
}

// Dests returns the steering destinations from the speaker's newest RIB:
// every path's next hop mapped to its tunnel (none without a speaker).
func (r *Routing) Dests(_ context.Context, d dataplane.Desired) []steer.Dest {
	r.ribMu.Lock()
	rib := r.rib
	r.ribMu.Unlock()
	return BGPDests(d, rib.Candidates())
}

// ParseLANPeers parses "ADDR:ASN,ADDR:ASN" (the --bgp-lan-peer flag).
func ParseLANPeers(s string) ([]bgp.Neighbor, error) {
	var out []bgp.Neighbor
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		addr, asn, ok := strings.Cut(item, ":")
		a, err := netip.ParseAddr(addr)
		n, err2 := strconv.ParseUint(asn, 10, 32)
		if !ok || err != nil || err2 != nil || !a.Is4() || n == 0 {
			return nil, fmt.Errorf("--bgp-lan-peer %q: want IPV4:ASN, e.g. 10.1.1.2:64512", item)
		}
		out = append(out, bgp.Neighbor{Addr: a, ASN: uint32(n), Description: "lan " + addr, LAN: true})
	}
	return out, nil
}

// routerID picks a stable IPv4 router id: the first LAN prefix's first
// address (the site's own, unique across the network), else the first
// tunnel's local address.
func routerID(d dataplane.Desired) netip.Addr {
	for _, p := range d.LANPrefixes {
		if p.Addr().Is4() {
			return p.Masked().Addr().Next()
		}
	}
	for _, t := range d.Tunnels {
		return t.LocalInner.Addr()
	}
	return netip.AddrFrom4([4]byte{192, 0, 2, 1})
}

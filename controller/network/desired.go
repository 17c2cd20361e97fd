package network

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/topology"
)

// EdgeTunnel is one tunnel as one of its ends must build it.
type EdgeTunnel struct {
	ID              string
	LocalTransport  string
	LocalUnderlay   netip.Addr
	RemoteSite      string
	RemoteTransport string
	RemoteUnderlay  netip.Addr
	LocalInner      netip.Prefix
	RemoteInner     netip.Addr
	RemoteASN       uint32
	RemoteLANs      []netip.Prefix
	PSK             []byte
	// AcceptPSKs are keys this end accepts from the peer but never
	// authenticates with (a rotation under way), PSKSerial names the key
	// set (the edge reports the serial it has loaded).
	AcceptPSKs [][]byte
	PSKSerial  uint64
	// Initiator: this end initiates IKE (and opens BGP); the other end
	// only responds. From the tunnel's stored initiator, fixed at its
	// creation.
	Initiator bool
}

// DesiredState is everything one edge needs.
type DesiredState struct {
	Version  int64
	Site     intent.Site
	Topology intent.Topology
	Tunnels  []EdgeTunnel
}

// DesiredState computes site's complete desired state from a snapshot
// (a copy or the live view under Read). Tunnels with an end whose dynamic
// address is not known yet are left out until the edge reports it. The
// version is the snapshot revision.
func (n *Network) DesiredState(s *Snapshot, site string) (DesiredState, error) {
	me, ok := s.Sites[site]
	if !ok {
		return DesiredState{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, site)
	}
	d := DesiredState{Version: s.Revision, Site: me, Topology: s.Topology}
	for _, t := range s.Tunnels {
		if t.A.Site != site && t.B.Site != site {
			continue
		}
		if et, ok, err := n.edgeTunnel(s, nil, site, t); err != nil {
			return DesiredState{}, err
		} else if ok {
			d.Tunnels = append(d.Tunnels, et)
		}
	}
	slices.SortFunc(d.Tunnels, func(a, b EdgeTunnel) int { return strings.Compare(a.ID, b.ID) })
	addTransit(s, &d)
	return d, nil
}

// edgeTunnel is tunnel t as site's end must build it; ok is false while an
// end's address is unknown. psk, when set, holds opened PSKs by tunnel id.
func (n *Network) edgeTunnel(s *Snapshot, psk map[string][]byte, site string, t Tunnel) (EdgeTunnel, bool, error) {
	local, remote, localInner, remoteInner, side := t.A, t.B, t.AInner(), t.BInner(), topology.SideA
	if site == t.B.Site {
		local, remote, localInner, remoteInner, side = t.B, t.A, t.BInner(), t.AInner(), topology.SideB
	}
	lu, ru := s.Underlay(local), s.Underlay(remote)
	if !lu.IsValid() || !ru.IsValid() {
		return EdgeTunnel{}, false, nil
	}
	key, ok := psk[t.ID]
	if !ok {
		var err error
		if key, err = n.PSK(t); err != nil {
			return EdgeTunnel{}, false, fmt.Errorf("tunnel %s: %w", t.ID, err)
		}
	}
	peer := s.Sites[remote.Site]
	et := EdgeTunnel{
		ID: t.ID, LocalTransport: local.Transport, LocalUnderlay: lu,
		RemoteSite: remote.Site, RemoteTransport: remote.Transport, RemoteUnderlay: ru,
		LocalInner: localInner, RemoteInner: remoteInner.Addr(),
		RemoteASN: peer.ASN, RemoteLANs: slices.Clone(peer.LANPrefixes), PSK: key,
		PSKSerial: t.Serial(), Initiator: side == t.InitiatorSide(),
	}
	if len(t.SealedAcceptPSK) > 0 {
		// Opened per build: only tunnels in a rotation have one, briefly.
		acc, err := n.openAccept(t)
		if err != nil {
			return EdgeTunnel{}, false, fmt.Errorf("tunnel %s: accepted key: %w", t.ID, err)
		}
		et.AcceptPSKs = [][]byte{acc}
	}
	return et, true, nil
}

// Built is one site's desired state, or the part of it that changed, read
// from the view at Version.
type Built struct {
	// Ready is false while the site's tunnels are not all allocated yet
	// (an intent change whose reconcile has not finished): such a state
	// must not be sent, the edge would apply a half-done change.
	Ready bool
	// Full: Tunnels is every tunnel of the site; otherwise only those of
	// the requested ids that the site has, and Gone the requested ids it
	// does not have (any more, or not yet usable).
	Full    bool
	State   DesiredState
	Gone    []string
	Missing bool // the site does not exist
}

// Build reads site's desired state from the live view. With only == nil,
// or when the site's transit routes depend on its other tunnels (a spoke
// when hubs exist), it builds the whole state; otherwise it rebuilds just
// the tunnels named in only: the cost of a change at a hub with thousands
// of tunnels is that of the tunnels it touches.
func (n *Network) Build(site string, only map[string]bool) (Built, error) {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	s := &n.v.snap
	me, ok := s.Sites[site]
	if !ok {
		return Built{Missing: true}, nil
	}
	b := Built{Ready: n.v.ready(me), State: DesiredState{Version: s.Revision, Site: me, Topology: s.Topology}}
	ids := n.v.bySite[site]
	b.Full = only == nil || (!me.Hub() && len(n.v.hubs) > 0)
	if b.Full {
		for id := range ids {
			et, ok, err := n.edgeTunnel(s, n.v.psk, site, s.Tunnels[id])
			if err != nil {
				return Built{}, err
			}
			if ok {
				b.State.Tunnels = append(b.State.Tunnels, et)
			}
		}
		slices.SortFunc(b.State.Tunnels, func(a, b EdgeTunnel) int { return strings.Compare(a.ID, b.ID) })
		addTransit(s, &b.State)
		return b, nil
	}
	for id := range only {
		if _, mine := ids[id]; mine {
			et, ok, err := n.edgeTunnel(s, n.v.psk, site, s.Tunnels[id])
			if err != nil {
				return Built{}, err
			}
			if ok {
				b.State.Tunnels = append(b.State.Tunnels, et)
				continue
			}
		}
		b.Gone = append(b.Gone, id)
	}
	return b, nil
}

// TunnelsOf returns the ids of the tunnels with an end at site.
func (n *Network) TunnelsOf(site string) []string {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	out := make([]string, 0, len(n.v.bySite[site]))
	for id := range n.v.bySite[site] {
		out = append(out, id)
	}
	return out
}

// ready reports whether every tunnel the intent derives for site is
// stored. For a hub of a hub-and-spoke topology that is: no spoke waits
// for a reconcile (a spoke's links are exactly its links to the hubs, so
// spokes that all have theirs give every hub its links to them) and the
// hub's links to the other hubs are stored. This is conservative (a spoke
// waiting only for another hub's tunnel holds this hub back until the
// reconcile, a moment) and costs O(hubs) instead of a derivation of the
// hub's links. Called with the view locked.
func (v *view) ready(site intent.Site) bool {
	if v.snap.Topology.Mode != intent.ModeHubAndSpoke || !site.Hub() {
		return v.exact(site)
	}
	if len(v.unready) > 0 {
		return false
	}
	for h := range v.hubs {
		if h == site.Name {
			continue
		}
		for _, l := range topology.DeriveFor(site, []intent.Site{v.snap.Sites[h]}, v.snap.Topology) {
			if _, ok := v.stored(l.ID); !ok {
				return false
			}
		}
	}
	return true
}

// exact reports whether site's stored tunnels are exactly those the intent
// derives for it, matched by their pair of ends (a stored tunnel's id may
// name its ends in the other order). Called with the view locked.
func (v *view) exact(site intent.Site) bool {
	links := v.linksFor(site, v.snap.Topology)
	if len(links) != len(v.bySite[site.Name]) {
		return false
	}
	for _, l := range links {
		if _, ok := v.stored(l.ID); !ok {
			return false
		}
	}
	return true
}

// addTransit gives a site static routes to the LANs of sites it has no
// tunnel to (the other spokes of a hub-and-spoke topology) through its
// first hub (the hub of its first tunnel to one, in id order), which
// forwards between its tunnels. Every tunnel to that hub carries them: with
// several WAN transports there are parallel tunnels, and the edge installs
// parallel routes with increasing metrics, so the other transport is the
// backup. With the topology's transit prefixes (hub-and-spoke) those
// summaries replace the list of other LANs, so the state does not grow
// with the number of spokes. This is the static fallback; with BGP the
// hubs re-advertise the routes and a spoke fails over between hubs.
func addTransit(s *Snapshot, d *DesiredState) {
	if d.Site.Hub() {
		return // a hub has a tunnel to every site
	}
	hub := ""
	for _, t := range d.Tunnels {
		if s.Sites[t.RemoteSite].Hub() {
			hub = t.RemoteSite
			break
		}
	}
	if hub == "" {
		return
	}
	var transit []netip.Prefix
	if s.Topology.Mode == intent.ModeHubAndSpoke && len(s.Topology.TransitPrefixes) > 0 {
		transit = s.Topology.TransitPrefixes
	} else {
		peers := map[string]bool{d.Site.Name: true}
		for _, t := range d.Tunnels {
			peers[t.RemoteSite] = true
		}
		for _, site := range s.SiteList() {
			if !peers[site.Name] {
				transit = append(transit, site.LANPrefixes...)
			}
		}
	}
	if len(transit) == 0 {
		return
	}
	for i := range d.Tunnels {
		if d.Tunnels[i].RemoteSite == hub {
			d.Tunnels[i].RemoteLANs = append(d.Tunnels[i].RemoteLANs, transit...)
		}
	}
}

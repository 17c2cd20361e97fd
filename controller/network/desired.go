package network

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/controller/intent"
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
}

// DesiredState is everything one edge needs.
type DesiredState struct {
	Version  int64
	Site     intent.Site
	Topology intent.Topology
	Tunnels  []EdgeTunnel
}

// DesiredState computes site's desired state from the snapshot. Tunnels
// with an end whose dynamic address is not known yet are left out until
// the edge reports it. The version is the snapshot revision.
func (n *Network) DesiredState(s *Snapshot, site string) (DesiredState, error) {
	me, ok := s.Sites[site]
	if !ok {
		return DesiredState{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, site)
	}
	d := DesiredState{Version: s.Revision, Site: me, Topology: s.Topology}
	for _, t := range s.Tunnels {
		local, remote, localInner, remoteInner := t.A, t.B, t.AInner(), t.BInner()
		switch site {
		case t.A.Site:
		case t.B.Site:
			local, remote, localInner, remoteInner = t.B, t.A, t.BInner(), t.AInner()
		default:
			continue
		}
		lu, ru := s.Underlay(local), s.Underlay(remote)
		if !lu.IsValid() || !ru.IsValid() {
			continue
		}
		psk, err := n.PSK(t)
		if err != nil {
			return DesiredState{}, fmt.Errorf("tunnel %s: %w", t.ID, err)
		}
		peer := s.Sites[remote.Site]
		d.Tunnels = append(d.Tunnels, EdgeTunnel{
			ID: t.ID, LocalTransport: local.Transport, LocalUnderlay: lu,
			RemoteSite: remote.Site, RemoteTransport: remote.Transport, RemoteUnderlay: ru,
			LocalInner: localInner, RemoteInner: remoteInner.Addr(),
			RemoteASN: peer.ASN, RemoteLANs: slices.Clone(peer.LANPrefixes), PSK: psk,
		})
	}
	slices.SortFunc(d.Tunnels, func(a, b EdgeTunnel) int { return strings.Compare(a.ID, b.ID) })
	addTransit(s, &d)
	return d, nil
}

// addTransit gives a site static routes to the LANs of sites it has no
// tunnel to (the other spokes of a hub-and-spoke topology) through its
// first hub (the hub of its first tunnel to one, in id order), which
// forwards between its tunnels. Every tunnel to that hub carries them: with
// several WAN transports there are parallel tunnels, and the edge installs
// parallel routes with increasing metrics, so the other transport is the
// backup. This is the static fallback; with BGP the hubs re-advertise the
// routes and a spoke fails over between hubs.
func addTransit(s *Snapshot, d *DesiredState) {
	peers := map[string]bool{d.Site.Name: true}
	for _, t := range d.Tunnels {
		peers[t.RemoteSite] = true
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
	for _, site := range s.SiteList() {
		if !peers[site.Name] {
			transit = append(transit, site.LANPrefixes...)
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

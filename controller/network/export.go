package network

import (
	"fmt"
	"slices"

	"github.com/meshwan/meshwan/controller/export"
	"github.com/meshwan/meshwan/controller/intent"
)

// ExportInput reads what controller/export renders for an unmanaged site:
// the site, the topology, every tunnel of the site with its /30, PSK and
// far end, and the revision it was read at, all from one view state.
// Refused: a managed site (its keys go only to its edge, inside its
// desired state), a site whose tunnels are still being allocated, and a
// tunnel whose far end has a dynamic address not reported yet (the export
// must hold every tunnel of the site).
func (n *Network) ExportInput(site string) (export.Input, error) {
	b, err := n.Build(site, nil)
	if err != nil {
		return export.Input{}, err
	}
	switch {
	case b.Missing:
		return export.Input{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, site)
	case !b.State.Site.Unmanaged:
		return export.Input{}, fmt.Errorf("%w: site %q is managed: its keys go only to its own edge; only an unmanaged site's configuration is exported", intent.ErrPrecondition, site)
	case !b.Ready:
		return export.Input{}, fmt.Errorf("%w: site %q: its tunnels are still being allocated; try again in a moment", intent.ErrPrecondition, site)
	}
	if ids := n.TunnelsOf(site); len(ids) != len(b.State.Tunnels) {
		have := map[string]bool{}
		for _, t := range b.State.Tunnels {
			have[t.ID] = true
		}
		var missing []string
		for _, id := range ids {
			if !have[id] {
				missing = append(missing, id)
			}
		}
		slices.Sort(missing)
		return export.Input{}, fmt.Errorf("%w: site %q: the far end of tunnel(s) %v has a dynamic address its edge has not reported yet", intent.ErrPrecondition, site, missing)
	}
	in := export.Input{Site: b.State.Site, Topology: b.State.Topology, Version: b.State.Version}
	for _, t := range b.State.Tunnels {
		in.Tunnels = append(in.Tunnels, export.Tunnel{
			ID: t.ID, LocalTransport: t.LocalTransport, LocalUnderlay: t.LocalUnderlay,
			RemoteSite: t.RemoteSite, RemoteTransport: t.RemoteTransport, RemoteUnderlay: t.RemoteUnderlay,
			LocalInner: t.LocalInner, RemoteInner: t.RemoteInner, RemoteASN: t.RemoteASN,
			RemoteLANs: slices.Clone(t.RemoteLANs), PSK: slices.Clone(t.PSK),
			Initiates: exportedEndInitiates(t),
		})
	}
	return in, nil
}

// exportedEndInitiates says whether the unmanaged end of t initiates IKE:
// the tunnel's stored initiator (topology.Initiator chose it at creation:
// the managed end wherever one end is unmanaged), seen from this end, the
// same value the managed end receives as EdgeTunnel.role, so the two ends
// always agree.
func exportedEndInitiates(t EdgeTunnel) bool {
	return t.Initiator
}

// FarEnds maps each tunnel of site to the site at its other end (the
// managed ends whose reports show an unmanaged site's tunnels).
func (n *Network) FarEnds(site string) map[string]string {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	out := make(map[string]string, len(n.v.bySite[site]))
	for id := range n.v.bySite[site] {
		t := n.v.snap.Tunnels[id]
		out[id] = t.A.Site
		if t.A.Site == site {
			out[id] = t.B.Site
		}
	}
	return out
}

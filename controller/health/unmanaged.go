package health

import (
	"slices"
	"strings"
)

// Unmanaged is the state of a site without an edge (a third-party router,
// intent.Site.Unmanaged): nothing there reports, and nothing waits for it
// to.
const Unmanaged State = "unmanaged"

// TunnelUnknown is the state ManagedEnds gives a tunnel no managed end
// reports on.
const TunnelUnknown = "unknown"

// ManagedEnds is the status of an unmanaged site, made from what the
// managed far ends of its tunnels report: far maps each of the site's
// tunnel ids to the site at its other end, all holds the reporting sites'
// statuses (Registry.All). Each tunnel is listed as its far end reports it
// (probe figures, IKE and child SA state, usability), with the far end's
// BGP session over it; a tunnel whose far end is not up, or is unmanaged
// too, is listed as TunnelUnknown with the reason. Pure.
func ManagedEnds(far map[string]string, all map[string]Status) Status {
	out := Status{State: Unmanaged}
	ids := make([]string, 0, len(far))
	for id := range far {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		peer := far[id]
		st, ok := all[peer]
		var ts *TunnelStatus
		if ok && st.State == Up {
			for i := range st.Report.Tunnels {
				if st.Report.Tunnels[i].TunnelID == id {
					ts = &st.Report.Tunnels[i]
					break
				}
			}
			for _, p := range st.Report.BGPPeers {
				if p.TunnelID == id {
					out.Report.BGPPeers = append(out.Report.BGPPeers, p)
				}
			}
			if st.Report.UpdatedAt.After(out.Report.UpdatedAt) {
				out.Report.UpdatedAt = st.Report.UpdatedAt
			}
		}
		if ts != nil {
			c := *ts
			c.Detail = strings.TrimPrefix(c.Detail+"; ", "; ") + "as reported by " + peer
			out.Report.Tunnels = append(out.Report.Tunnels, c)
			continue
		}
		why := "the edge of " + peer + " is not connected"
		switch {
		case ok && st.State == Unmanaged:
			why = "both ends are unmanaged: nothing reports this tunnel"
		case ok && st.State == Up:
			why = "the edge of " + peer + " does not report this tunnel yet"
		}
		out.Report.Tunnels = append(out.Report.Tunnels, TunnelStatus{TunnelID: id, State: TunnelUnknown, Detail: why})
	}
	return out
}

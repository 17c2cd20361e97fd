package bgp

import (
	"net/netip"
	"slices"
)

// RIB is the speaker's global IPv4 unicast RIB reduced to what route
// choice and steering need. The speaker publishes a new RIB (Config.OnRIB)
// whenever GoBGP's best paths, End-of-RIB markers or sessions change; the
// edge's owner computes the kernel routes from it (Choose) and writes them
// itself: the speaker never writes kernel state, so a blocked GoBGP call
// can never hold up a failover.
type RIB struct {
	// Dests holds every destination's paths in GoBGP's order, best first.
	Dests map[netip.Prefix][]Path
	// Holding is true during a restart hold: this speaker started within
	// the restart time of a previous one and not every tunnel neighbor has
	// sent its End-of-RIB yet. While holding, the owner keeps the routes of
	// the previous speaker it found in the kernel even when Dests lacks
	// them (BGP graceful restart, receiving-speaker side).
	Holding bool
}

// Choose returns the kernel routes for r, sorted by prefix, leaving out
// the paths whose next hop is excluded (unusable tunnels) unless that
// would leave a destination with no learned path (fail-open). See
// chooseRoute for the rules. Pure.
func Choose(r RIB, excluded map[netip.Addr]bool) []Route {
	var out []Route
	for dst, paths := range r.Dests {
		if rt, ok := chooseRoute(dst.Masked(), excludePaths(paths, excluded)); ok {
			out = append(out, rt)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	return out
}

// Candidates returns, per learned prefix, the next hops of every valid
// path (not only the best ones), sorted: the ways traffic to the prefix
// could go, for SLA steering. Prefixes we originate are left out. Pure.
func (r RIB) Candidates() map[netip.Prefix][]netip.Addr {
	out := map[netip.Prefix][]netip.Addr{}
	for dst, paths := range r.Dests {
		var nhs []netip.Addr
		for _, c := range paths {
			if c.Local || c.NHInvalid || !c.NextHop.IsValid() {
				continue
			}
			nhs = append(nhs, c.NextHop)
		}
		if len(nhs) > 0 {
			slices.SortFunc(nhs, netip.Addr.Compare)
			out[dst.Masked()] = slices.Compact(nhs)
		}
	}
	return out
}

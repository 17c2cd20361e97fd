package topology

import (
	"cmp"
	"slices"

	"github.com/meshwan/meshwan/controller/intent"
)

// Pair names two sites, A < B.
type Pair struct{ A, B string }

// Unjoined lists the pairs of sites the topology connects (every pair in a
// full mesh; every hub with every other site in hub-and-spoke) that get no
// tunnel at all because every transport pair the match rule would join is
// dynamic at both ends: behind NAT, neither end could reach the other
// before the other opened a mapping, and meshwan does no hole punching. In
// hub-and-spoke two such spokes still reach each other through a hub with
// a public address; in a full mesh they do not reach each other. Pairs
// that share no transport the match rule joins are not listed: that is the
// declaration's choice, not NAT. Sorted; pure.
//
// Only sites with a dynamic transport can be in a pair, and in
// hub-and-spoke only pairs with a hub, so the quadratic part runs over
// those alone: a fleet of thousands of static sites costs one pass, and
// thousands of NATed spokes cost one pass per hub.
func Unjoined(sites []intent.Site, t intent.Topology) []Pair {
	sites = slices.DeleteFunc(slices.Clone(sites), func(s intent.Site) bool {
		return !slices.ContainsFunc(s.Transports, func(tr intent.Transport) bool { return tr.Dynamic })
	})
	intent.SortSites(sites)
	var out []Pair
	check := func(a, b intent.Site) {
		if connected(t.Mode, a, b) && allDynamic(a, b, t.Match) {
			out = append(out, Pair{min(a.Name, b.Name), max(a.Name, b.Name)})
		}
	}
	switch t.Mode {
	case intent.ModeFullMesh:
		for i := range sites {
			for j := i + 1; j < len(sites); j++ {
				check(sites[i], sites[j])
			}
		}
	case intent.ModeHubAndSpoke:
		for i, h := range sites {
			if !h.Hub() {
				continue
			}
			for j, s := range sites {
				// A pair of hubs once (i < j), a hub and a spoke always.
				if j != i && (!s.Hub() || i < j) {
					check(h, s)
				}
			}
		}
	}
	slices.SortFunc(out, func(x, y Pair) int { return cmp.Or(cmp.Compare(x.A, y.A), cmp.Compare(x.B, y.B)) })
	return out
}

// allDynamic: the match rule joins at least one transport pair of a and b,
// and every such pair is dynamic at both ends.
func allDynamic(a, b intent.Site, m intent.Match) bool {
	joinable := false
	for _, ta := range a.Transports {
		for _, tb := range b.Transports {
			if m != intent.MatchAllPairs && ta.Name != tb.Name {
				continue
			}
			if !ta.Dynamic || !tb.Dynamic {
				return false
			}
			joinable = true
		}
	}
	return joinable
}

// Package topology derives the set of tunnels a network needs from its
// sites and topology spec. It is pure: the same intent always yields the
// same, sorted list of links with the same ids, which is what lets the
// controller keep a tunnel's /30 and PSK across unrelated changes.
package topology

import (
	"cmp"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/controller/intent"
)

// End is one side of a link: a site and one of its transports.
type End struct {
	Site      string
	Transport string
}

// Link is one tunnel the topology asks for. A is the hub in hub-and-spoke
// and otherwise the site whose name sorts first; A gets the first usable
// address of the /30.
type Link struct {
	ID   string
	A, B End
}

// ID is the stable identifier of the tunnel between two ends, e.g.
// "hq.inet1~branch1.inet1". Site and transport names cannot contain '.' or
// '~', so ids never collide and are safe in etcd keys and URL paths.
func ID(a, b End) string {
	return a.Site + "." + a.Transport + "~" + b.Site + "." + b.Transport
}

// Derive returns the links the topology needs, sorted by id.
//
// full-mesh connects every pair of sites; hub-and-spoke connects every
// spoke to every hub and the hubs to each other (so spoke-to-spoke traffic
// can cross from one hub to another). Per connected pair, transports are
// joined by name (same-name) or all to all (all-pairs). A pair of transports
// that are both dynamic is skipped: neither end could reach the other.
func Derive(sites []intent.Site, t intent.Topology) []Link {
	sites = slices.Clone(sites)
	intent.SortSites(sites)
	var links []Link
	pair := func(i, j int) { // i < j
		a, b := sites[i], sites[j]
		if b.Hub() && !a.Hub() {
			a, b = b, a
		}
		links = append(links, pairLinks(a, b, t.Match)...)
	}
	switch t.Mode {
	case intent.ModeFullMesh:
		for i := range sites {
			for j := i + 1; j < len(sites); j++ {
				pair(i, j)
			}
		}
	case intent.ModeHubAndSpoke:
		// Only pairs with a hub: O(hubs x sites), not all pairs.
		for h := range sites {
			if !sites[h].Hub() {
				continue
			}
			for j := range sites {
				if j == h || (sites[j].Hub() && j < h) {
					continue // a hub pair is made once, from its first hub
				}
				pair(min(h, j), max(h, j))
			}
		}
	}
	slices.SortFunc(links, func(x, y Link) int { return strings.Compare(x.ID, y.ID) })
	return links
}

func connected(m intent.Mode, a, b intent.Site) bool {
	switch m {
	case intent.ModeFullMesh:
		return true
	case intent.ModeHubAndSpoke:
		return a.Hub() || b.Hub()
	}
	return false
}

func pairLinks(a, b intent.Site, m intent.Match) []Link {
	var out []Link
	for _, ta := range a.Transports {
		for _, tb := range b.Transports {
			if m != intent.MatchAllPairs && ta.Name != tb.Name {
				continue
			}
			if ta.Dynamic && tb.Dynamic {
				continue
			}
			ea, eb := End{a.Name, ta.Name}, End{b.Name, tb.Name}
			out = append(out, Link{ID: ID(ea, eb), A: ea, B: eb})
		}
	}
	return out
}

// Diff splits want against have (both keyed by id) into the ids to add and
// to remove, each sorted.
func Diff[V any](want []Link, have map[string]V) (add []Link, remove []string) {
	wantIDs := make(map[string]bool, len(want))
	for _, l := range want {
		wantIDs[l.ID] = true
		if _, ok := have[l.ID]; !ok {
			add = append(add, l)
		}
	}
	for id := range have {
		if !wantIDs[id] {
			remove = append(remove, id)
		}
	}
	slices.SortFunc(remove, cmp.Compare)
	return add, remove
}

// DeriveFor returns the links of Derive(all sites, t) that have an end at
// site, sorted by id, looking only at candidates: every other site for a
// full mesh, and for hub-and-spoke the hubs suffice when site is a spoke
// (a spoke connects to nothing else). It is what lets the controller
// reconcile and validate one site's change without deriving the whole
// network.
func DeriveFor(site intent.Site, candidates []intent.Site, t intent.Topology) []Link {
	var links []Link
	for _, o := range candidates {
		if o.Name == site.Name || !connected(t.Mode, site, o) {
			continue
		}
		a, b := site, o
		if b.Name < a.Name {
			a, b = b, a
		}
		if b.Hub() && !a.Hub() {
			a, b = b, a
		}
		links = append(links, pairLinks(a, b, t.Match)...)
	}
	slices.SortFunc(links, func(x, y Link) int { return strings.Compare(x.ID, y.ID) })
	return links
}

// Package topology derives the set of tunnels a network needs from its
// sites and topology spec. It is pure: the same intent always yields the
// same, sorted list of links with the same ids, which is what lets the
// controller keep a tunnel's /30 and PSK across unrelated changes.
//
// A tunnel's identity is the unordered pair of its ends (Key), never the
// sites' roles: promoting a spoke to hub must not re-create (re-key) any
// tunnel that exists (issue 13: one role change once re-keyed 44 of 1,225
// tunnels because the hub was made the A end and the id named the ends in
// that order).
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

// Compare orders ends by site name, then transport name.
func (e End) Compare(o End) int {
	return cmp.Or(strings.Compare(e.Site, o.Site), strings.Compare(e.Transport, o.Transport))
}

// Side names one end of a tunnel, "a" or "b"; it is how a stored tunnel
// records its initiator.
type Side string

// The two sides. The empty Side is what records written before the
// initiator existed hold; it reads as SideA, the end that initiated then.
const (
	SideA Side = "a"
	SideB Side = "b"
)

// Link is one tunnel the topology asks for. Its ends are in canonical
// order (Order: A is the end whose site name sorts first) and A gets the
// first usable address of the /30. Initiator is the end that initiates IKE
// (and opens BGP): it is chosen (Initiator) only when the tunnel is
// created and then stored with it; a derived link's Initiator is ignored
// for a tunnel that exists.
type Link struct {
	ID        string
	A, B      End
	Initiator Side
}

// ID is the identifier of the tunnel between two ends named in this
// order, e.g. "branch1.inet1~hq.inet1". Site and transport names cannot
// contain '.' or '~', so ids never collide and are safe in etcd keys and
// URL paths. A derived link's id names its ends in canonical order, so it
// equals Key; a tunnel stored by an older version may name its ends the
// other way round (the hub first) and keeps that id.
func ID(a, b End) string {
	return a.Site + "." + a.Transport + "~" + b.Site + "." + b.Transport
}

// Order returns x and y in canonical order: the end whose site name sorts
// first is a (then by transport, though the two ends of a tunnel are
// always at different sites). In a full mesh without hubs this is the
// order older versions used too, so those ids are unchanged.
func Order(x, y End) (a, b End) {
	if y.Compare(x) < 0 {
		return y, x
	}
	return x, y
}

// Key is the identity of the tunnel between two ends, whatever their
// order: the id of the ends in canonical order. A stored tunnel matches a
// derived link when their keys are equal.
func Key(x, y End) string { return ID(Order(x, y)) }

// ParseID splits an id into its ends (in the id's order).
func ParseID(id string) (a, b End, ok bool) {
	l, r, ok := strings.Cut(id, "~")
	if !ok {
		return End{}, End{}, false
	}
	split := func(s string) (End, bool) {
		site, tr, ok := strings.Cut(s, ".")
		return End{site, tr}, ok && site != "" && tr != ""
	}
	a, okA := split(l)
	b, okB := split(r)
	return a, b, okA && okB
}

// Initiator chooses which end of a NEW tunnel initiates IKE (and opens
// BGP), given its sites in canonical order (a's name sorts first) and the
// transports the tunnel joins (ta of a, tb of b): the end whose transport
// is dynamic when exactly one is (it may be behind NAT, and the other end
// cannot reach it before it opens a mapping: docs/nat.md; two dynamic
// transports are never joined); otherwise the managed end when exactly
// one end is unmanaged (a third-party router's configuration is exported
// as responder wherever there is a choice, so the side meshwan controls
// drives the negotiation; an unmanaged site has fixed addresses, so the
// two rules never disagree); otherwise the hub when exactly one end is a
// hub, otherwise a. The hub rule is the end older versions made the A
// end, so a network keeps its pattern of initiators.
//
// It is applied only at creation: the controller stores the result with
// the tunnel and never re-applies it, because changing a tunnel's
// initiator reloads its connection on both ends and charon 5.9
// renegotiates on a connection change (packet loss). A tunnel to a
// dynamic transport created before the dynamic rule keeps its stored
// initiator; the edge behind NAT initiates anyway (dataplane.Localize), so
// both ends do, which works (docs/nat.md).
func Initiator(a, b intent.Site, ta, tb intent.Transport) Side {
	if ta.Dynamic != tb.Dynamic {
		if ta.Dynamic {
			return SideA
		}
		return SideB
	}
	if a.Unmanaged != b.Unmanaged {
		if a.Unmanaged {
			return SideB
		}
		return SideA
	}
	if b.Hub() && !a.Hub() {
		return SideB
	}
	return SideA
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
	switch t.Mode {
	case intent.ModeFullMesh:
		for i := range sites {
			for j := i + 1; j < len(sites); j++ {
				links = append(links, pairLinks(sites[i], sites[j], t.Match)...)
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
				links = append(links, pairLinks(sites[min(h, j)], sites[max(h, j)], t.Match)...)
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

// pairLinks joins the transports of two sites; a's name sorts before b's.
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
			out = append(out, Link{ID: ID(ea, eb), A: ea, B: eb, Initiator: Initiator(a, b, ta, tb)})
		}
	}
	return out
}

// Ends is what Diff needs of a stored tunnel: its two ends, in the order
// it stores them.
type Ends interface {
	Ends() (a, b End)
}

// Diff matches want against have (stored tunnels keyed by their stored
// id) by the unordered pair of ends (Key), not by id, and returns the
// links to add and the stored ids to remove, each sorted. Two stored
// tunnels with the same pair (written concurrently by replicas of
// different versions during an upgrade) keep the one with the smaller id
// (Winner); the other is removed.
func Diff[V Ends](want []Link, have map[string]V) (add []Link, remove []string) {
	byKey := make(map[string]string, len(have))
	for id, t := range have {
		k := Key(t.Ends())
		if cur, dup := byKey[k]; dup {
			keep, drop := Winner(cur, id)
			byKey[k] = keep
			remove = append(remove, drop)
			continue
		}
		byKey[k] = id
	}
	wanted := make(map[string]bool, len(want))
	for _, l := range want {
		wanted[l.ID] = true
		if _, ok := byKey[l.ID]; !ok {
			add = append(add, l)
		}
	}
	for k, id := range byKey {
		if !wanted[k] {
			remove = append(remove, id)
		}
	}
	slices.SortFunc(remove, cmp.Compare)
	return add, remove
}

// Winner decides between two stored tunnels with the same pair of ends:
// the smaller id is kept. Every replica decides the same way.
func Winner(x, y string) (keep, drop string) {
	if y < x {
		return y, x
	}
	return x, y
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
		links = append(links, pairLinks(a, b, t.Match)...)
	}
	slices.SortFunc(links, func(x, y Link) int { return strings.Compare(x.ID, y.ID) })
	return links
}

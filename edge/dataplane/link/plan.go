package link

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/edge/dataplane/kernel"
)

// routePlan is what one route apply writes, in this order: Dedup, then
// Replace, then Delete.
type routePlan struct {
	// Dedup: extra copies of ours on a wanted key, removed first (each by
	// its exact gateways), so that the replace lands on the only one left.
	Dedup []kernel.Route
	// Replace: install or change in place (RouteReplace): one write per
	// changed prefix and metric, with no moment without a route.
	Replace []kernel.Route
	// Delete: ours that are not wanted, each by its exact gateways.
	Delete []kernel.Route
	// Conflicts: wanted, but a foreign route holds (Dst, Metric); never
	// written (RouteReplace would replace the foreign route).
	Conflicts []kernel.Route
}

// planRoutes compares want with the routes of the table and returns the
// writes that make the routes owned (owned(protocol)) equal to want. Pure.
//
//   - The kernel keys a route by (table, dst, tos, metric); tos is never
//     used here, so a key is (Dst, Metric). A wanted key held by a
//     foreign route is a conflict; ours on that key are deleted (we never
//     share a key with someone else's route).
//   - Ours at a wanted key with the same gateways and protocol need
//     nothing; otherwise one RouteReplace, after any extra copies of ours
//     on that key (never made by us: a hand-run `ip route append`) are
//     deleted.
//   - Ours on keys not wanted are deleted.
//
// want must be valid (checkRoutes): one route per key, Via sorted. The
// result is sorted: Replace and Conflicts by (Dst, Metric), Dedup and
// Delete likewise except that within one key a route without gateways
// comes last: its delete request names no gateway and so matches any
// route of ours with that key, which must not take the place of one
// deleted later by its exact gateways.
func planRoutes(want, table []kernel.Route, owned func(protocol int) bool) routePlan {
	type key struct {
		dst    netip.Prefix
		metric int
	}
	ours := map[key][]kernel.Route{}
	foreign := map[key]bool{}
	for _, r := range table {
		k := key{r.Dst, r.Metric}
		if owned(r.Protocol) {
			ours[k] = append(ours[k], r)
		} else {
			foreign[k] = true
		}
	}
	var p routePlan
	keep := map[key]bool{}
	for _, w := range want {
		k := key{w.Dst, w.Metric}
		if foreign[k] {
			p.Conflicts = append(p.Conflicts, w)
			continue
		}
		keep[k] = true
		have := ours[k]
		if len(have) == 1 && sameRoute(have[0], w) {
			continue
		}
		if len(have) > 1 {
			p.Dedup = append(p.Dedup, have[1:]...)
		}
		p.Replace = append(p.Replace, w)
	}
	for k, rs := range ours {
		if !keep[k] {
			p.Delete = append(p.Delete, rs...)
		}
	}
	slices.SortFunc(p.Replace, compareRoute)
	slices.SortFunc(p.Conflicts, compareRoute)
	slices.SortFunc(p.Dedup, compareDeleteOrder)
	slices.SortFunc(p.Delete, compareDeleteOrder)
	return p
}

func sameRoute(a, b kernel.Route) bool {
	return a.Dst == b.Dst && a.Metric == b.Metric && a.Protocol == b.Protocol && slices.Equal(a.Via, b.Via)
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

func compareRoute(a, b kernel.Route) int {
	return cmp.Or(comparePrefix(a.Dst, b.Dst), cmp.Compare(a.Metric, b.Metric),
		cmp.Compare(a.Protocol, b.Protocol), slices.CompareFunc(a.Via, b.Via, netip.Addr.Compare))
}

func compareDeleteOrder(a, b kernel.Route) int {
	noGw := func(r kernel.Route) int {
		if len(r.Via) == 0 {
			return 1
		}
		return 0
	}
	return cmp.Or(comparePrefix(a.Dst, b.Dst), cmp.Compare(a.Metric, b.Metric), cmp.Compare(noGw(a), noGw(b)),
		cmp.Compare(a.Protocol, b.Protocol), slices.CompareFunc(a.Via, b.Via, netip.Addr.Compare))
}

// checkRoutes returns rs normalized (Dst masked, Via sorted without
// duplicates) without the routes it refuses, and an error naming each
// refused one: not IPv4, no gateway, a protocol other than ProtoStatic
// and ProtoBGP, or a second route on one (Dst, Metric).
func checkRoutes(rs []kernel.Route) ([]kernel.Route, error) {
	out := make([]kernel.Route, 0, len(rs))
	seen := map[[2]string]bool{}
	var bad []string
	for _, r := range rs {
		r.Via = slices.Clone(r.Via)
		slices.SortFunc(r.Via, netip.Addr.Compare)
		r.Via = slices.Compact(r.Via)
		k := [2]string{r.Dst.Masked().String(), fmt.Sprint(r.Metric)}
		switch {
		case !r.Dst.IsValid() || !r.Dst.Addr().Is4():
			bad = append(bad, fmt.Sprintf("%v: not an IPv4 prefix", r.String()))
		case len(r.Via) == 0 || slices.ContainsFunc(r.Via, func(a netip.Addr) bool { return !a.Is4() }):
			bad = append(bad, fmt.Sprintf("%v: needs IPv4 gateways", r.String()))
		case r.Protocol != kernel.ProtoStatic && r.Protocol != kernel.ProtoBGP:
			bad = append(bad, fmt.Sprintf("%v: protocol %d is not ours", r.String(), r.Protocol))
		case seen[k]:
			bad = append(bad, fmt.Sprintf("%v: a second route to %v metric %d", r.String(), r.Dst, r.Metric))
		default:
			seen[k] = true
			r.Dst = r.Dst.Masked()
			out = append(out, r)
		}
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("routes refused: %s", strings.Join(bad, "; "))
	}
	return out, nil
}

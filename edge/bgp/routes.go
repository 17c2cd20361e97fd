package bgp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
)

// Route is one route the route sync wants in the kernel: Dst via the
// gateways in Via. Several gateways make an ECMP (multipath) route. Via
// is sorted and without duplicates.
type Route struct {
	Dst netip.Prefix
	Via []netip.Addr
}

func (r Route) String() string {
	vias := make([]string, len(r.Via))
	for i, a := range r.Via {
		vias[i] = a.String()
	}
	return fmt.Sprintf("%v via %s", r.Dst, strings.Join(vias, ","))
}

// Path is one path of a destination in GoBGP's RIB, reduced to what
// route choice needs. The list for a destination is in GoBGP's order:
// best first.
type Path struct {
	Local      bool // originated here (no neighbor)
	IBGP       bool
	NextHop    netip.Addr
	LocalPref  uint32
	ASPathLen  int
	Origin     uint32
	MED        uint32
	Stale      bool // graceful restart: the peer is restarting
	NHInvalid  bool
	FromPeer   netip.Addr
	ASPath     []uint32 // for status and tests
	Identifier uint32
}

// tie mirrors GoBGP v3.37.0's table.Path.Compare, the multipath test:
// two paths tie when both are local or both not, both iBGP or both not,
// and local-pref, AS-path length, origin and MED are equal.
func tie(a, b Path) bool {
	return a.Local == b.Local && a.IBGP == b.IBGP && a.LocalPref == b.LocalPref &&
		a.ASPathLen == b.ASPathLen && a.Origin == b.Origin && a.MED == b.MED
}

// chooseRoute returns the kernel route for one destination from its paths
// in GoBGP's order (best first), and false when the kernel should have
// none:
//   - the best path is ours (a prefix we originate): no route; our LAN
//     reaches it;
//   - otherwise the best path and every path that ties with it (GoBGP's
//     getMultiBestPath) give the gateways, skipping paths whose next hop
//     GoBGP marked invalid;
//   - graceful restart: when the set holds both stale and fresh paths the
//     stale ones are dropped. A stale path belongs to a peer whose session
//     went down without a NOTIFICATION; GoBGP keeps it for the restart
//     time, which is right when that peer is the only way (it is
//     restarting and still forwarding) but would keep half the flows on a
//     dead tunnel when another hub offers the same route.
//
// Pure.
func chooseRoute(dst netip.Prefix, paths []Path) (Route, bool) {
	if len(paths) == 0 || paths[0].Local || paths[0].NHInvalid {
		return Route{}, false
	}
	best := paths[0]
	var set []Path
	for _, p := range paths {
		if !p.NHInvalid && p.NextHop.IsValid() && tie(best, p) {
			set = append(set, p)
		}
	}
	if slices.ContainsFunc(set, func(c Path) bool { return !c.Stale }) {
		set = slices.DeleteFunc(set, func(c Path) bool { return c.Stale })
	}
	r := Route{Dst: dst}
	for _, p := range set {
		r.Via = append(r.Via, p.NextHop)
	}
	slices.SortFunc(r.Via, netip.Addr.Compare)
	r.Via = slices.Compact(r.Via)
	if len(r.Via) == 0 {
		return Route{}, false
	}
	return r, true
}

// candidateFrom reduces an API path. localASN decides iBGP like GoBGP
// (source AS == local AS).
func candidateFrom(p *api.Path, localASN uint32) (Path, error) {
	c := Path{LocalPref: 100, Stale: p.Stale, NHInvalid: p.IsNexthopInvalid, Identifier: p.Identifier}
	if a, err := netip.ParseAddr(p.NeighborIp); err == nil && !a.IsUnspecified() {
		c.FromPeer = a.Unmap()
	} else {
		// GoBGP prints a nil source address as "<nil>": our own path.
		c.Local = true
	}
	c.IBGP = !c.Local && p.SourceAsn == localASN && p.SourceAsn != 0
	for _, anyAttr := range p.Pattrs {
		m, err := anyAttr.UnmarshalNew()
		if err != nil {
			return Path{}, fmt.Errorf("path attribute %s: %w", anyAttr.GetTypeUrl(), err)
		}
		switch a := m.(type) {
		case *api.OriginAttribute:
			c.Origin = a.Origin
		case *api.AsPathAttribute:
			for _, seg := range a.Segments {
				switch seg.Type {
				case api.AsSegment_AS_SEQUENCE:
					c.ASPathLen += len(seg.Numbers)
				case api.AsSegment_AS_SET:
					c.ASPathLen++
				}
				c.ASPath = append(c.ASPath, seg.Numbers...)
			}
		case *api.NextHopAttribute:
			if nh, err := netip.ParseAddr(a.NextHop); err == nil {
				c.NextHop = nh.Unmap()
			}
		case *api.MpReachNLRIAttribute:
			if len(a.NextHops) > 0 {
				if nh, err := netip.ParseAddr(a.NextHops[0]); err == nil {
					c.NextHop = nh.Unmap()
				}
			}
		case *api.MultiExitDiscAttribute:
			c.MED = a.Med
		case *api.LocalPrefAttribute:
			c.LocalPref = a.LocalPref
		}
	}
	if c.NextHop.IsValid() && (c.NextHop.IsUnspecified() || !c.NextHop.Is4()) {
		c.NextHop = netip.Addr{}
	}
	return c, nil
}

// routesFromRIB computes the wanted kernel routes from GoBGP's global
// RIB (one api.Destination per prefix). Destinations it cannot parse are
// skipped and reported. The result is sorted by prefix.
//
// excluded holds next hops the agent's probes declared unusable (their
// tunnel is down or in hold-down): their paths are dropped before route
// choice, so the next path takes over at once instead of after the BGP
// hold time, and BGP cannot re-install them until the probes recover.
// When every path of a destination is excluded they are all kept
// (fail-open: if the probes are what is broken, traffic still flows where
// BGP says).
func routesFromRIB(dests []*api.Destination, localASN uint32, excluded map[netip.Addr]bool) ([]Route, []error) {
	var (
		out  []Route
		errs []error
	)
	for _, d := range dests {
		dst, err := netip.ParsePrefix(d.Prefix)
		if err != nil || !dst.Addr().Is4() {
			errs = append(errs, fmt.Errorf("destination %q: not an IPv4 prefix", d.Prefix))
			continue
		}
		cands := make([]Path, 0, len(d.Paths))
		bad := false
		for _, p := range d.Paths {
			c, err := candidateFrom(p, localASN)
			if err != nil {
				errs = append(errs, fmt.Errorf("destination %v: %w", dst, err))
				bad = true
				break
			}
			cands = append(cands, c)
		}
		if bad {
			continue
		}
		cands = excludePaths(cands, excluded)
		if r, ok := chooseRoute(dst.Masked(), cands); ok {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	return out, errs
}

// excludePaths drops the learned paths whose next hop is excluded, unless
// that would drop every learned path. Pure.
func excludePaths(cands []Path, excluded map[netip.Addr]bool) []Path {
	if len(excluded) == 0 {
		return cands
	}
	kept := slices.DeleteFunc(slices.Clone(cands), func(c Path) bool { return !c.Local && excluded[c.NextHop] })
	if !slices.ContainsFunc(kept, func(c Path) bool { return !c.Local }) {
		return cands
	}
	return kept
}

// kernelRoute is one IPv4 route read from the kernel table, reduced.
type kernelRoute struct {
	Dst      netip.Prefix
	Metric   int
	Protocol int
	Via      []netip.Addr // sorted; empty for a route without gateway
}

func (k kernelRoute) String() string {
	return fmt.Sprintf("%v metric %d proto %d via %v", k.Dst, k.Metric, k.Protocol, k.Via)
}

// routePlan is what one sync writes.
type routePlan struct {
	Dedup     []kernelRoute // extra copies of a wanted key, removed first (RouteDel with gateways)
	Replace   []Route       // install or change in place (RouteReplace)
	Delete    []kernelRoute // our routes to remove, each exactly (RouteDel with its gateways)
	Conflicts []Route       // wanted, but someone else's route holds (Dst, metric)
	Held      []kernelRoute // ours, unwanted, kept because of hold
}

// planRoutes compares the wanted routes with the kernel table and returns
// the writes that make our part of the table equal to want. Pure.
//
//   - Only routes with protocol proto are ours; the kernel keys a route by
//     (dst, tos, metric, table), and RouteReplace replaces a route with
//     the same key whatever its protocol, so a wanted route whose (dst,
//     metric) is held by a foreign route is a conflict and never written.
//   - Our route at (dst, metric) with the same gateways needs nothing; a
//     different gateway set is replaced in place (no gap for traffic).
//   - Our routes that are not wanted (other prefix, other metric, or a
//     second copy of one key) are deleted, except those of a prefix want
//     lacks and hold reports as held (graceful restart after our own
//     restart: adopted routes are kept until the RIB has resynchronised).
//
// The result is sorted: Replace and Conflicts by prefix, Held by (prefix,
// metric, gateways), Dedup and Delete likewise except that, within one
// (prefix, metric), a route without gateways comes last: its delete
// request names no gateway and so matches any route of ours with that
// key, which must not take the place of one deleted later by its exact
// gateways.
func planRoutes(want []Route, table []kernelRoute, proto, metric int, hold func(netip.Prefix) bool) routePlan {
	type key struct {
		dst    netip.Prefix
		metric int
	}
	ours := map[key][]kernelRoute{}
	foreign := map[key]bool{}
	for _, k := range table {
		kk := key{k.Dst, k.Metric}
		if k.Protocol == proto {
			ours[kk] = append(ours[kk], k)
		} else {
			foreign[kk] = true
		}
	}
	var p routePlan
	keep := map[key]bool{}
	for _, w := range want {
		k := key{w.Dst, metric}
		if foreign[k] {
			p.Conflicts = append(p.Conflicts, w)
			continue
		}
		keep[k] = true
		have := ours[k]
		if len(have) == 1 && slices.Equal(have[0].Via, w.Via) {
			continue
		}
		// RouteReplace rewrites only the first route with the key; extra
		// copies (never made by us; a hand-run `ip route append`) are
		// removed first, so the exact-match delete cannot hit the route
		// just written.
		if len(have) > 1 {
			p.Dedup = append(p.Dedup, have[1:]...)
		}
		p.Replace = append(p.Replace, w)
	}
	wanted := map[netip.Prefix]bool{}
	for _, w := range want {
		wanted[w.Dst] = true
	}
	for k, rs := range ours {
		if keep[k] {
			continue
		}
		if hold != nil && !wanted[k.dst] && hold(k.dst) {
			p.Held = append(p.Held, rs...)
			continue
		}
		p.Delete = append(p.Delete, rs...)
	}
	byPrefix := func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) }
	slices.SortFunc(p.Replace, byPrefix)
	slices.SortFunc(p.Conflicts, byPrefix)
	slices.SortFunc(p.Dedup, compareDeleteOrder)
	slices.SortFunc(p.Delete, compareDeleteOrder)
	slices.SortFunc(p.Held, compareKernelRoute)
	return p
}

func compareKernelRoute(a, b kernelRoute) int {
	return cmp.Or(comparePrefix(a.Dst, b.Dst), cmp.Compare(a.Metric, b.Metric),
		slices.CompareFunc(a.Via, b.Via, netip.Addr.Compare))
}

func compareDeleteOrder(a, b kernelRoute) int {
	noGw := func(k kernelRoute) int {
		if len(k.Via) == 0 {
			return 1
		}
		return 0
	}
	return cmp.Or(comparePrefix(a.Dst, b.Dst), cmp.Compare(a.Metric, b.Metric),
		cmp.Compare(noGw(a), noGw(b)), slices.CompareFunc(a.Via, b.Via, netip.Addr.Compare))
}

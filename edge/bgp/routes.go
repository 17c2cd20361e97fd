package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
)

// Route is one route chosen from the RIB (Choose) for the kernel: Dst via
// the gateways in Via. Several gateways make an ECMP (multipath) route.
// Via is sorted and without duplicates.
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

// excludePaths drops the learned paths whose next hop is excluded, unless
// that would drop every learned path. excluded holds the next hops of
// tunnels the probes declared unusable (down or in hold-down): their paths
// are dropped before route choice, so the next path takes over at once
// instead of after the BGP hold time, and BGP cannot bring them back
// until the probes recover. When every learned path of a destination is
// excluded they are all kept (fail-open: if the probes are what is
// broken, traffic still flows where BGP says). Pure.
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

// Package plan turns what the edge knows into what its kernel and daemons
// must hold: one pure function, Make, from the desired state, the probes'
// path view, the BGP RIB and the IPsec worker's acknowledgement to one
// Plan (firewall input, links, the IPsec worker's tunnels, the BGP
// speaker's configuration, the main-table routes and the steering plan).
// It does no I/O and keeps no state: the owner (edge/agent) keeps what
// must be remembered between iterations and passes it in.
//
// Ordering that used to be a sequence of blocking calls is plan state:
//   - a new tunnel is handed to the IPsec worker only once its link exists
//     (Inputs.LinksApplied): loading the connection first let the link's
//     first packets trigger a second IKE negotiation (seen in the lab);
//   - a tunnel that leaves the desired state keeps its link until the
//     IPsec worker has unloaded it and its SAs are gone (Inputs.Gone), so
//     no link is deleted under live ESP; a tunnel whose link must be
//     re-created (other underlay) waits for its old version the same way.
package plan

import (
	"cmp"
	"math"
	"net/netip"
	"slices"

	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/steer"
)

// PathView is what the probes decided: which tunnels may carry traffic,
// the fallback ranks of the others, and the steering plan.
type PathView struct {
	// Usable maps tunnel id -> carries traffic (probes up, hold-down over,
	// IPsec SA installed). nil means "no verdicts" (probing off or not
	// started): every tunnel may.
	Usable map[string]bool
	// Fallback ranks the unusable tunnels for when every tunnel to a
	// destination is unusable (higher is better, 0 = never usable): a
	// tunnel in hold-down first, then the one usable most recently.
	Fallback map[string]int64
	// Steer is the SLA steering plan (no tables when there are no
	// classes).
	Steer steer.Plan
}

// Inputs is everything Make looks at.
type Inputs struct {
	// Desired is the state to realise, WANInterfaces filled.
	Desired dataplane.Desired
	// Previous are the tunnels whose links the last plan kept (at start:
	// the cached desired state's, what the previous process applied). A
	// previous tunnel no longer desired (or desired with another
	// underlay) is retiring.
	Previous []dataplane.Tunnel
	// Gone holds the Keys of retiring tunnels the IPsec worker has
	// unloaded and whose SAs have left the kernel (or the bounded wait
	// for them passed): their links may go.
	Gone map[string]bool
	// LinksApplied holds the Keys of tunnels whose links exist as wanted
	// (the last link apply went through for them).
	LinksApplied map[string]bool
	// Paths is the probes' view.
	Paths PathView
	// RIB is the BGP speaker's newest RIB; nil until it published one.
	RIB *bgp.RIB
	// Adopted are the BGP routes found in the kernel at start (a previous
	// process's): kept while RIB is nil or holding (graceful restart).
	Adopted []kernel.Route
	// LANPeers are the --bgp-lan-peer routers (BGP mode only).
	LANPeers []bgp.Neighbor
}

// Plan is what the owner applies, step by step.
type Plan struct {
	// Firewall is the firewall's input: the desired state with the
	// tunnels of Links (retiring ones included).
	Firewall dataplane.Desired
	// Links is the link backend's input: the desired tunnels plus the
	// retiring ones not yet gone (routes are not the link backend's).
	Links dataplane.Desired
	// Retiring are the tunnels whose links are kept only until the IPsec
	// worker reports them gone (a subset of Links.Tunnels).
	Retiring []dataplane.Tunnel
	// IPsec is the IPsec worker's input: the desired tunnels whose links
	// exist, and no retiring one.
	IPsec dataplane.Desired
	// BGP is the BGP worker's input; nil in static mode.
	BGP *BGP
	// Routes are the main-table routes meshwan owns, sorted by (Dst,
	// Metric): ProtoStatic in static mode, ProtoBGP in BGP mode.
	Routes []kernel.Route
	// Classes and Steer are the steering backend's input (no classes when
	// steering is off).
	Classes []dataplane.TrafficClass
	Steer   steer.Plan
}

// BGP is the speaker's configuration and desired state.
type BGP struct {
	ASN      uint32
	RouterID netip.Addr
	Desired  bgp.Desired
	// Err is set when the desired state cannot be turned into the
	// speaker's (a tunnel without a remote ASN); Desired is then empty.
	Err error
}

// Key identifies a tunnel's link incarnation: its id and underlay pair. A
// changed underlay means a new link (the kernel cannot move a GRE link's
// endpoints) and a new IPsec connection.
func Key(t dataplane.Tunnel) string {
	return t.ID + " " + t.LocalUnderlay.String() + ">" + t.RemoteUnderlay.String()
}

// Make computes the plan. Pure.
func Make(in Inputs) Plan {
	d := in.Desired
	links, retiring := linkTunnels(d.Tunnels, in.Previous, in.Gone)
	p := Plan{Links: d, Retiring: retiring}
	p.Links.Tunnels = links
	// The firewall covers exactly the links that exist or are made: a
	// retiring link keeps its peer in the GRE guard and the permits until
	// it is deleted (its IPsec is already unloaded, so without the guard
	// its GRE would leave in clear: seen in the VM when a NATed peer's
	// address changed), and a new incarnation of the same tunnel joins
	// once the old one is gone, before its link is created.
	p.Firewall = d
	p.Firewall.Tunnels = links

	p.IPsec = d
	p.IPsec.Tunnels = nil
	inLinks := map[string]bool{}
	for _, t := range links {
		inLinks[Key(t)] = true
	}
	for _, t := range d.Tunnels {
		if inLinks[Key(t)] && in.LinksApplied[Key(t)] {
			p.IPsec.Tunnels = append(p.IPsec.Tunnels, t)
		}
	}

	if d.BGP {
		p.BGP = bgpDesired(d, in.LANPeers)
		p.Routes = BGPRoutes(d, in.Paths, in.RIB, in.Adopted)
	} else {
		var ready []dataplane.Tunnel
		for _, t := range d.Tunnels {
			if in.LinksApplied[Key(t)] {
				ready = append(ready, t)
			}
		}
		p.Routes = StaticRoutes(ready, in.Paths)
	}
	if !d.Paths.Disabled && len(d.Paths.Classes) > 0 {
		p.Classes = d.Paths.Classes
		p.Steer = in.Paths.Steer
	}
	return p
}

// linkTunnels returns the tunnels whose links the plan keeps: every
// previous tunnel that is retiring and not gone, then every desired
// tunnel that does not collide with one of those (same id, link name or
// underlay pair: the kernel cannot hold both, and the new one must wait
// until the old one's IPsec is down). Sorted by link name.
func linkTunnels(desired, previous []dataplane.Tunnel, gone map[string]bool) (links, retiring []dataplane.Tunnel) {
	want := map[string]bool{}
	for _, t := range desired {
		want[Key(t)] = true
	}
	ids, names, pairs := map[string]bool{}, map[string]bool{}, map[[2]netip.Addr]bool{}
	for _, t := range previous {
		if want[Key(t)] || gone[Key(t)] || ids[t.ID] || names[t.LinkName] {
			continue
		}
		retiring = append(retiring, t)
		ids[t.ID], names[t.LinkName] = true, true
		pairs[[2]netip.Addr{t.LocalUnderlay, t.RemoteUnderlay}] = true
	}
	links = slices.Clone(retiring)
	for _, t := range desired {
		if ids[t.ID] || names[t.LinkName] || pairs[[2]netip.Addr{t.LocalUnderlay, t.RemoteUnderlay}] {
			continue
		}
		links = append(links, t)
	}
	byName := func(a, b dataplane.Tunnel) int { return cmp.Compare(a.LinkName, b.LinkName) }
	slices.SortFunc(links, byName)
	slices.SortFunc(retiring, byName)
	return links, retiring
}

func bgpDesired(d dataplane.Desired, lanPeers []bgp.Neighbor) *BGP {
	out := &BGP{ASN: d.ASN, RouterID: RouterID(d)}
	remote := make(map[string]uint32, len(d.Tunnels))
	for _, t := range d.Tunnels {
		remote[t.ID] = t.RemoteASN
	}
	bd, err := bgp.FromDataplane(d.ASN, d, remote)
	if err != nil {
		out.Err = err
		return out
	}
	for _, n := range lanPeers {
		n.LAN = true
		bd.Neighbors = append(bd.Neighbors, n)
	}
	out.Desired = bd
	return out
}

// RouterID picks a stable IPv4 router id: the first LAN prefix's first
// address (the site's own, unique across the network), else the first
// tunnel's local address.
func RouterID(d dataplane.Desired) netip.Addr {
	for _, p := range d.LANPrefixes {
		if p.Addr().Is4() {
			return p.Masked().Addr().Next()
		}
	}
	for _, t := range d.Tunnels {
		return t.LocalInner.Addr()
	}
	return netip.AddrFrom4([4]byte{192, 0, 2, 1})
}

// rank orders tunnels for a prefix: usable ones first (MaxInt64), then
// the unusable by fallback rank; with no verdicts every tunnel is usable.
func rank(v PathView, id string) int64 {
	if v.Usable == nil || v.Usable[id] {
		return math.MaxInt64
	}
	return min(v.Fallback[id], math.MaxInt64-1)
}

// StaticRoutes returns the static routes over tunnels: per prefix of a
// tunnel's RemoteLANs, only the best-ranked tunnels listing it keep it
// (usable ones; when none is usable, the best fallback: a tunnel back up
// but in hold-down, else the one usable most recently; when none was ever
// usable, all of them: fail-open, the probes may be what is broken). Then
// one route per (tunnel, prefix) via the tunnel's far end at its
// RouteMetric, where tunnels listing the same prefix are ordered by
// (RouteMetric, ID) and a metric already taken is bumped to one above the
// previous (the kernel keys routes by (prefix, metric): equal metrics
// become primary/backup by tunnel id, the same on both ends). Sorted by
// (Dst, Metric). Pure.
func StaticRoutes(tunnels []dataplane.Tunnel, v PathView) []kernel.Route {
	best := map[netip.Prefix]int64{}
	for _, t := range tunnels {
		for _, p := range t.RemoteLANs {
			best[p.Masked()] = max(best[p.Masked()], rank(v, t.ID))
		}
	}
	type cand struct {
		dst    netip.Prefix
		gw     netip.Addr
		metric int
		id     string
	}
	var cs []cand
	for _, t := range tunnels {
		r := rank(v, t.ID)
		for _, p := range t.RemoteLANs {
			if r == best[p.Masked()] {
				cs = append(cs, cand{p.Masked(), t.RemoteInner, int(t.RouteMetric), t.ID})
			}
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		return cmp.Or(comparePrefix(a.dst, b.dst), cmp.Compare(a.metric, b.metric), cmp.Compare(a.id, b.id))
	})
	// A tunnel listing a prefix twice gets one route (the sort made the
	// copies adjacent); then bump taken metrics.
	cs = slices.CompactFunc(cs, func(a, b cand) bool { return a.dst == b.dst && a.id == b.id })
	for i := 1; i < len(cs); i++ {
		if cs[i].dst == cs[i-1].dst && cs[i].metric <= cs[i-1].metric {
			cs[i].metric = cs[i-1].metric + 1
		}
	}
	out := make([]kernel.Route, 0, len(cs))
	for _, c := range cs {
		out = append(out, kernel.Route{Dst: c.dst, Via: []netip.Addr{c.gw}, Metric: c.metric, Protocol: kernel.ProtoStatic})
	}
	return out
}

// BGPRoutes returns the BGP routes: per destination of the RIB, the
// multipath choice (bgp.Choose) over the paths whose next hop is a tunnel
// of the best rank among that destination's tunnels (usable ones; when
// none is, the best fallback; when none was ever usable, all: fail-open).
// Next hops that are no tunnel's far end (a LAN router) are never left
// out. While rib is nil or holding (graceful restart), an adopted route
// whose prefix the choice lacks is kept. Metric bgp.RouteMetric,
// sorted by Dst. Pure.
func BGPRoutes(d dataplane.Desired, v PathView, rib *bgp.RIB, adopted []kernel.Route) []kernel.Route {
	byNH := map[netip.Addr][]string{}
	for _, t := range d.Tunnels {
		byNH[t.RemoteInner] = append(byNH[t.RemoteInner], t.ID)
	}
	nhRank := func(nh netip.Addr) int64 {
		ids, ok := byNH[nh.Unmap()]
		if !ok {
			return math.MaxInt64
		}
		var r int64
		for _, id := range ids {
			r = max(r, rank(v, id))
		}
		return r
	}
	have := map[netip.Prefix]bool{}
	var out []kernel.Route
	if rib != nil {
		for dst, paths := range rib.Dests {
			var best int64
			for _, p := range paths {
				if p.NextHop.IsValid() && !p.Local && !p.NHInvalid {
					best = max(best, nhRank(p.NextHop))
				}
			}
			excluded := map[netip.Addr]bool{}
			for _, p := range paths {
				if p.NextHop.IsValid() && nhRank(p.NextHop) < best {
					excluded[p.NextHop] = true
				}
			}
			for _, r := range bgp.Choose(bgp.RIB{Dests: map[netip.Prefix][]bgp.Path{dst: paths}}, excluded) {
				out = append(out, kernel.Route{Dst: r.Dst, Via: r.Via, Metric: bgp.RouteMetric, Protocol: kernel.ProtoBGP})
				have[r.Dst] = true
			}
		}
	}
	if rib == nil || rib.Holding {
		for _, r := range adopted {
			if r.Protocol == kernel.ProtoBGP && !have[r.Dst.Masked()] {
				out = append(out, r)
				have[r.Dst.Masked()] = true
			}
		}
	}
	slices.SortFunc(out, func(a, b kernel.Route) int {
		return cmp.Or(comparePrefix(a.Dst, b.Dst), cmp.Compare(a.Metric, b.Metric))
	})
	return out
}

// SteerDests are the steering destinations: the static routes' prefixes,
// or with BGP every next hop the RIB offers per prefix. Pure.
func SteerDests(d dataplane.Desired, rib *bgp.RIB) []steer.Dest {
	if !d.BGP {
		return steer.DestsFromDesired(d)
	}
	if rib == nil {
		return nil
	}
	return steer.DestsFromNextHops(d, rib.Candidates())
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// EqualRoutes reports whether two route lists are the same.
func EqualRoutes(a, b []kernel.Route) bool {
	return slices.EqualFunc(a, b, func(x, y kernel.Route) bool {
		return x.Dst == y.Dst && x.Metric == y.Metric && x.Protocol == y.Protocol && slices.Equal(x.Via, y.Via)
	})
}

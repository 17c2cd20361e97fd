package link

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is one planned static route: Dst via Gw over the tunnel link Link.
type Route struct {
	Dst      netip.Prefix
	Gw       netip.Addr
	Link     string
	Metric   int
	TunnelID string
}

func (r Route) String() string {
	return fmt.Sprintf("%v via %v dev %s metric %d", r.Dst, r.Gw, r.Link, r.Metric)
}

// PlanRoutes returns the static routes d asks for: one per (tunnel,
// RemoteLAN), via the tunnel's RemoteInner, with metric RouteMetric.
// Invariant: no two planned routes share (Dst, Metric), since the kernel
// keeps one route per (prefix, metric, table) and RouteReplace would make
// the tunnels overwrite each other. Tunnels listing the same prefix are
// ordered by (RouteMetric, TunnelID) and a metric already taken is bumped
// to one above the previous: equal metrics become primary/backup by tunnel
// id, i.e. by site and then transport name ("b.inet1~a.inet1" before
// "b.inet2~a.inet2"), the same on both ends and independent of the link
// names (which follow the /30s, i.e. allocation order). The result is
// sorted by (Dst, Metric).
func PlanRoutes(d dataplane.Desired) []Route {
	var rs []Route
	for _, t := range d.Tunnels {
		for _, p := range t.RemoteLANs {
			rs = append(rs, Route{Dst: p, Gw: t.RemoteInner, Link: t.LinkName, Metric: int(t.RouteMetric), TunnelID: t.ID})
		}
	}
	slices.SortFunc(rs, func(a, b Route) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()),
			cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.TunnelID, b.TunnelID))
	})
	// A tunnel listing a prefix twice gets one route (the sort made the
	// copies adjacent); then bump taken metrics.
	rs = slices.CompactFunc(rs, func(a, b Route) bool { return a.Dst == b.Dst && a.TunnelID == b.TunnelID })
	for i := 1; i < len(rs); i++ {
		if rs[i].Dst == rs[i-1].Dst && rs[i].Metric <= rs[i-1].Metric {
			rs[i].Metric = rs[i-1].Metric + 1
		}
	}
	return rs
}

type routeKey struct {
	dst    netip.Prefix
	metric int
}

func keyOf(r netlink.Route) (routeKey, bool) {
	if r.Dst == nil {
		return routeKey{dst: netip.MustParsePrefix("0.0.0.0/0"), metric: r.Priority}, true
	}
	ip, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return routeKey{}, false
	}
	ones, _ := r.Dst.Mask.Size()
	return routeKey{dst: netip.PrefixFrom(ip.Unmap(), ones), metric: r.Priority}, true
}

// applyRoutes makes our routes in the table equal to plan. index maps link
// names to ifindexes of links that are ready; routes over other links are
// skipped (their tunnel already reported an error) but not deleted.
func (m *Manager) applyRoutes(plan []Route, index map[string]int) []error {
	all, err := RetryDump(func() ([]netlink.Route, error) {
		return m.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: m.table}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return []error{fmt.Errorf("list routes: %w", err)}
	}
	ours := map[routeKey]netlink.Route{}
	foreign := map[routeKey]netlink.Route{}
	for _, r := range all {
		k, ok := keyOf(r)
		if !ok {
			continue
		}
		if r.Protocol == RouteProtocol {
			ours[k] = r
		} else {
			foreign[k] = r
		}
	}

	var errs []error
	keep := map[routeKey]bool{}
	for _, p := range plan {
		k := routeKey{p.Dst, p.Metric}
		keep[k] = true
		idx, ready := index[p.Link]
		if !ready {
			continue
		}
		if r, ok := ours[k]; ok && r.LinkIndex == idx && ipIs(r.Gw, p.Gw) {
			continue
		}
		if r, ok := foreign[k]; ok {
			errs = append(errs, fmt.Errorf("route %v: the table already has a route for %v metric %d with protocol %v; not touching it",
				p, p.Dst, p.Metric, r.Protocol))
			continue
		}
		nr := &netlink.Route{
			LinkIndex: idx,
			Dst:       &net.IPNet{IP: p.Dst.Addr().AsSlice(), Mask: net.CIDRMask(p.Dst.Bits(), 32)},
			Gw:        p.Gw.AsSlice(),
			Protocol:  RouteProtocol,
			Priority:  p.Metric,
			Table:     m.table,
		}
		if err := m.h.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("tunnel %s: install route %v: %w", p.TunnelID, p, err))
			continue
		}
		m.log.Info("route installed", "route", p.String(), "tunnel_id", p.TunnelID)
	}
	for k, r := range ours {
		if keep[k] {
			continue
		}
		r := r
		if err := m.h.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete stale route %v metric %d: %w", k.dst, k.metric, err))
			continue
		}
		m.log.Info("route deleted", "dst", k.dst.String(), "metric", k.metric)
	}
	return errs
}

// ourRoutes lists the routes with RouteProtocol in the manager's table.
func (m *Manager) ourRoutes() ([]netlink.Route, error) {
	rs, err := RetryDump(func() ([]netlink.Route, error) {
		return m.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: m.table, Protocol: RouteProtocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return rs, nil
}

// Status is the observed state of one tunnel's link.
type Status struct {
	TunnelID  string
	Link      string
	Present   bool   // the link exists
	Up        bool   // administratively up (IFF_UP)
	LowerUp   bool   // IFF_LOWER_UP; a GRE link has it whenever it is up
	OperState string // kernel operstate; "unknown" is normal for GRE
	MTU       int
	RxBytes   uint64
	TxBytes   uint64
	RxPackets uint64
	TxPackets uint64
	RxErrors  uint64
	TxErrors  uint64
	RxDropped uint64
	TxDropped uint64
}

// Status reports the links of the tunnels of the last Apply, sorted by
// link name, from one link dump. A tunnel whose link is missing has
// Present false. It makes no change.
func (m *Manager) Status(ctx context.Context) ([]Status, error) {
	m.mu.Lock()
	tunnels := slices.Clone(m.last)
	m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	links, err := RetryDump(m.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("link status: list links: %w", err)
	}
	byName := map[string]netlink.Link{}
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	out := make([]Status, 0, len(tunnels))
	for _, t := range tunnels {
		s := Status{TunnelID: t.ID, Link: t.LinkName}
		if l, ok := byName[t.LinkName]; ok {
			a := l.Attrs()
			s.Present = true
			s.Up = a.Flags&net.FlagUp != 0
			s.LowerUp = a.RawFlags&unix.IFF_LOWER_UP != 0
			s.OperState = a.OperState.String()
			s.MTU = a.MTU
			if st := a.Statistics; st != nil {
				s.RxBytes, s.TxBytes = st.RxBytes, st.TxBytes
				s.RxPackets, s.TxPackets = st.RxPackets, st.TxPackets
				s.RxErrors, s.TxErrors = st.RxErrors, st.TxErrors
				s.RxDropped, s.TxDropped = st.RxDropped, st.TxDropped
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Link, b.Link) })
	return out, nil
}

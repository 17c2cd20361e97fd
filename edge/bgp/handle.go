package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

// RouteProtocol marks the kernel routes the route sync installs
// (rtm_protocol). 241 (0xf1) is unassigned in the kernel's rtnetlink.h,
// in iproute2's rt_protos and in FRR's rt_protos.d/frr.conf (186-197),
// and it is not the link package's 240 (meshwan's static routes), so
// `ip route show proto 241` lists exactly the routes learned over BGP.
// (187, an obvious "0xBB" pick, is IS-IS.) Only routes with this protocol
// are ever replaced or deleted.
const RouteProtocol = 241

const mainTable = 254

// RouteHandle lists exactly the netlink calls the route sync makes.
// *netlink.Handle implements it (link.NewNetlinkHandle opens one in a
// namespace; the agent shares that handle); FakeRoutes
// implements it in memory for unit tests.
type RouteHandle interface {
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ RouteHandle = (*netlink.Handle)(nil)

// listTable reads the IPv4 routes of table, reduced. Pitfall (as in the
// link package): since netlink v1.3 a dump that raced with a change fails
// with ErrDumpInterrupted and returns nothing usable; it is re-read, since
// "no routes" would make the sync re-add (or never delete) everything.
func listTable(h RouteHandle, table int) ([]kernelRoute, error) {
	var (
		rs  []netlink.Route
		err error
	)
	for range 5 {
		rs, err = h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", table, err)
	}
	out := make([]kernelRoute, 0, len(rs))
	for _, r := range rs {
		if k, ok := fromNetlink(r); ok {
			out = append(out, k)
		}
	}
	return out, nil
}

func fromNetlink(r netlink.Route) (kernelRoute, bool) {
	dst := netip.MustParsePrefix("0.0.0.0/0")
	if r.Dst != nil {
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok || !ip.Unmap().Is4() {
			return kernelRoute{}, false
		}
		ones, bits := r.Dst.Mask.Size()
		if bits != 32 {
			return kernelRoute{}, false
		}
		dst = netip.PrefixFrom(ip.Unmap(), ones)
	}
	k := kernelRoute{Dst: dst, Metric: r.Priority, Protocol: int(r.Protocol)}
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			k.Via = append(k.Via, a.Unmap())
		}
	}
	if r.Gw != nil {
		add(r.Gw)
	}
	for _, nh := range r.MultiPath {
		if nh != nil && nh.Gw != nil {
			add(nh.Gw)
		}
	}
	slices.SortFunc(k.Via, netip.Addr.Compare)
	return k, true
}

// toNetlink builds the request for one of our routes. Gateways only, no
// link index: each gateway lies on a tunnel's /30, so the kernel picks
// the link (as `ip route replace X nexthop via A nexthop via B` does).
func toNetlink(dst netip.Prefix, via []netip.Addr, metric, table int) *netlink.Route {
	r := &netlink.Route{
		Family:   netlink.FAMILY_V4,
		Dst:      &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)},
		Protocol: netlink.RouteProtocol(RouteProtocol),
		Priority: metric,
		Table:    table,
	}
	switch len(via) {
	case 0:
	case 1:
		r.Gw = via[0].AsSlice()
	default:
		for _, a := range via {
			r.MultiPath = append(r.MultiPath, &netlink.NexthopInfo{Gw: a.AsSlice()})
		}
	}
	return r
}

// FlushRoutes deletes every route with RouteProtocol from table (0 means
// main): for decommissioning an edge or turning BGP off. A stopped Speaker
// leaves its routes in place on purpose (see Speaker.Stop).
func FlushRoutes(h RouteHandle, table int) error {
	if table == 0 {
		table = mainTable
	}
	rs, err := listTable(h, table)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rs {
		if r.Protocol != RouteProtocol {
			continue
		}
		if err := h.RouteDel(toNetlink(r.Dst, r.Via, r.Metric, table)); err != nil {
			errs = append(errs, fmt.Errorf("delete %v: %w", r, err))
		}
	}
	return errors.Join(errs...)
}

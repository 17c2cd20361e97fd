package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// String renders r as "DST via A,B metric M proto P".
func (r Route) String() string {
	vias := make([]string, len(r.Via))
	for i, a := range r.Via {
		vias[i] = a.String()
	}
	return fmt.Sprintf("%v via %s metric %d proto %d", r.Dst, strings.Join(vias, ","), r.Metric, r.Protocol)
}

// RouteFromNetlink reduces an IPv4 route read from the kernel to a Route
// (its gateways sorted; none for a route without gateway); false for a
// route that is not IPv4.
func RouteFromNetlink(r netlink.Route) (Route, bool) {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if r.Dst != nil {
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, bits := r.Dst.Mask.Size()
		if !ok || !ip.Unmap().Is4() || bits != 32 {
			return Route{}, false
		}
		dst = netip.PrefixFrom(ip.Unmap(), ones)
	}
	out := Route{Dst: dst, Metric: r.Priority, Protocol: int(r.Protocol), Via: gateways(&r)}
	return out, true
}

// NetlinkRoute builds the request for r in table: gateways only, no link
// index, so the kernel picks each gateway's link (as `ip route replace X
// nexthop via A nexthop via B` does); several gateways make an ECMP
// route.
func (r Route) NetlinkRoute(table int) *netlink.Route {
	nr := &netlink.Route{
		Family:   netlink.FAMILY_V4,
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		Protocol: netlink.RouteProtocol(r.Protocol),
		Priority: r.Metric,
		Table:    table,
	}
	switch len(r.Via) {
	case 0:
	case 1:
		nr.Gw = r.Via[0].AsSlice()
	default:
		for _, a := range r.Via {
			nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{Gw: a.AsSlice()})
		}
	}
	return nr
}

package main

// INTERIM adapter, to be deleted when the h-kernel branch lands:
// link.Manager then has ApplyRoutes/Routes itself (over kernel.Netlink).
// Until then this adapts the current link.Manager to the owner's Links
// interface without any second writer of kernel state.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/vishvananda/netlink"
)

// interimLinks is link.Manager for links and addresses (its own route
// step is pointed at an unused table and gets no routes), plus the
// main-table routes written here over the same handle.
type interimLinks struct {
	*link.Manager
	h link.Handle
}

// interimLinkTable is where link.Manager's own (now empty) route plan
// goes: never the main table, so its Apply never touches the owner's
// routes. SteerTableBase itself is no steering class's table (those are
// base+1...).
const interimLinkTable = kernel.SteerTableBase

func newInterimLinks(h link.Handle, log *slog.Logger) *interimLinks {
	return &interimLinks{Manager: link.NewManager(h, link.Options{Logger: log, Table: interimLinkTable}), h: h}
}

func (l *interimLinks) Apply(ctx context.Context, d dataplane.Desired) error {
	d.Tunnels = slices.Clone(d.Tunnels)
	for i := range d.Tunnels {
		d.Tunnels[i].RemoteLANs = nil
	}
	return l.Manager.Apply(ctx, d)
}

type routeKey struct {
	dst    netip.Prefix
	metric int
}

func (l *interimLinks) list() (map[routeKey]netlink.Route, error) {
	all, err := link.RetryDump(func() ([]netlink.Route, error) {
		return l.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: kernel.MainTable}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	out := map[routeKey]netlink.Route{}
	for _, r := range all {
		dst := netip.MustParsePrefix("0.0.0.0/0")
		if r.Dst != nil {
			a, ok := netip.AddrFromSlice(r.Dst.IP)
			if !ok {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			dst = netip.PrefixFrom(a.Unmap(), ones)
		}
		out[routeKey{dst, r.Priority}] = r
	}
	return out, nil
}

func ours(r netlink.Route) bool {
	return r.Protocol == kernel.ProtoStatic || r.Protocol == kernel.ProtoBGP
}

func gateways(r netlink.Route) []netip.Addr {
	var out []netip.Addr
	if a, ok := netip.AddrFromSlice(r.Gw); ok {
		out = append(out, a.Unmap())
	}
	for _, nh := range r.MultiPath {
		if a, ok := netip.AddrFromSlice(nh.Gw); ok {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// ApplyRoutes makes meshwan's main-table routes equal to rs: one replace
// per changed route, one delete per stale one; another owner's route on
// the same (prefix, metric) is reported, never overwritten.
func (l *interimLinks) ApplyRoutes(ctx context.Context, rs []kernel.Route) error {
	have, err := l.list()
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	keep := map[routeKey]bool{}
	for _, r := range rs {
		k := routeKey{r.Dst, r.Metric}
		keep[k] = true
		if cur, ok := have[k]; ok {
			if !ours(cur) {
				errs = append(errs, fmt.Errorf("route %v metric %d: taken by protocol %v; not touching it", r.Dst, r.Metric, cur.Protocol))
				continue
			}
			if int(cur.Protocol) == r.Protocol && slices.Equal(gateways(cur), r.Via) {
				continue
			}
		}
		nr := &netlink.Route{Family: netlink.FAMILY_V4, Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
			Protocol: netlink.RouteProtocol(r.Protocol), Priority: r.Metric, Table: kernel.MainTable}
		if len(r.Via) == 1 {
			nr.Gw = r.Via[0].AsSlice()
		} else {
			for _, a := range r.Via {
				nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{Gw: a.AsSlice()})
			}
		}
		if err := l.h.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("route %v via %v metric %d: %w", r.Dst, r.Via, r.Metric, err))
		}
	}
	for k, cur := range have {
		if ours(cur) && !keep[k] {
			if err := l.h.RouteDel(&cur); err != nil {
				errs = append(errs, fmt.Errorf("delete route %v metric %d: %w", k.dst, k.metric, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Routes lists meshwan's main-table routes.
func (l *interimLinks) Routes(ctx context.Context) ([]kernel.Route, error) {
	have, err := l.list()
	if err != nil {
		return nil, err
	}
	var out []kernel.Route
	for k, r := range have {
		if ours(r) {
			out = append(out, kernel.Route{Dst: k.dst, Via: gateways(r), Metric: k.metric, Protocol: int(r.Protocol)})
		}
	}
	slices.SortFunc(out, func(a, b kernel.Route) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()), cmp.Compare(a.Metric, b.Metric))
	})
	return out, nil
}

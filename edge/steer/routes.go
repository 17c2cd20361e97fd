package steer

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeKey identifies a route the way the kernel does for replace: table,
// destination and metric (TOS is never used here).
type routeKey struct {
	table  int
	dst    netip.Prefix
	metric int
}

func (k routeKey) String() string {
	return fmt.Sprintf("table %d %v metric %d", k.table, k.dst, k.metric)
}

func compareRouteKey(a, b routeKey) int {
	return cmp.Or(cmp.Compare(a.table, b.table), comparePrefix(a.dst, b.dst), cmp.Compare(a.metric, b.metric))
}

// observedRoutes: ours are the IPv4 routes with kernel.ProtoSteer in any table;
// foreign are routes of other protocols inside the class tables.
type observedRoutes struct {
	ours    map[routeKey]netlink.Route
	foreign map[routeKey]netlink.Route
}

func routeKeyOf(r netlink.Route) (routeKey, bool) {
	k := routeKey{table: r.Table, metric: r.Priority, dst: netip.MustParsePrefix("0.0.0.0/0")}
	if r.Dst != nil {
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, bits := r.Dst.Mask.Size()
		if !ok || !ip.Unmap().Is4() || bits != 32 {
			return routeKey{}, false
		}
		k.dst = netip.PrefixFrom(ip.Unmap(), ones)
	}
	return k, true
}

// listRoutes reads the IPv4 routes of every table (one dump) and keeps
// ours and the foreign ones in class tables.
func (k *Kernel) listRoutes() (observedRoutes, error) {
	all, err := kernel.RetryDump(func() ([]netlink.Route, error) {
		return k.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return observedRoutes{}, fmt.Errorf("list routes: %w", err)
	}
	o := observedRoutes{ours: map[routeKey]netlink.Route{}, foreign: map[routeKey]netlink.Route{}}
	for _, r := range all {
		key, ok := routeKeyOf(r)
		if !ok {
			continue
		}
		switch {
		case r.Protocol == kernel.ProtoSteer:
			o.ours[key] = r
		case k.num.ownsTable(r.Table):
			o.foreign[key] = r
		}
	}
	return o, nil
}

// wantRoute is one route of the plan, resolved: linkIndex 0 means its link
// does not exist (the route is then neither installed nor its key freed).
type wantRoute struct {
	Route
	class     string
	linkIndex int
}

func (k *Kernel) linkIndex() (map[string]int, error) {
	links, err := kernel.RetryDump(k.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	index := make(map[string]int, len(links))
	for _, l := range links {
		index[l.Attrs().Name] = l.Attrs().Index
	}
	return index, nil
}

func (k *Kernel) wantRoutes(p Plan, index map[string]int) (map[routeKey]wantRoute, []error) {
	want := map[routeKey]wantRoute{}
	var errs []error
	for _, t := range p.Tables {
		for _, r := range t.Routes {
			if !r.Dst.IsValid() || !r.Dst.Addr().Is4() {
				errs = append(errs, fmt.Errorf("class %s: route %v: not an IPv4 prefix", t.Class, r))
				continue
			}
			key := routeKey{table: t.Table, dst: r.Dst.Masked()}
			if _, dup := want[key]; dup {
				errs = append(errs, fmt.Errorf("class %s: two routes to %v", t.Class, r.Dst))
				continue
			}
			w := wantRoute{Route: r, class: t.Class, linkIndex: index[r.Link]}
			if w.linkIndex == 0 {
				errs = append(errs, fmt.Errorf("class %s: route %v: link %s does not exist", t.Class, r, r.Link))
			}
			want[key] = w
		}
	}
	return want, errs
}

func sameRoute(r netlink.Route, w wantRoute) bool {
	if r.LinkIndex != w.linkIndex || len(r.MultiPath) > 0 {
		return false
	}
	gw, _ := netip.AddrFromSlice(r.Gw)
	return gw.Unmap() == w.Gw || (!gw.IsValid() && !w.Gw.IsValid())
}

func (k *Kernel) addRoutes(o observedRoutes, want map[routeKey]wantRoute) []error {
	var errs []error
	for _, key := range sortedKeys(want) {
		w := want[key]
		if w.linkIndex == 0 {
			continue
		}
		if r, ok := o.ours[key]; ok && sameRoute(r, w) {
			continue
		}
		if r, ok := o.foreign[key]; ok {
			errs = append(errs, fmt.Errorf("class %s: route %v: table %d already has a route to %v with protocol %d; not touching it",
				w.class, w.Route, key.table, key.dst, r.Protocol))
			continue
		}
		nr := &netlink.Route{
			Family:    netlink.FAMILY_V4,
			Table:     key.table,
			Dst:       &net.IPNet{IP: key.dst.Addr().AsSlice(), Mask: net.CIDRMask(key.dst.Bits(), 32)},
			LinkIndex: w.linkIndex,
			Protocol:  kernel.ProtoSteer,
			Type:      unix.RTN_UNICAST,
		}
		if w.Gw.IsValid() {
			nr.Gw = w.Gw.AsSlice()
		} else {
			nr.Scope = netlink.SCOPE_LINK
		}
		if err := k.nl.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("class %s: install route %v in table %d: %w", w.class, w.Route, key.table, err))
			continue
		}
		k.log.Info("steering route installed", "class", w.class, "table", key.table, "route", w.Route.String(), "tunnel_id", w.TunnelID)
	}
	return errs
}

func (k *Kernel) delRoutes(o observedRoutes, want map[routeKey]wantRoute) []error {
	var errs []error
	for _, key := range sortedKeys(o.ours) {
		if _, ok := want[key]; ok {
			continue
		}
		r := o.ours[key]
		if err := k.nl.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete route %v: %w", key, err))
			continue
		}
		k.log.Info("steering route deleted", "table", key.table, "dst", key.dst.String())
	}
	return errs
}

func sortedKeys[V any](m map[routeKey]V) []routeKey {
	keys := make([]routeKey, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	slices.SortFunc(keys, compareRouteKey)
	return keys
}

// wantRules returns one rule per active class.
func (k *Kernel) wantRules(active []bool) []netlink.Rule {
	var out []netlink.Rule
	for i, ok := range active {
		if !ok {
			continue
		}
		r := netlink.NewRule()
		r.Family = netlink.FAMILY_V4
		r.Priority = k.num.Priority(i)
		r.Table = k.num.Table(i)
		r.Mark = k.num.Mark(i)
		mask := k.num.MarkMask
		r.Mask = &mask
		r.Protocol = kernel.ProtoSteer
		out = append(out, *r)
	}
	return out
}

// listRules returns our IPv4 ip rules (protocol kernel.ProtoSteer).
func (k *Kernel) listRules() ([]netlink.Rule, error) {
	all, err := kernel.RetryDump(func() ([]netlink.Rule, error) { return k.nl.RuleListFiltered(netlink.FAMILY_V4, nil, 0) })
	if err != nil {
		return nil, fmt.Errorf("list ip rules: %w", err)
	}
	var ours []netlink.Rule
	for _, r := range all {
		if r.Protocol == kernel.ProtoSteer {
			ours = append(ours, r)
		}
	}
	return ours, nil
}

func (k *Kernel) addRules(have, want []netlink.Rule) []error {
	present := map[string]bool{}
	for _, r := range have {
		present[kernel.RuleText(r)] = true
	}
	var errs []error
	for _, r := range want {
		if present[kernel.RuleText(r)] {
			continue
		}
		if err := k.nl.RuleAdd(&r); err != nil {
			errs = append(errs, fmt.Errorf("add ip rule %s: %w", kernel.RuleText(r), err))
			continue
		}
		k.log.Info("steering ip rule added", "priority", r.Priority, "mark", fmt.Sprintf("%#08x", r.Mark), "table", r.Table)
	}
	return errs
}

// delRules deletes the rules in have that are not wanted, and duplicates.
func (k *Kernel) delRules(have, want []netlink.Rule) []error {
	wanted := map[string]bool{}
	for _, r := range want {
		wanted[kernel.RuleText(r)] = true
	}
	var errs []error
	for _, r := range have {
		key := kernel.RuleText(r)
		if wanted[key] {
			wanted[key] = false // keep the first copy only
			continue
		}
		if err := k.nl.RuleDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete ip rule %s: %w", key, err))
			continue
		}
		k.log.Info("steering ip rule deleted", "priority", r.Priority, "mark", fmt.Sprintf("%#08x", r.Mark), "table", r.Table)
	}
	return errs
}

package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FakeRoutes is an in-memory RouteHandle for unit tests only. It keys
// routes like the kernel, by (dst, metric, table): RouteReplace replaces
// the first route with the key WHATEVER ITS PROTOCOL (as the kernel does,
// so a sync that clobbered a foreign route shows up in the state), and
// RouteDel matches the protocol and gateways when the request names them.
// With SetConnected it also refuses gateways outside the connected
// subnets (ENETUNREACH), like a kernel whose tunnel link is gone. It
// records every call, can fail chosen calls, and prints its state as
// sorted text for comparison with a `want` string. The privileged tests
// and the VM lab prove the real kernel; FakeRoutes proves the logic.
type FakeRoutes struct {
	mu        sync.Mutex
	routes    []netlink.Route
	connected []netip.Prefix
	calls     []string
	failing   map[string]error
}

var _ RouteHandle = (*FakeRoutes)(nil)

// NewFakeRoutes returns an empty fake routing table set.
func NewFakeRoutes() *FakeRoutes {
	return &FakeRoutes{failing: map[string]error{}}
}

// Fail makes every later call whose log line starts with prefix (e.g.
// "RouteReplace" or "RouteReplace 10.1.0.0/16") fail with err, changing
// nothing. A nil err removes the failure.
func (f *FakeRoutes) Fail(prefix string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failing, prefix)
		return
	}
	f.failing[prefix] = err
}

// SetConnected sets the subnets gateways must lie in; none (the default)
// accepts every gateway.
func (f *FakeRoutes) SetConnected(ps ...netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connected = slices.Clone(ps)
}

// Calls returns the log of calls so far, one line each.
func (f *FakeRoutes) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Writes returns the logged calls that change state (not the lists).
func (f *FakeRoutes) Writes() []string {
	var w []string
	for _, c := range f.Calls() {
		if !strings.HasPrefix(c, "RouteList") {
			w = append(w, c)
		}
	}
	return w
}

// ResetCalls clears the call log.
func (f *FakeRoutes) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// AddForeign puts a route someone else owns (or a route left by an
// earlier run of ours) into the table without logging a call.
func (f *FakeRoutes) AddForeign(r netlink.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Table = tableOf(&r)
	f.routes = append(f.routes, r)
}

// String prints the state as sorted lines:
//
//	<dst> via <gw>[,<gw>...] proto <n> metric <n> table <n>
func (f *FakeRoutes) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	lines := make([]string, 0, len(f.routes))
	for _, r := range f.routes {
		lines = append(lines, fmt.Sprintf("%v via %s proto %d metric %d table %d",
			r.Dst, viaText(&r), int(r.Protocol), r.Priority, r.Table))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func viaText(r *netlink.Route) string {
	k, _ := fromNetlink(*r)
	if len(k.Via) == 0 {
		return "-"
	}
	s := make([]string, len(k.Via))
	for i, a := range k.Via {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func tableOf(r *netlink.Route) int {
	if r.Table == 0 {
		return mainTable
	}
	return r.Table
}

// call logs a call and returns the injected failure, if any. Callers hold
// f.mu.
func (f *FakeRoutes) call(line string) error {
	f.calls = append(f.calls, line)
	for p, err := range f.failing {
		if strings.HasPrefix(line, p) {
			return err
		}
	}
	return nil
}

func sameKey(a, b *netlink.Route) bool {
	return a.Dst.String() == b.Dst.String() && a.Priority == b.Priority && tableOf(a) == tableOf(b)
}

// RouteListFiltered implements RouteHandle. It honours RT_FILTER_TABLE and
// RT_FILTER_PROTOCOL; without RT_FILTER_TABLE it lists the main table, as
// netlink does.
func (f *FakeRoutes) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RouteListFiltered"); err != nil {
		return nil, err
	}
	var out []netlink.Route
	for _, r := range f.routes {
		switch {
		case mask&netlink.RT_FILTER_TABLE == 0 && r.Table != mainTable,
			filter != nil && mask&netlink.RT_FILTER_TABLE != 0 && r.Table != filter.Table,
			filter != nil && mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol:
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// RouteReplace implements RouteHandle.
func (f *FakeRoutes) RouteReplace(route *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(fmt.Sprintf("RouteReplace %v via %s proto %d metric %d table %d",
		route.Dst, viaText(route), int(route.Protocol), route.Priority, tableOf(route))); err != nil {
		return err
	}
	if route.Dst == nil {
		return unix.EINVAL
	}
	if len(f.connected) > 0 {
		k, _ := fromNetlink(*route)
		for _, gw := range k.Via {
			if !slices.ContainsFunc(f.connected, func(p netip.Prefix) bool { return p.Contains(gw) }) {
				return unix.ENETUNREACH
			}
		}
	}
	r := *route
	r.Table = tableOf(route)
	r.Family = netlink.FAMILY_V4
	r.MultiPath = slices.Clone(route.MultiPath)
	if i := slices.IndexFunc(f.routes, func(o netlink.Route) bool { return sameKey(&o, &r) }); i >= 0 {
		f.routes[i] = r
		return nil
	}
	f.routes = append(f.routes, r)
	return nil
}

// RouteDel implements RouteHandle: the first route with the request's
// key, and its protocol and gateways when the request names them.
func (f *FakeRoutes) RouteDel(route *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(fmt.Sprintf("RouteDel %v via %s proto %d metric %d table %d",
		route.Dst, viaText(route), int(route.Protocol), route.Priority, tableOf(route))); err != nil {
		return err
	}
	want, _ := fromNetlink(*route)
	i := slices.IndexFunc(f.routes, func(o netlink.Route) bool {
		if !sameKey(&o, route) || (route.Protocol != 0 && o.Protocol != route.Protocol) {
			return false
		}
		have, _ := fromNetlink(o)
		return len(want.Via) == 0 || slices.Equal(have.Via, want.Via)
	})
	if i < 0 {
		return unix.ESRCH
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

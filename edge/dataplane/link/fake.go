package link

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Fake is an in-memory Handle for unit tests only: it models links,
// addresses and routes closely enough to catch ordering mistakes (a route
// needs an up link and a gateway on one of its subnets, as in the kernel;
// a link brought up without addrgenmode none grows an IPv6 link-local
// address), records every call, can fail chosen calls, and prints its state
// as sorted text for comparison with a `want` string. The VM lab proves
// the real kernel; Fake proves the logic.
//
// Names: link names and altnames share one namespace (a taken one is
// EEXIST); LinkSetName refuses an up link with EBUSY, as kernels before
// 6.2 do (the lab's Debian 6.1), unless SetLiveRename(true) models a
// newer kernel; LinkSetDown flushes the IPv4 routes through the link in
// every table and keeps its addresses, as the kernel does.
type Fake struct {
	mu         sync.Mutex
	next       int
	links      map[int]*fakeLink
	routes     []netlink.Route
	calls      []string
	failing    map[string]error
	liveRename bool
}

type fakeLink struct {
	attrs   netlink.LinkAttrs
	gre     *netlink.Gretun // nil for other kinds
	kind    string
	genMode int
	groOff  bool // GRO is on for a new link, as in the kernel
	addrs   []netlink.Addr
}

var _ Handle = (*Fake)(nil)

// NewFake returns an empty fake kernel.
func NewFake() *Fake {
	return &Fake{next: 1, links: map[int]*fakeLink{}, failing: map[string]error{}}
}

// Fail makes every later call whose log entry starts with prefix (e.g.
// "LinkAdd" or "LinkAdd mw-b") fail with err, without changing state.
// A nil err removes the failure.
func (f *Fake) Fail(prefix string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failing, prefix)
		return
	}
	f.failing[prefix] = err
}

// Calls returns the log of calls so far, one line each.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Writes returns the logged calls that change state (everything but lists).
func (f *Fake) Writes() []string {
	var w []string
	for _, c := range f.Calls() {
		if m := strings.SplitN(c, " ", 2)[0]; !strings.Contains(m, "List") && m != "LinkGRO" {
			w = append(w, c)
		}
	}
	return w
}

// SetLiveRename makes LinkSetName accept an up link, as Linux 6.2+ does.
func (f *Fake) SetLiveRename(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.liveRename = on
}

// ResetCalls clears the call log.
func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// SetStats sets the counters LinkList reports for a link.
func (f *Fake) SetStats(name string, s netlink.LinkStatistics) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.byName(name); l != nil {
		l.attrs.Statistics = &s
	}
}

// String prints the state as sorted lines:
//
//	addr <link> <prefix>
//	link <name> gre local <ip> remote <ip> ttl <n> pmtudisc <n> mtu <n> [alias <a>] [altname <n>]... [up] [addrgenmode none] [gro off]
//	route <dst> via <gw> dev <link> proto <n> metric <n> table <n>
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, l := range f.links {
		var b strings.Builder
		fmt.Fprintf(&b, "link %s %s", l.attrs.Name, l.kind)
		if g := l.gre; g != nil {
			fmt.Fprintf(&b, " local %v remote %v ttl %d pmtudisc %d", g.Local, g.Remote, g.Ttl, g.PMtuDisc)
		}
		fmt.Fprintf(&b, " mtu %d", l.attrs.MTU)
		if l.attrs.Alias != "" {
			fmt.Fprintf(&b, " alias %s", l.attrs.Alias)
		}
		for _, n := range l.attrs.AltNames {
			fmt.Fprintf(&b, " altname %s", n)
		}
		if l.attrs.Flags&net.FlagUp != 0 {
			b.WriteString(" up")
		}
		if l.genMode == nl.IN6_ADDR_GEN_MODE_NONE {
			b.WriteString(" addrgenmode none")
		}
		if l.groOff {
			b.WriteString(" gro off")
		}
		lines = append(lines, b.String())
		for _, a := range l.addrs {
			lines = append(lines, fmt.Sprintf("addr %s %v", l.attrs.Name, a.IPNet))
		}
	}
	for _, r := range f.routes {
		dev := "?"
		if l := f.links[r.LinkIndex]; l != nil {
			dev = l.attrs.Name
		}
		lines = append(lines, fmt.Sprintf("route %v via %v dev %s proto %d metric %d table %d", r.Dst, r.Gw, dev, int(r.Protocol), r.Priority, r.Table))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// call logs a call and returns the injected failure for it, if any.
// Callers hold f.mu.
func (f *Fake) call(format string, args ...any) error {
	c := fmt.Sprintf(format, args...)
	f.calls = append(f.calls, c)
	for p, err := range f.failing {
		if strings.HasPrefix(c, p) {
			return err
		}
	}
	return nil
}

func (f *Fake) byName(name string) *fakeLink {
	for _, l := range f.links {
		if l.attrs.Name == name {
			return l
		}
	}
	return nil
}

// nameTaken reports whether a link has name as its name or an altname.
func (f *Fake) nameTaken(name string) bool {
	for _, l := range f.links {
		if l.attrs.Name == name || slices.Contains(l.attrs.AltNames, name) {
			return true
		}
	}
	return false
}

// find resolves a link argument like the real handle: by index, else by name.
func (f *Fake) find(link netlink.Link) (*fakeLink, error) {
	a := link.Attrs()
	if l := f.links[a.Index]; a.Index != 0 && l != nil {
		return l, nil
	}
	if a.Index == 0 {
		if l := f.byName(a.Name); l != nil {
			a.Index = l.attrs.Index
			return l, nil
		}
	}
	return nil, unix.ENODEV
}

func (f *Fake) export(l *fakeLink) netlink.Link {
	attrs := l.attrs
	attrs.AltNames = slices.Clone(attrs.AltNames)
	if attrs.Statistics != nil {
		s := *attrs.Statistics
		attrs.Statistics = &s
	}
	if l.gre != nil {
		g := *l.gre
		g.LinkAttrs = attrs
		return &g
	}
	return &netlink.GenericLink{LinkAttrs: attrs, LinkType: l.kind}
}

// LinkList implements Handle.
func (f *Fake) LinkList() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkList"); err != nil {
		return nil, err
	}
	idx := make([]int, 0, len(f.links))
	for i := range f.links {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	out := make([]netlink.Link, 0, len(idx))
	for _, i := range idx {
		out = append(out, f.export(f.links[i]))
	}
	return out, nil
}

// LinkAdd implements Handle. Like the kernel it refuses a taken name and,
// like netlink's ensureIndex, writes the new ifindex back into link.
func (f *Fake) LinkAdd(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := link.Attrs()
	if err := f.call("LinkAdd %s %s", a.Name, link.Type()); err != nil {
		return err
	}
	if f.nameTaken(a.Name) {
		return unix.EEXIST
	}
	l := &fakeLink{attrs: *a, kind: link.Type(), genMode: nl.IN6_ADDR_GEN_MODE_EUI64}
	l.attrs.Index = f.next
	l.attrs.AltNames = nil
	l.attrs.Alias = "" // the kernel ignores IFLA_IFALIAS on create
	l.attrs.Flags &^= net.FlagUp
	l.attrs.OperState = netlink.OperDown
	if l.attrs.MTU == 0 {
		l.attrs.MTU = 1500
		if l.kind == "gre" {
			l.attrs.MTU = 1476
		}
	}
	if g, ok := link.(*netlink.Gretun); ok {
		c := *g
		l.gre = &c
	}
	f.links[f.next] = l
	a.Index = f.next
	f.next++
	return nil
}

// LinkDel implements Handle; routes through the link go with it.
func (f *Fake) LinkDel(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkDel %s", link.Attrs().Name); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	delete(f.links, l.attrs.Index)
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == l.attrs.Index })
	return nil
}

// LinkGRO implements Handle.
func (f *Fake) LinkGRO(link netlink.Link) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkGRO %s", link.Attrs().Name); err != nil {
		return false, err
	}
	l, err := f.find(link)
	if err != nil {
		return false, err
	}
	return !l.groOff, nil
}

// LinkSetGRO implements Handle.
func (f *Fake) LinkSetGRO(link netlink.Link, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	state := "off"
	if on {
		state = "on"
	}
	if err := f.call("LinkSetGRO %s %s", link.Attrs().Name, state); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.groOff = !on
	return nil
}

// LinkSetUp implements Handle. Unless addrgenmode is none, the link grows
// an IPv6 link-local address, as the kernel does.
func (f *Fake) LinkSetUp(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSetUp %s", link.Attrs().Name); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.attrs.Flags |= net.FlagUp
	l.attrs.RawFlags |= unix.IFF_UP | unix.IFF_LOWER_UP
	l.attrs.OperState = netlink.OperUnknown
	if l.genMode != nl.IN6_ADDR_GEN_MODE_NONE && !slices.ContainsFunc(l.addrs, isV6LinkLocal) {
		ll := net.ParseIP(fmt.Sprintf("fe80::%x", l.attrs.Index))
		l.addrs = append(l.addrs, netlink.Addr{IPNet: &net.IPNet{IP: ll, Mask: net.CIDRMask(64, 128)}, LinkIndex: l.attrs.Index})
	}
	return nil
}

// LinkSetDown implements Handle. Like the kernel, it flushes the IPv4
// routes through the link in every table; addresses stay.
func (f *Fake) LinkSetDown(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSetDown %s", link.Attrs().Name); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.attrs.Flags &^= net.FlagUp
	l.attrs.RawFlags &^= unix.IFF_UP | unix.IFF_LOWER_UP
	l.attrs.OperState = netlink.OperDown
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == l.attrs.Index })
	return nil
}

// LinkSetName implements Handle: EBUSY while up (unless SetLiveRename),
// EEXIST for a name or altname in use, EINVAL for an invalid name.
func (f *Fake) LinkSetName(link netlink.Link, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSetName %s %s", link.Attrs().Name, name); err != nil {
		return err
	}
	l, err := f.find(link)
	switch {
	case err != nil:
		return err
	case validName(name, 15) != nil:
		return unix.EINVAL
	case l.attrs.Name == name:
		return nil
	case f.nameTaken(name):
		return unix.EEXIST
	case l.attrs.Flags&net.FlagUp != 0 && !f.liveRename:
		return unix.EBUSY
	}
	l.attrs.Name = name
	return nil
}

// LinkAddAltName implements Handle: EEXIST for a name or altname in use.
func (f *Fake) LinkAddAltName(link netlink.Link, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkAddAltName %s %s", link.Attrs().Name, name); err != nil {
		return err
	}
	l, err := f.find(link)
	switch {
	case err != nil:
		return err
	case validName(name, 127) != nil:
		return unix.EINVAL
	case f.nameTaken(name):
		return unix.EEXIST
	}
	l.attrs.AltNames = append(l.attrs.AltNames, name)
	return nil
}

// validName is the kernel's dev_valid_name with a length bound.
func validName(name string, max int) error {
	if len(name) > max {
		return unix.EINVAL
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return unix.EINVAL
	}
	return nil
}

// LinkSetMTU implements Handle.
func (f *Fake) LinkSetMTU(link netlink.Link, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSetMTU %s %d", link.Attrs().Name, mtu); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.attrs.MTU = mtu
	return nil
}

// LinkSetAlias implements Handle.
func (f *Fake) LinkSetAlias(link netlink.Link, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSetAlias %s %s", link.Attrs().Name, alias); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.attrs.Alias = alias
	return nil
}

// LinkSetIP6AddrGenMode implements Handle.
func (f *Fake) LinkSetIP6AddrGenMode(link netlink.Link, mode int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSetIP6AddrGenMode %s %d", link.Attrs().Name, mode); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.genMode = mode
	return nil
}

// AddrList implements Handle; a nil link lists every link's addresses.
func (f *Fake) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := "all"
	if link != nil {
		name = link.Attrs().Name
	}
	if err := f.call("AddrList %s", name); err != nil {
		return nil, err
	}
	var src []*fakeLink
	if link == nil {
		for _, l := range f.links {
			src = append(src, l)
		}
	} else {
		l, err := f.find(link)
		if err != nil {
			return nil, err
		}
		src = []*fakeLink{l}
	}
	var out []netlink.Addr
	for _, l := range src {
		for _, a := range l.addrs {
			is4 := a.IP.To4() != nil
			if family == netlink.FAMILY_ALL || (family == netlink.FAMILY_V4) == is4 {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// AddrAdd implements Handle.
func (f *Fake) AddrAdd(link netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AddrAdd %s %v", link.Attrs().Name, addr.IPNet); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool { return a.IPNet.String() == addr.IPNet.String() }) {
		return unix.EEXIST
	}
	a := *addr
	a.LinkIndex = l.attrs.Index
	l.addrs = append(l.addrs, a)
	return nil
}

// AddrDel implements Handle.
func (f *Fake) AddrDel(link netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AddrDel %s %v", link.Attrs().Name, addr.IPNet); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	n := len(l.addrs)
	l.addrs = slices.DeleteFunc(l.addrs, func(a netlink.Addr) bool { return a.IPNet.String() == addr.IPNet.String() })
	if len(l.addrs) == n {
		return unix.EADDRNOTAVAIL
	}
	return nil
}

// RouteListFiltered implements Handle. It honours RT_FILTER_TABLE,
// RT_FILTER_PROTOCOL and RT_FILTER_OIF, the filters this package uses;
// without RT_FILTER_TABLE it lists the main table, and with it and table
// RT_TABLE_UNSPEC every table, as netlink does.
func (f *Fake) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RouteListFiltered"); err != nil {
		return nil, err
	}
	var out []netlink.Route
	for _, r := range f.routes {
		switch {
		case mask&netlink.RT_FILTER_TABLE == 0 && r.Table != unix.RT_TABLE_MAIN,
			filter != nil && mask&netlink.RT_FILTER_TABLE != 0 && filter.Table != unix.RT_TABLE_UNSPEC && r.Table != filter.Table,
			filter != nil && mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol,
			filter != nil && mask&netlink.RT_FILTER_OIF != 0 && r.LinkIndex != filter.LinkIndex:
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func routeTable(r *netlink.Route) int {
	if r.Table == 0 {
		return unix.RT_TABLE_MAIN
	}
	return r.Table
}

// RouteReplace implements Handle, keyed like the kernel on (dst, metric,
// table). The link must be up and the gateway inside one of its IPv4
// subnets, else ENETDOWN / ENETUNREACH.
func (f *Fake) RouteReplace(route *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RouteReplace %v via %v dev %d metric %d", route.Dst, route.Gw, route.LinkIndex, route.Priority); err != nil {
		return err
	}
	l := f.links[route.LinkIndex]
	switch {
	case l == nil:
		return unix.ENODEV
	case l.attrs.Flags&net.FlagUp == 0:
		return unix.ENETDOWN
	case !slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool { return a.IP.To4() != nil && a.Contains(route.Gw) }):
		return unix.ENETUNREACH
	}
	r := *route
	r.Table = routeTable(route)
	r.Family = netlink.FAMILY_V4
	f.routes = slices.DeleteFunc(f.routes, func(o netlink.Route) bool {
		return o.Dst.String() == r.Dst.String() && o.Priority == r.Priority && o.Table == r.Table
	})
	f.routes = append(f.routes, r)
	return nil
}

// RouteDel implements Handle.
func (f *Fake) RouteDel(route *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RouteDel %v metric %d", route.Dst, route.Priority); err != nil {
		return err
	}
	n := len(f.routes)
	t := routeTable(route)
	f.routes = slices.DeleteFunc(f.routes, func(o netlink.Route) bool {
		return o.Dst.String() == route.Dst.String() && o.Priority == route.Priority && o.Table == t
	})
	if len(f.routes) == n {
		return unix.ESRCH
	}
	return nil
}

// AddForeignRoute puts a route someone else owns into the fake without
// logging a call, e.g. a BGP or hand-made static route.
func (f *Fake) AddForeignRoute(r netlink.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Table = routeTable(&r)
	f.routes = append(f.routes, r)
}

package kernel

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// FakeNetlink is the one in-memory Netlink, for unit tests only. It
// models what meshwan's logic depends on, with the kernel's errors:
//
//   - Links by ifindex, name, alias and altnames. Names and altnames share
//     one namespace (EEXIST); LinkSetName refuses an up link with EBUSY
//     as kernels before 6.2 do (the lab's Debian 6.1) unless
//     SetLiveRename(true) models a newer kernel; a new link has GRO on
//     and is down; a link brought up without addrgenmode none grows an
//     IPv6 link-local address. LinkAdd writes the new ifindex back into
//     its argument, as netlink does.
//   - Addresses per link (EEXIST, EADDRNOTAVAIL). No connected or local
//     routes are listed: the route dump holds only routes added through
//     the route calls (or InjectRoute).
//   - Routes keyed like the kernel by (table, dst, tos, metric), table 0
//     meaning main. RouteReplace replaces the route with the key WHATEVER
//     ITS PROTOCOL (as the kernel does, so a caller that clobbers a
//     foreign route shows it in the state), RouteAdd fails with EEXIST on
//     a taken key, RouteDel deletes the first route with the key whose
//     protocol and nexthops match those the request names, as the
//     kernel's fib_nh_match does (metric 0 matches any metric; one
//     gateway is compared with the first nexthop only) and fails with
//     ESRCH otherwise. MultiPath makes an
//     ECMP route (one nexthop is stored as a plain route). Each gateway
//     must lie in an IPv4 subnet of an up link (of the named link, if
//     any): ENETUNREACH, ENETDOWN or ENODEV otherwise; a route without
//     gateway needs an up link.
//   - The kernel's side effects on routes: LinkDel removes every route
//     with a nexthop on the link; LinkSetDown and deleting a link's last
//     IPv4 address remove the routes whose nexthops all lie on down
//     links, in every table and of every protocol, and mark the other
//     nexthops on the link dead until LinkSetUp.
//   - IPv4 ip rules with priority, fwmark/mask, table and protocol:
//     RuleAdd fails with EEXIST on an equal rule, RuleDel deletes the
//     first rule matching every attribute the request sets (ENOENT).
//
// It records every call in its CallLog, fails chosen calls (Fail,
// FailOnce) without changing state, and prints its state as sorted text
// (String) for comparison with a `want` string. The VM lab proves the
// real kernel (the privileged tests of this package run the same call
// sequences on both); FakeNetlink proves the logic.
type FakeNetlink struct {
	// Log records the calls; share it with a FakeNFT to see the order
	// of writes across both.
	Log *CallLog

	fail failures

	mu         sync.Mutex
	next       int
	links      map[int]*fakeLink
	routes     []netlink.Route // sorted by key; same-key routes in insertion order
	rules      []netlink.Rule
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

var _ Netlink = (*FakeNetlink)(nil)

// NewFakeNetlink returns an empty fake kernel (no links, not even lo).
func NewFakeNetlink() *FakeNetlink {
	return &FakeNetlink{Log: &CallLog{}, next: 1, links: map[int]*fakeLink{}}
}

// Fail makes every later call named callName (e.g. "RouteReplace")
// whose logged arguments contain match ("" matches all) fail with err,
// changing nothing. A nil err removes the failure.
func (f *FakeNetlink) Fail(callName, match string, err error) {
	f.fail.set(callName, match, err, false)
}

// FailOnce is Fail for the next matching call only.
func (f *FakeNetlink) FailOnce(callName, match string, err error) {
	f.fail.set(callName, match, err, true)
}

// Calls, Writes and ResetCalls are shorthands for f.Log's.
func (f *FakeNetlink) Calls() []string  { return f.Log.Calls() }
func (f *FakeNetlink) Writes() []string { return f.Log.Writes() }
func (f *FakeNetlink) ResetCalls()      { f.Log.Reset() }

// SetLiveRename makes LinkSetName accept an up link, as Linux 6.2+ does.
func (f *FakeNetlink) SetLiveRename(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.liveRename = on
}

// SetStats sets the counters LinkList reports for a link.
func (f *FakeNetlink) SetStats(name string, s netlink.LinkStatistics) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.byName(name); l != nil {
		l.attrs.Statistics = &s
	}
}

// InjectRoute puts r into its table (0: main) as another program, or an
// earlier run, left it: no checks, no call logged, appended after any
// route with its key (`ip route append`).
func (f *FakeNetlink) InjectRoute(r netlink.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.insertRoute(normRoute(r), false)
}

// InjectRule adds r as another program would, without checks or log.
func (f *FakeNetlink) InjectRule(r netlink.Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, copyRule(normRule(r)))
}

// String prints the state as sorted lines:
//
//	addr <link> <prefix>
//	link <name> <kind> [local <ip> remote <ip> ttl <n> pmtudisc <n>] mtu <n> [alias <a>] [altname <n>]... [up] [addrgenmode none] [gro off]
//	route <dst> via <gw> dev <link> proto <n> metric <n> table <n>
//	route <dst> nexthop via <gw> dev <link> [dead] nexthop ... proto <n> metric <n> table <n>
//	rule pref <n> fwmark <mark>/<mask> lookup <table> proto <n>
func (f *FakeNetlink) String() string {
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
		lines = append(lines, "route "+f.routeText(&r))
	}
	for _, r := range f.rules {
		lines = append(lines, "rule "+RuleText(r))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// RuleText renders the parts of an ip rule meshwan uses: "pref P fwmark
// M/MASK lookup T proto P", plus " +other selectors" when it has any
// other selector (so it never equals a rule meshwan wants).
func RuleText(r netlink.Rule) string {
	mask := uint32(0xffffffff)
	if r.Mask != nil {
		mask = *r.Mask
	}
	s := fmt.Sprintf("pref %d fwmark %#x/%#x lookup %d proto %d", r.Priority, r.Mark, mask, r.Table, r.Protocol)
	if r.Src != nil || r.Dst != nil || r.IifName != "" || r.OifName != "" || r.Invert || r.Tos != 0 ||
		r.Dport != nil || r.Sport != nil || r.IPProto != 0 || r.UIDRange != nil || r.Goto > 0 {
		s += " +other selectors"
	}
	return s
}

// routeText renders a route or a route request. Callers hold f.mu.
func (f *FakeNetlink) routeText(r *netlink.Route) string {
	var b strings.Builder
	b.WriteString(dstOf(r).String())
	nh := func(gw net.IP, index, flags int) {
		if gw != nil {
			fmt.Fprintf(&b, " via %v", gw)
		}
		if index != 0 {
			b.WriteString(" dev " + f.linkName(index))
		}
		if flags&unix.RTNH_F_DEAD != 0 {
			b.WriteString(" dead")
		}
	}
	if len(r.MultiPath) > 0 {
		for _, h := range r.MultiPath {
			b.WriteString(" nexthop")
			nh(h.Gw, h.LinkIndex, h.Flags)
		}
	} else {
		nh(r.Gw, r.LinkIndex, r.Flags)
	}
	fmt.Fprintf(&b, " proto %d metric %d table %d", int(r.Protocol), r.Priority, tableOf(r.Table))
	if r.Tos != 0 {
		fmt.Fprintf(&b, " tos %d", r.Tos)
	}
	return b.String()
}

func (f *FakeNetlink) linkName(index int) string {
	if l := f.links[index]; l != nil {
		return l.attrs.Name
	}
	return fmt.Sprintf("#%d", index)
}

// call logs a call and returns the injected failure for it, if any.
func (f *FakeNetlink) call(read bool, name string, args string) error {
	if args == "" {
		f.Log.add(name, read)
	} else {
		f.Log.add(name+" "+args, read)
	}
	return f.fail.check(name, args)
}

func (f *FakeNetlink) byName(name string) *fakeLink {
	for _, l := range f.links {
		if l.attrs.Name == name {
			return l
		}
	}
	return nil
}

// nameTaken reports whether a link has name as its name or an altname.
func (f *FakeNetlink) nameTaken(name string) bool {
	for _, l := range f.links {
		if l.attrs.Name == name || slices.Contains(l.attrs.AltNames, name) {
			return true
		}
	}
	return false
}

// find resolves a link argument like the real handle: by index, else by
// name.
func (f *FakeNetlink) find(link netlink.Link) (*fakeLink, error) {
	a := link.Attrs()
	if a.Index != 0 {
		if l := f.links[a.Index]; l != nil {
			return l, nil
		}
		return nil, unix.ENODEV
	}
	if l := f.byName(a.Name); l != nil {
		a.Index = l.attrs.Index
		return l, nil
	}
	return nil, unix.ENODEV
}

func (f *FakeNetlink) export(l *fakeLink) netlink.Link {
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

func up(l *fakeLink) bool { return l.attrs.Flags&net.FlagUp != 0 }

// LinkList implements Netlink, in ifindex order.
func (f *FakeNetlink) LinkList() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(true, "LinkList", ""); err != nil {
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

// LinkAdd implements Netlink.
func (f *FakeNetlink) LinkAdd(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := link.Attrs()
	if err := f.call(false, "LinkAdd", a.Name+" "+link.Type()); err != nil {
		return err
	}
	switch {
	case validName(a.Name, unix.IFNAMSIZ-1) != nil:
		return unix.EINVAL
	case f.nameTaken(a.Name):
		return unix.EEXIST
	}
	l := &fakeLink{attrs: *a, kind: link.Type(), genMode: nl.IN6_ADDR_GEN_MODE_EUI64}
	l.attrs.Index = f.next
	l.attrs.AltNames = nil
	l.attrs.Alias = "" // the kernel ignores IFLA_IFALIAS on create
	l.attrs.Flags &^= net.FlagUp
	l.attrs.RawFlags = 0
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

// LinkDel implements Netlink; every route with a nexthop on the link
// goes with it.
func (f *FakeNetlink) LinkDel(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkDel", link.Attrs().Name); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	delete(f.links, l.attrs.Index)
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool {
		return slices.Contains(nexthopLinks(&r), l.attrs.Index)
	})
	return nil
}

// LinkGRO implements Netlink.
func (f *FakeNetlink) LinkGRO(link netlink.Link) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(true, "LinkGRO", link.Attrs().Name); err != nil {
		return false, err
	}
	l, err := f.find(link)
	if err != nil {
		return false, err
	}
	return !l.groOff, nil
}

// LinkSetGRO implements Netlink.
func (f *FakeNetlink) LinkSetGRO(link netlink.Link, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	state := "off"
	if on {
		state = "on"
	}
	if err := f.call(false, "LinkSetGRO", link.Attrs().Name+" "+state); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.groOff = !on
	return nil
}

// LinkSetUp implements Netlink. Unless addrgenmode is none, the link
// grows an IPv6 link-local address; dead nexthops on it come back.
func (f *FakeNetlink) LinkSetUp(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkSetUp", link.Attrs().Name); err != nil {
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
	for i := range f.routes {
		for _, h := range f.routes[i].MultiPath {
			if h.LinkIndex == l.attrs.Index {
				h.Flags &^= unix.RTNH_F_DEAD
			}
		}
	}
	return nil
}

// LinkSetDown implements Netlink: routes whose nexthops all lie on down
// links go, in every table; addresses stay.
func (f *FakeNetlink) LinkSetDown(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkSetDown", link.Attrs().Name); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.attrs.Flags &^= net.FlagUp
	l.attrs.RawFlags &^= unix.IFF_UP | unix.IFF_LOWER_UP
	l.attrs.OperState = netlink.OperDown
	f.syncDown(l.attrs.Index)
	return nil
}

// syncDown is the kernel's fib_sync_down_dev for a link that went down
// (or lost its last IPv4 address): a route is removed when none of its
// nexthops is usable any more; the link's nexthops in the others are
// marked dead.
func (f *FakeNetlink) syncDown(index int) {
	usable := func(i int) bool {
		l := f.links[i]
		return i != index && l != nil && up(l) && slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool { return a.IP.To4() != nil })
	}
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool {
		links := nexthopLinks(&r)
		if !slices.Contains(links, index) {
			return false
		}
		return !slices.ContainsFunc(links, usable)
	})
	for i := range f.routes {
		for _, h := range f.routes[i].MultiPath {
			if h.LinkIndex == index {
				h.Flags |= unix.RTNH_F_DEAD
			}
		}
	}
}

// LinkSetName implements Netlink: EBUSY while up (unless SetLiveRename),
// EEXIST for a name or altname in use, EINVAL for an invalid name.
func (f *FakeNetlink) LinkSetName(link netlink.Link, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkSetName", link.Attrs().Name+" "+name); err != nil {
		return err
	}
	l, err := f.find(link)
	switch {
	case err != nil:
		return err
	case validName(name, unix.IFNAMSIZ-1) != nil:
		return unix.EINVAL
	case l.attrs.Name == name:
		return nil
	case f.nameTaken(name):
		return unix.EEXIST
	case up(l) && !f.liveRename:
		return unix.EBUSY
	}
	l.attrs.Name = name
	return nil
}

// LinkAddAltName implements Netlink: EEXIST for a name or altname in use.
func (f *FakeNetlink) LinkAddAltName(link netlink.Link, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkAddAltName", link.Attrs().Name+" "+name); err != nil {
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
	if len(name) > max || name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return unix.EINVAL
	}
	return nil
}

// LinkSetMTU implements Netlink.
func (f *FakeNetlink) LinkSetMTU(link netlink.Link, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkSetMTU", fmt.Sprintf("%s %d", link.Attrs().Name, mtu)); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.attrs.MTU = mtu
	return nil
}

// LinkSetAlias implements Netlink.
func (f *FakeNetlink) LinkSetAlias(link netlink.Link, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkSetAlias", link.Attrs().Name+" "+alias); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.attrs.Alias = alias
	return nil
}

// LinkSetIP6AddrGenMode implements Netlink.
func (f *FakeNetlink) LinkSetIP6AddrGenMode(link netlink.Link, mode int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "LinkSetIP6AddrGenMode", fmt.Sprintf("%s %d", link.Attrs().Name, mode)); err != nil {
		return err
	}
	l, err := f.find(link)
	if err != nil {
		return err
	}
	l.genMode = mode
	return nil
}

// AddrList implements Netlink; a nil link lists every link's addresses.
func (f *FakeNetlink) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := "all"
	if link != nil {
		name = link.Attrs().Name
	}
	if err := f.call(true, "AddrList", name); err != nil {
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

// AddrAdd implements Netlink.
func (f *FakeNetlink) AddrAdd(link netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "AddrAdd", fmt.Sprintf("%s %v", link.Attrs().Name, addr.IPNet)); err != nil {
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

// AddrDel implements Netlink. Deleting a link's last IPv4 address takes
// its routes as a link down does.
func (f *FakeNetlink) AddrDel(link netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "AddrDel", fmt.Sprintf("%s %v", link.Attrs().Name, addr.IPNet)); err != nil {
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
	if addr.IP.To4() != nil && !slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool { return a.IP.To4() != nil }) {
		f.syncDown(l.attrs.Index)
	}
	return nil
}

func isV6LinkLocal(a netlink.Addr) bool {
	return a.IPNet != nil && a.IP.To4() == nil && a.IP.IsLinkLocalUnicast()
}

func tableOf(t int) int {
	if t == unix.RT_TABLE_UNSPEC {
		return unix.RT_TABLE_MAIN
	}
	return t
}

var defaultDst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}

func dstOf(r *netlink.Route) *net.IPNet {
	if r.Dst == nil {
		return defaultDst
	}
	return r.Dst
}

// routeKey is the kernel's key of a route.
type routeKey struct {
	table, tos, metric int
	dst                netip.Prefix
}

func keyOf(r *netlink.Route) routeKey {
	return routeKey{table: tableOf(r.Table), tos: r.Tos, metric: r.Priority, dst: prefixOf(dstOf(r))}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	ip, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones)
}

func compareKey(a, b routeKey) int {
	return cmp.Or(cmp.Compare(a.table, b.table), a.dst.Addr().Compare(b.dst.Addr()), cmp.Compare(a.dst.Bits(), b.dst.Bits()),
		cmp.Compare(b.tos, a.tos), cmp.Compare(a.metric, b.metric))
}

// nexthopLinks lists the ifindex of each nexthop of r.
func nexthopLinks(r *netlink.Route) []int {
	if len(r.MultiPath) == 0 {
		return []int{r.LinkIndex}
	}
	out := make([]int, len(r.MultiPath))
	for i, h := range r.MultiPath {
		out[i] = h.LinkIndex
	}
	return out
}

// gateways lists r's gateways, sorted (nil entries for nexthops without).
func gateways(r *netlink.Route) []netip.Addr {
	var out []netip.Addr
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	add(r.Gw)
	for _, h := range r.MultiPath {
		add(h.Gw)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// normRoute copies r the way the kernel stores it: table 0 is main, IPv4,
// the destination masked, one nexthop stored as a plain route.
func normRoute(r netlink.Route) netlink.Route {
	r.Table = tableOf(r.Table)
	r.Family = netlink.FAMILY_V4
	d := prefixOf(dstOf(&r)).Masked()
	r.Dst = &net.IPNet{IP: d.Addr().AsSlice(), Mask: net.CIDRMask(d.Bits(), 32)}
	if len(r.MultiPath) == 1 {
		r.Gw, r.LinkIndex, r.MultiPath = r.MultiPath[0].Gw, r.MultiPath[0].LinkIndex, nil
	}
	mp := make([]*netlink.NexthopInfo, len(r.MultiPath))
	for i, h := range r.MultiPath {
		c := *h
		mp[i] = &c
	}
	if len(mp) == 0 {
		mp = nil
	}
	r.MultiPath = mp
	return r
}

// resolveNexthop checks one nexthop like the kernel's fib_check_nh and
// returns its link: with a gateway, an up link with an IPv4 subnet
// holding it (the named link, if any); without, the named link, up.
func (f *FakeNetlink) resolveNexthop(gw net.IP, index int) (int, error) {
	onLink := func(l *fakeLink) bool {
		return slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool { return a.IP.To4() != nil && a.Contains(gw) })
	}
	if index != 0 {
		l := f.links[index]
		switch {
		case l == nil:
			return 0, unix.ENODEV
		case !up(l):
			return 0, unix.ENETDOWN
		case gw != nil && !onLink(l):
			return 0, unix.ENETUNREACH
		}
		return index, nil
	}
	if gw == nil {
		return 0, unix.ENODEV
	}
	idx := make([]int, 0, len(f.links))
	for i := range f.links {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		if l := f.links[i]; up(l) && onLink(l) {
			return i, nil
		}
	}
	return 0, unix.ENETUNREACH
}

// checkRoute validates a request and fills in each nexthop's link.
func (f *FakeNetlink) checkRoute(r *netlink.Route) error {
	if r.Dst != nil && (r.Dst.IP.To4() == nil || len(r.Dst.Mask) != net.IPv4len) {
		return unix.EINVAL
	}
	if len(r.MultiPath) == 0 {
		i, err := f.resolveNexthop(r.Gw, r.LinkIndex)
		r.LinkIndex = i
		return err
	}
	for _, h := range r.MultiPath {
		i, err := f.resolveNexthop(h.Gw, h.LinkIndex)
		if err != nil {
			return err
		}
		h.LinkIndex = i
	}
	return nil
}

// insertRoute adds r (normalized) at its key's place; with replace it
// takes the place of the first route with the key.
func (f *FakeNetlink) insertRoute(r netlink.Route, replace bool) {
	k := keyOf(&r)
	i, _ := slices.BinarySearchFunc(f.routes, k, func(x netlink.Route, k routeKey) int { return compareKey(keyOf(&x), k) })
	if replace && i < len(f.routes) && keyOf(&f.routes[i]) == k {
		f.routes[i] = r
		return
	}
	for i < len(f.routes) && keyOf(&f.routes[i]) == k {
		i++
	}
	f.routes = slices.Insert(f.routes, i, r)
}

func (f *FakeNetlink) writeRoute(name string, route *netlink.Route, replace, exclusive bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, name, f.routeText(route)); err != nil {
		return err
	}
	r := normRoute(*route)
	if err := f.checkRoute(&r); err != nil {
		return err
	}
	if exclusive && slices.ContainsFunc(f.routes, func(x netlink.Route) bool { return keyOf(&x) == keyOf(&r) }) {
		return unix.EEXIST
	}
	f.insertRoute(r, replace)
	return nil
}

// RouteReplace implements Netlink.
func (f *FakeNetlink) RouteReplace(route *netlink.Route) error {
	return f.writeRoute("RouteReplace", route, true, false)
}

// RouteAdd is `ip route add`: EEXIST when the key is taken. meshwan does
// not call it (it is not in Netlink); tests use it as another program.
func (f *FakeNetlink) RouteAdd(route *netlink.Route) error {
	return f.writeRoute("RouteAdd", route, false, true)
}

// RouteAppend is `ip route append`: a second route with a taken key.
// Not in Netlink; tests use it as another program (or an operator).
func (f *FakeNetlink) RouteAppend(route *netlink.Route) error {
	return f.writeRoute("RouteAppend", route, false, false)
}

// RouteDel implements Netlink.
func (f *FakeNetlink) RouteDel(route *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "RouteDel", f.routeText(route)); err != nil {
		return err
	}
	want := normRoute(*route)
	k := keyOf(&want)
	i := slices.IndexFunc(f.routes, func(o netlink.Route) bool {
		ok := keyOf(&o)
		switch {
		case ok.table != k.table || ok.dst != k.dst || ok.tos != k.tos,
			k.metric != 0 && ok.metric != k.metric,
			want.Protocol != 0 && o.Protocol != want.Protocol:
			return false
		}
		return nexthopsMatch(&o, &want)
	})
	if i < 0 {
		return unix.ESRCH
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

// nexthopsMatch is the kernel's fib_nh_match for a delete request: a
// request with one gateway or link is compared with the route's FIRST
// nexthop only (so it deletes an ECMP route whose first gateway it
// names); a multipath request is compared nexthop by nexthop, in order,
// over the route's nexthops; a request naming neither matches any.
func nexthopsMatch(o, req *netlink.Route) bool {
	type hop struct {
		gw    net.IP
		index int
	}
	hops := func(r *netlink.Route) []hop {
		if len(r.MultiPath) == 0 {
			return []hop{{r.Gw, r.LinkIndex}}
		}
		out := make([]hop, len(r.MultiPath))
		for i, h := range r.MultiPath {
			out[i] = hop{h.Gw, h.LinkIndex}
		}
		return out
	}
	have, want := hops(o), hops(req)
	if len(req.MultiPath) == 0 {
		if req.Gw == nil && req.LinkIndex == 0 {
			return true
		}
		have = have[:1]
	} else if len(want) < len(have) {
		return false
	}
	for i, h := range have {
		w := want[i]
		if (w.index != 0 && w.index != h.index) || (w.gw != nil && !w.gw.Equal(h.gw)) {
			return false
		}
	}
	return true
}

// RouteListFiltered implements Netlink.
func (f *FakeNetlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(true, "RouteListFiltered", routeFilterText(filter, mask)); err != nil {
		return nil, err
	}
	if family != netlink.FAMILY_V4 && family != netlink.FAMILY_ALL {
		return nil, nil
	}
	var out []netlink.Route
	for _, r := range f.routes {
		switch {
		case (filter == nil || mask&netlink.RT_FILTER_TABLE == 0) && r.Table != unix.RT_TABLE_MAIN,
			filter != nil && mask&netlink.RT_FILTER_TABLE != 0 && filter.Table != unix.RT_TABLE_UNSPEC && r.Table != filter.Table,
			filter != nil && mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol,
			filter != nil && mask&netlink.RT_FILTER_OIF != 0 && r.LinkIndex != filter.LinkIndex:
			continue
		}
		out = append(out, normRoute(r)) // a copy, MultiPath included
	}
	return out, nil
}

func routeFilterText(filter *netlink.Route, mask uint64) string {
	if filter == nil {
		return ""
	}
	var parts []string
	if mask&netlink.RT_FILTER_TABLE != 0 {
		parts = append(parts, fmt.Sprintf("table %d", filter.Table))
	}
	if mask&netlink.RT_FILTER_PROTOCOL != 0 {
		parts = append(parts, fmt.Sprintf("proto %d", int(filter.Protocol)))
	}
	if mask&netlink.RT_FILTER_OIF != 0 {
		parts = append(parts, fmt.Sprintf("oif %d", filter.LinkIndex))
	}
	return strings.Join(parts, " ")
}

func copyRule(r netlink.Rule) netlink.Rule {
	if r.Mask != nil {
		m := *r.Mask
		r.Mask = &m
	}
	return r
}

func normRule(r netlink.Rule) netlink.Rule {
	if r.Family == 0 {
		r.Family = netlink.FAMILY_V4
	}
	if r.Priority < 0 {
		r.Priority = 0
	}
	return r
}

// RuleListFiltered implements Netlink. It honours RT_FILTER_TABLE,
// RT_FILTER_PRIORITY, RT_FILTER_MARK and RT_FILTER_PROTOCOL.
func (f *FakeNetlink) RuleListFiltered(family int, filter *netlink.Rule, mask uint64) ([]netlink.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(true, "RuleListFiltered", ""); err != nil {
		return nil, err
	}
	var out []netlink.Rule
	for _, r := range f.rules {
		switch {
		case family != netlink.FAMILY_ALL && r.Family != family,
			filter != nil && mask&netlink.RT_FILTER_TABLE != 0 && r.Table != filter.Table,
			filter != nil && mask&netlink.RT_FILTER_PRIORITY != 0 && r.Priority != filter.Priority,
			filter != nil && mask&netlink.RT_FILTER_MARK != 0 && r.Mark != filter.Mark,
			filter != nil && mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol:
			continue
		}
		out = append(out, copyRule(r))
	}
	return out, nil
}

// RuleAdd implements Netlink: EEXIST for a rule equal to one present.
func (f *FakeNetlink) RuleAdd(rule *netlink.Rule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := normRule(*rule)
	if err := f.call(false, "RuleAdd", RuleText(r)); err != nil {
		return err
	}
	if slices.ContainsFunc(f.rules, func(x netlink.Rule) bool { return RuleText(x) == RuleText(r) }) {
		return unix.EEXIST
	}
	f.rules = append(f.rules, copyRule(r))
	slices.SortStableFunc(f.rules, func(a, b netlink.Rule) int { return cmp.Compare(a.Priority, b.Priority) })
	return nil
}

// RuleDel implements Netlink: the first rule matching every attribute the
// request sets (priority >= 0, table, mark, mask, protocol).
func (f *FakeNetlink) RuleDel(rule *netlink.Rule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(false, "RuleDel", RuleText(*rule)); err != nil {
		return err
	}
	i := slices.IndexFunc(f.rules, func(x netlink.Rule) bool {
		switch {
		case rule.Priority >= 0 && x.Priority != rule.Priority,
			rule.Table > 0 && x.Table != rule.Table,
			rule.Mark != 0 && x.Mark != rule.Mark,
			rule.Mask != nil && (x.Mask == nil || *x.Mask != *rule.Mask),
			rule.Protocol != 0 && x.Protocol != rule.Protocol:
			return false
		}
		return true
	})
	if i < 0 {
		return unix.ENOENT
	}
	f.rules = slices.Delete(f.rules, i, i+1)
	return nil
}

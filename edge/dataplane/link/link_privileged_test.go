package link

// Privileged tests: they need root and run each case in a fresh network
// namespace through netlink.NewHandleAt, so nothing here switches a
// thread's namespace. They skip cleanly without root, and the GRE test
// skips when the kernel has no GRE (the build hosts); the VM lab runs the
// compiled test binary (`go test -c`) on a kernel that has it.

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func kernelHandle(t *testing.T) *kernel.NetlinkHandle {
	t.Helper()
	ns := netnstest.New(t)
	h, err := kernel.NewNetlinkHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// counting wraps a Handle and records its write calls, so the tests can
// assert "no netlink write" against the real kernel.
type counting struct {
	kernel.Netlink
	mu     sync.Mutex
	writes []string
}

func (c *counting) note(s string) { c.mu.Lock(); c.writes = append(c.writes, s); c.mu.Unlock() }
func (c *counting) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}
func (c *counting) LinkAdd(l netlink.Link) error {
	c.note("LinkAdd " + l.Attrs().Name)
	return c.Netlink.LinkAdd(l)
}
func (c *counting) LinkDel(l netlink.Link) error {
	c.note("LinkDel " + l.Attrs().Name)
	return c.Netlink.LinkDel(l)
}
func (c *counting) LinkSetUp(l netlink.Link) error {
	c.note("LinkSetUp " + l.Attrs().Name)
	return c.Netlink.LinkSetUp(l)
}
func (c *counting) LinkSetDown(l netlink.Link) error {
	c.note("LinkSetDown " + l.Attrs().Name)
	return c.Netlink.LinkSetDown(l)
}
func (c *counting) LinkSetName(l netlink.Link, n string) error {
	c.note("LinkSetName " + l.Attrs().Name + " " + n)
	return c.Netlink.LinkSetName(l, n)
}
func (c *counting) LinkAddAltName(l netlink.Link, n string) error {
	c.note("LinkAddAltName " + l.Attrs().Name + " " + n)
	return c.Netlink.LinkAddAltName(l, n)
}
func (c *counting) LinkSetMTU(l netlink.Link, m int) error {
	c.note("LinkSetMTU " + l.Attrs().Name)
	return c.Netlink.LinkSetMTU(l, m)
}
func (c *counting) LinkSetAlias(l netlink.Link, a string) error {
	c.note("LinkSetAlias " + l.Attrs().Name)
	return c.Netlink.LinkSetAlias(l, a)
}
func (c *counting) LinkSetGRO(l netlink.Link, on bool) error {
	c.note("LinkSetGRO " + l.Attrs().Name)
	return c.Netlink.LinkSetGRO(l, on)
}
func (c *counting) LinkSetIP6AddrGenMode(l netlink.Link, m int) error {
	c.note("LinkSetIP6AddrGenMode " + l.Attrs().Name)
	return c.Netlink.LinkSetIP6AddrGenMode(l, m)
}
func (c *counting) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	c.note("AddrAdd " + a.IPNet.String())
	return c.Netlink.AddrAdd(l, a)
}
func (c *counting) AddrDel(l netlink.Link, a *netlink.Addr) error {
	c.note("AddrDel " + a.IPNet.String())
	return c.Netlink.AddrDel(l, a)
}
func (c *counting) RouteReplace(r *netlink.Route) error {
	c.note("RouteReplace " + r.Dst.String())
	return c.Netlink.RouteReplace(r)
}
func (c *counting) RouteDel(r *netlink.Route) error {
	c.note("RouteDel " + r.Dst.String())
	return c.Netlink.RouteDel(r)
}

// bridgeForGRE stands in for GRE on kernels without it: LinkAdd of a
// *netlink.Gretun creates a bridge with the same name, MTU and alias, and
// LinkList reports those bridges back (by ifindex, so across a rename) as
// *netlink.Gretun carrying the remembered endpoints. Everything else
// (alias, altnames, names, addrgenmode, MTU, up, addresses, routes,
// statistics, deletion) is the real kernel.
type bridgeForGRE struct {
	kernel.Netlink
	mu  sync.Mutex
	gre map[int]netlink.Gretun
}

func (b *bridgeForGRE) LinkAdd(l netlink.Link) error {
	g, ok := l.(*netlink.Gretun)
	if !ok {
		return b.Netlink.LinkAdd(l)
	}
	br := &netlink.Bridge{LinkAttrs: g.LinkAttrs}
	if err := b.Netlink.LinkAdd(br); err != nil {
		return err
	}
	g.Index = br.Index
	b.mu.Lock()
	b.gre[g.Index] = *g
	b.mu.Unlock()
	return nil
}

func (b *bridgeForGRE) LinkList() ([]netlink.Link, error) {
	ls, err := b.Netlink.LinkList()
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, l := range ls {
		if g, ok := b.gre[l.Attrs().Index]; ok && l.Type() == "bridge" {
			g.LinkAttrs = *l.Attrs()
			ls[i] = &g
		}
	}
	return ls, err
}

// kernelState prints what the kernel holds for our links and routes.
func kernelState(t *testing.T, h *kernel.NetlinkHandle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		if !strings.HasPrefix(a.Name, "mw-") {
			continue
		}
		s := "link " + a.Name + " " + l.Type() + " alias " + a.Alias
		if a.Flags&net.FlagUp != 0 {
			s += " up"
		}
		s += " mtu " + strconv.Itoa(a.MTU)
		if gro, err := h.LinkGRO(l); err != nil {
			t.Fatal(err)
		} else if !gro {
			s += " gro off"
		}
		lines = append(lines, s)
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range addrs {
			lines = append(lines, "addr "+a.Name+" "+ad.IPNet.String())
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: netlink.RouteProtocol(kernel.ProtoStatic)}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		lines = append(lines, "route "+r.Dst.String()+" via "+r.Gw.String()+" dev "+names[r.LinkIndex]+" metric "+strconv.Itoa(r.Priority))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestPrivilegedApplyOnKernel runs Apply against the host kernel with
// bridges standing in for GRE links, and proves on the real kernel:
// creation with alias and MTU, addrgenmode none (no IPv6 link-local
// appears, while a control link without it gets one), /30 address, routes
// with protocol 240, zero writes on a repeated Apply, MTU fixed in place,
// a stale link and its routes removed, a foreign route left alone and
// reported, Status counters, and Cleanup.
func TestPrivilegedApplyOnKernel(t *testing.T) {
	ctx := context.Background()
	raw := kernelHandle(t)
	c := &counting{Netlink: &bridgeForGRE{Netlink: raw, gre: map[int]netlink.Gretun{}}}
	m := NewManager(c, Options{})

	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	want := `addr mw-b-inet-inet 10.255.0.1/30
addr mw-c-inet-inet 10.255.0.5/30
link mw-b-inet-inet bridge alias meshwan:t1 up mtu 1400
link mw-c-inet-inet bridge alias meshwan:t2 up mtu 1400
route 10.1.1.0/24 via 10.255.0.2 dev mw-b-inet-inet metric 0
route 10.1.2.0/24 via 10.255.0.2 dev mw-b-inet-inet metric 0
route 10.3.0.0/16 via 10.255.0.6 dev mw-c-inet-inet metric 0`
	if got := kernelState(t, raw); got != want {
		t.Errorf("kernel state:\n%s\nwant:\n%s", got, want)
	}
	if len(c.take()) == 0 {
		t.Fatal("first apply made no writes")
	}

	// Control: a link brought up without addrgenmode none gets an IPv6
	// link-local on this kernel, so the absence above is our doing.
	ctl := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	ctl.Name = "ctl0"
	if err := raw.LinkAdd(ctl); err != nil {
		t.Fatal(err)
	}
	if err := raw.LinkSetUp(ctl); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if ad, _ := raw.AddrList(ctl, netlink.FAMILY_V6); len(ad) == 0 {
		t.Log("control link got no IPv6 link-local: IPv6 may be disabled here; addrgenmode check is vacuous")
	}
	if got := kernelState(t, raw); got != want {
		t.Errorf("after waiting, kernel state changed (link-local?):\n%s", got)
	}

	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); len(w) != 0 {
		t.Errorf("second Apply wrote to the kernel: %q", w)
	}

	// MTU change: one write.
	d := twoTunnels()
	d.Tunnels[0].MTU = 1380
	if err := applyAll(ctx, m, d); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); !slices.Equal(w, []string{"LinkSetMTU mw-b-inet-inet"}) {
		t.Errorf("MTU change writes %q", w)
	}

	// Status reads kernel counters.
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || !st[0].Present || !st[0].Up || st[0].MTU != 1380 || st[0].TunnelID != "t1" {
		t.Errorf("status %+v", st)
	}

	// A foreign static route on t2's (prefix, metric) is not overwritten.
	d = twoTunnels()
	d.Tunnels = d.Tunnels[:1]
	if err := applyAll(ctx, m, d); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); !slices.Equal(w, []string{"LinkSetMTU mw-b-inet-inet", "LinkDel mw-c-inet-inet"}) {
		t.Errorf("removal writes %q", w)
	}
	lo, err := raw.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	foreign := &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: ipnet("10.3.0.0/16"), Protocol: unix.RTPROT_STATIC}
	if err := raw.RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}
	err = applyAll(ctx, m, twoTunnels())
	if err == nil || !strings.Contains(err.Error(), "not touching") {
		t.Errorf("want a conflict error, got %v", err)
	}
	rs, err := raw.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipnet("10.3.0.0/16")}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 || rs[0].Protocol != unix.RTPROT_STATIC {
		t.Errorf("foreign route disturbed: %+v %v", rs, err)
	}

	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kernelState(t, raw); got != "" {
		t.Errorf("after cleanup:\n%s", got)
	}
	if rs, _ := raw.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipnet("10.3.0.0/16")}, netlink.RT_FILTER_DST); len(rs) != 1 {
		t.Errorf("cleanup removed the foreign route: %+v", rs)
	}
}

// TestPrivilegedApplyGRE needs kernel GRE: it skips on the build hosts and
// runs in the VM lab. It proves what the stand-in cannot: the GRE link is
// created with our endpoints, TTL 64 and PMTU discovery, those values read
// back from the kernel match (so a repeated Apply makes no write), and a
// changed underlay re-creates the link.
func TestPrivilegedApplyGRE(t *testing.T) {
	ctx := context.Background()
	raw := kernelHandle(t)
	probe := newGRE(tunnel("probe", "mw-probe", "198.51.100.1", "10.255.0.1/30", "10.255.0.2"))
	if err := raw.LinkAdd(probe); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || strings.Contains(err.Error(), "not supported") {
			t.Skipf("kernel has no GRE (%v): run in the VM lab", err)
		}
		t.Fatal(err)
	}
	if err := raw.LinkDel(probe); err != nil {
		t.Fatal(err)
	}

	c := &counting{Netlink: raw}
	m := NewManager(c, Options{})
	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	c.take()
	l, err := raw.LinkByName("mw-b-inet-inet")
	if err != nil {
		t.Fatal(err)
	}
	g, ok := l.(*netlink.Gretun)
	if !ok {
		t.Fatalf("link is %T", l)
	}
	if g.Local.String() != "192.0.2.1" || g.Remote.String() != "198.51.100.1" || g.Ttl != 64 || g.PMtuDisc != 1 || g.MTU != 1400 || g.Alias != "meshwan:t1" {
		t.Errorf("gre link %+v", g)
	}
	if ad, _ := raw.AddrList(l, netlink.FAMILY_V6); len(ad) != 0 {
		t.Errorf("GRE link has IPv6 addresses despite addrgenmode none: %v", ad)
	}
	if gro, err := raw.LinkGRO(l); err != nil || !gro {
		t.Errorf("GRE link GRO on=%v (%v), want on (the default)", gro, err)
	}
	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); len(w) != 0 {
		t.Errorf("second Apply wrote: %q", w)
	}
	d := twoTunnels()
	d.Tunnels[0].RemoteUnderlay = addr("198.51.100.50")
	if err := applyAll(ctx, m, d); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); len(w) == 0 || w[0] != "LinkDel mw-b-inet-inet" {
		t.Errorf("underlay change writes %q, want a re-create", w)
	}

	// Upgrade from the site-based names: the GRE links are renamed in
	// place (on kernels before 6.2: down, rename, up), same ifindex.
	must(t, applyAll(ctx, m, upgraded(true)))
	c.take()
	old, err := raw.LinkByName("mw-b-inet-inet")
	must(t, err)
	must(t, applyAll(ctx, m, upgraded(false)))
	w := c.take()
	if slices.ContainsFunc(w, func(s string) bool { return strings.HasPrefix(s, "LinkDel") || strings.HasPrefix(s, "LinkAdd ") }) {
		t.Errorf("upgrade re-created GRE links: %q", w)
	}
	t.Logf("upgrade writes: %q", w)
	if l, err := raw.LinkByName("mw-02bfc000"); err != nil || l.Attrs().Index != old.Attrs().Index || l.Type() != "gre" {
		t.Errorf("renamed GRE link: %v %v", l, err)
	}
	must(t, applyAll(ctx, m, upgraded(false)))
	if w := c.take(); len(w) != 0 {
		t.Errorf("Apply after the rename wrote: %q", w)
	}

	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if s := kernelState(t, raw); s != "" {
		t.Errorf("after cleanup:\n%s", s)
	}

	// The rename's cost on a GRE link (see TestPrivilegedRenameGap).
	gap := newGRE(tunnel("gap", "mw-gap0", "198.51.100.1", "10.255.0.1/30", "10.255.0.2"))
	must(t, raw.LinkAdd(gap))
	must(t, raw.LinkSetIP6AddrGenMode(gap, 1))
	must(t, raw.LinkSetUp(gap))
	measureRenameGap(t, raw, gap, 100)
	must(t, raw.LinkDel(gap))
}

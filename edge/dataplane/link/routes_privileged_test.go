package link

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestPrivilegedApplyRoutes proves ApplyRoutes on the kernel: static and
// BGP routes, ECMP included, installed with gateways only (the kernel
// finds the links); Routes reads them back equal; a repeated apply
// writes nothing; a switch of one prefix's gateways is ONE RouteReplace
// (its duration is logged: the route switch budget is 20 ms); a
// foreign route on a wanted key is reported (ErrRouteConflict) and left
// alone while the rest applies; Cleanup removes ours of both protocols
// and nothing else. Bridges with /30s stand in for the tunnel links.
func TestPrivilegedApplyRoutes(t *testing.T) {
	ctx := context.Background()
	raw := kernelHandle(t)
	for i, name := range []string{"mw-r1", "mw-r2"} {
		a := netlink.NewLinkAttrs()
		a.Name = name
		br := &netlink.Bridge{LinkAttrs: a}
		must(t, raw.LinkAdd(br))
		must(t, raw.AddrAdd(br, &netlink.Addr{IPNet: ipnet(fmt.Sprintf("10.255.0.%d/30", 4*i+1))}))
		must(t, raw.LinkSetUp(br))
	}
	lo, err := raw.LinkByName("lo")
	must(t, err)
	must(t, raw.LinkSetUp(lo))
	c := &counting{Netlink: raw}
	m := NewManager(c, Options{})
	a2, a6 := addr("10.255.0.2"), addr("10.255.0.6")
	rs := []kernel.Route{
		{Dst: pfx("10.1.0.0/16"), Via: []netip.Addr{a2, a6}, Metric: 20, Protocol: kernel.ProtoBGP},
		{Dst: pfx("10.2.0.0/16"), Via: []netip.Addr{a2}, Metric: 0, Protocol: kernel.ProtoStatic},
		{Dst: pfx("10.2.0.0/16"), Via: []netip.Addr{a6}, Metric: 1, Protocol: kernel.ProtoStatic},
	}
	must(t, m.ApplyRoutes(ctx, rs))
	if w := c.take(); len(w) != 3 {
		t.Errorf("first apply writes %q, want 3 replaces", w)
	}
	got, err := m.Routes(ctx)
	must(t, err)
	if !slices.EqualFunc(got, rs, sameRoute) {
		t.Errorf("Routes = %v, want %v", got, rs)
	}
	must(t, m.ApplyRoutes(ctx, rs))
	if w := c.take(); len(w) != 0 {
		t.Errorf("repeated apply wrote %q", w)
	}

	// One tunnel's verdict: 10.1.0.0/16 leaves 10.255.0.2.
	rs[0].Via = []netip.Addr{a6}
	start := time.Now()
	must(t, m.ApplyRoutes(ctx, rs))
	took := time.Since(start)
	if w := c.take(); !slices.Equal(w, []string{"RouteReplace 10.1.0.0/16"}) {
		t.Errorf("switch writes %q, want one replace", w)
	}
	t.Logf("route switch (one dump, one replace): %v", took)
	got, err = m.Routes(ctx)
	must(t, err)
	if !slices.EqualFunc(got, rs, sameRoute) {
		t.Errorf("after the switch Routes = %v, want %v", got, rs)
	}

	// A foreign route holds 10.3.0.0/16 metric 0.
	must(t, raw.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: ipnet("10.3.0.0/16"), Protocol: unix.RTPROT_STATIC}))
	rs = append(rs, kernel.Route{Dst: pfx("10.3.0.0/16"), Via: []netip.Addr{a2}, Protocol: kernel.ProtoStatic},
		kernel.Route{Dst: pfx("10.4.0.0/16"), Via: []netip.Addr{a2}, Protocol: kernel.ProtoStatic})
	err = m.ApplyRoutes(ctx, rs)
	if !errors.Is(err, ErrRouteConflict) {
		t.Errorf("ApplyRoutes with a foreign route on a wanted key = %v, want ErrRouteConflict", err)
	}
	if w := c.take(); !slices.Equal(w, []string{"RouteReplace 10.4.0.0/16"}) {
		t.Errorf("conflict writes %q, want only the other route", w)
	}
	foreign, err := raw.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipnet("10.3.0.0/16")}, netlink.RT_FILTER_DST)
	if err != nil || len(foreign) != 1 || foreign[0].Protocol != unix.RTPROT_STATIC {
		t.Errorf("foreign route disturbed: %+v %v", foreign, err)
	}

	must(t, m.Cleanup(ctx))
	if got, err := m.Routes(ctx); err != nil || len(got) != 0 {
		t.Errorf("after Cleanup Routes = %v (%v)", got, err)
	}
	if foreign, _ := raw.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipnet("10.3.0.0/16")}, netlink.RT_FILTER_DST); len(foreign) != 1 {
		t.Errorf("Cleanup removed the foreign route: %+v", foreign)
	}
}

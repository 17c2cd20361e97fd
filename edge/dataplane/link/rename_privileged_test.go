package link

// Privileged tests of the in-place rename an upgraded edge makes (see the
// package comment and rename), and the measurement of its cost. Same
// rules as link_privileged_test.go: root, a fresh namespace per test,
// bridges standing in for GRE on the build hosts; the GRE variant is in
// TestPrivilegedApplyGRE and runs in the VM lab.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// noLiveRename refuses to rename an up link (EBUSY) like kernels before
// 6.2, so a newer host exercises the down/rename/up fallback that the
// lab's Debian 6.1 takes.
type noLiveRename struct {
	kernel.Netlink
	raw *kernel.NetlinkHandle
}

func (n noLiveRename) LinkSetName(l netlink.Link, name string) error {
	if k, err := n.raw.LinkByIndex(l.Attrs().Index); err == nil && k.Attrs().Flags&net.FlagUp != 0 {
		return unix.EBUSY
	}
	return n.Netlink.LinkSetName(l, name)
}

// altNamesWork reports whether the kernel takes altnames (Linux 5.5+).
func altNamesWork(t *testing.T, raw *kernel.NetlinkHandle) bool {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	br.Name = "altprobe0"
	if err := raw.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	defer raw.LinkDel(br)
	return raw.LinkAddAltName(br, "altprobe-long-name-0") == nil
}

// TestPrivilegedRenameOnUpgrade: links named by the site-based scheme are
// renamed in place to their /30 names on the real kernel, live and
// through the down/rename/up fallback: same ifindex, no delete or
// create, Retiring reports nothing, the address and every route (ours
// and another daemon's in another table) are there afterwards, the old
// name resolves as an altname, and a second Apply writes nothing.
func TestPrivilegedRenameOnUpgrade(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(fmt.Sprintf("live=%v", live), func(t *testing.T) {
			ctx := context.Background()
			raw := kernelHandle(t)
			var h kernel.Netlink = &bridgeForGRE{Netlink: raw, gre: map[int]netlink.Gretun{}}
			if !live {
				h = noLiveRename{Netlink: h, raw: raw}
			}
			c := &counting{Netlink: h}
			m := NewManager(c, Options{})
			must(t, applyAll(ctx, m, upgraded(true)))
			alt := altNamesWork(t, raw)
			lo, err := raw.LinkByName("lo")
			must(t, err)
			must(t, raw.LinkSetUp(lo))
			before := map[string]int{}
			for _, n := range []string{"mw-b-inet-inet", "mw-c-inet-inet"} {
				l, err := raw.LinkByName(n)
				must(t, err)
				before[n] = l.Attrs().Index
			}
			foreign := &netlink.Route{Dst: ipnet("10.9.0.0/16"), Gw: net.ParseIP("10.255.0.6"), LinkIndex: before["mw-c-inet-inet"], Protocol: 186, Table: 100}
			must(t, raw.RouteAdd(foreign))
			c.take()

			d := upgraded(false)
			ret, present, err := m.Retiring(d)
			must(t, err)
			if len(ret) != 0 || len(present) != 2 {
				t.Errorf("Retiring before the rename: retiring %+v present %v", ret, present)
			}
			must(t, applyAll(ctx, m, d))
			w := c.take()
			if slices.ContainsFunc(w, func(s string) bool { return strings.HasPrefix(s, "LinkDel") || strings.HasPrefix(s, "LinkAdd ") }) {
				t.Errorf("upgrade deleted or created links: %q", w)
			}
			if down := slices.ContainsFunc(w, func(s string) bool { return strings.HasPrefix(s, "LinkSetDown") }); down == live {
				t.Logf("writes: %q", w)
				if !live {
					t.Error("refused live rename, yet no down/up")
				} else {
					t.Log("this kernel refuses live renames (before 6.2?): the fallback ran")
				}
			}
			want := `addr mw-02bfc000 10.255.0.1/30
addr mw-02bfc001 10.255.0.5/30
link mw-02bfc000 bridge alias meshwan:t1 up mtu 1400
link mw-02bfc001 bridge alias meshwan:t2 up mtu 1400
route 10.1.1.0/24 via 10.255.0.2 dev mw-02bfc000 metric 0
route 10.1.2.0/24 via 10.255.0.2 dev mw-02bfc000 metric 0
route 10.3.0.0/16 via 10.255.0.6 dev mw-02bfc001 metric 0`
			if got := kernelState(t, raw); got != want {
				t.Errorf("kernel state:\n%s\nwant:\n%s", got, want)
			}
			rs, err := raw.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 100}, netlink.RT_FILTER_TABLE)
			must(t, err)
			if len(rs) != 1 || rs[0].Protocol != 186 || rs[0].LinkIndex != before["mw-c-inet-inet"] {
				t.Errorf("the other daemon's route over the renamed link: %+v", rs)
			}
			for old, idx := range before {
				l, err := raw.LinkByIndex(idx)
				must(t, err)
				if !strings.HasPrefix(l.Attrs().Name, "mw-02bfc00") {
					t.Errorf("ifindex %d is %q now, want the /30 name", idx, l.Attrs().Name)
				}
				if !alt {
					t.Log("kernel without altnames: the alias alone names the tunnel")
					continue
				}
				if !slices.Contains(l.Attrs().AltNames, old) {
					t.Errorf("%s: altnames %q, want %q", l.Attrs().Name, l.Attrs().AltNames, old)
				}
				if byOld, err := raw.LinkByName(old); err != nil || byOld.Attrs().Index != idx {
					t.Errorf("old name %s does not resolve to ifindex %d: %v", old, idx, err)
				}
			}
			must(t, applyAll(ctx, m, d))
			if w := c.take(); len(w) != 0 {
				t.Errorf("second Apply wrote: %q", w)
			}
			must(t, m.Cleanup(ctx))
		})
	}
}

// TestPrivilegedRenameGap measures, on the host kernel with a bridge, the
// gap the down/rename/up fallback costs one link (kernels before 6.2):
// the netlink round trips from the down until the up returns (no packet
// crosses the link), and until its 4 routes are back; and, for
// comparison, a live rename where the kernel allows it. The GRE numbers
// come from the same measurement in TestPrivilegedApplyGRE, in the VM.
//
//	go test -run TestPrivilegedRenameGap -v ./edge/dataplane/link/
func TestPrivilegedRenameGap(t *testing.T) {
	raw := kernelHandle(t)
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	br.Name = "mw-gap0"
	must(t, raw.LinkAdd(br))
	must(t, raw.LinkSetIP6AddrGenMode(br, 1))
	must(t, raw.LinkSetUp(br))
	must(t, raw.AddrAdd(br, &netlink.Addr{IPNet: ipnet("10.255.0.0/30")}))
	measureRenameGap(t, raw, br, 300)
}

// measureRenameGap renames l back and forth n times, by down/rename/up
// and live, and logs the percentiles. l must be up with an address in
// 10.255.0.0/30; it is left up under a name of the form "mw-gap<n>".
func measureRenameGap(t *testing.T, raw *kernel.NetlinkHandle, l netlink.Link, n int) {
	t.Helper()
	idx := l.Attrs().Index
	if a, err := raw.AddrList(l, netlink.FAMILY_V4); err != nil || len(a) == 0 {
		must(t, raw.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 255, 0, 1), Mask: net.CIDRMask(30, 32)}}))
	}
	routes := []*netlink.Route{
		{Dst: ipnet("10.1.1.0/24"), Gw: net.ParseIP("10.255.0.2"), LinkIndex: idx, Protocol: kernel.ProtoStatic},
		{Dst: ipnet("10.1.2.0/24"), Gw: net.ParseIP("10.255.0.2"), LinkIndex: idx, Protocol: kernel.ProtoStatic},
		{Dst: ipnet("10.1.3.0/24"), Gw: net.ParseIP("10.255.0.2"), LinkIndex: idx, Protocol: kernel.ProtoStatic},
		{Dst: ipnet("10.9.0.0/16"), Gw: net.ParseIP("10.255.0.2"), LinkIndex: idx, Protocol: 186, Table: 100},
	}
	for _, r := range routes {
		must(t, raw.RouteReplace(r))
	}
	names := [2]string{"mw-gap0", "mw-gap1"}
	var linkGap, routeGap, live []time.Duration
	for i := range n {
		next := names[(i+1)%2]
		t0 := time.Now()
		must(t, raw.LinkSetDown(l))
		must(t, raw.LinkSetName(l, next))
		must(t, raw.LinkSetUp(l))
		t1 := time.Now()
		for _, r := range routes {
			must(t, raw.RouteReplace(r))
		}
		t2 := time.Now()
		linkGap = append(linkGap, t1.Sub(t0))
		routeGap = append(routeGap, t2.Sub(t0))
	}
	for i := range n {
		t0 := time.Now()
		if err := raw.LinkSetName(l, names[i%2]); err != nil {
			t.Logf("live rename refused (%v): this kernel needs the down/rename/up fallback", err)
			live = nil
			break
		}
		live = append(live, time.Since(t0))
	}
	got, err := raw.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	must(t, err)
	if n := len(slices.DeleteFunc(got, func(r netlink.Route) bool { return r.Protocol == unix.RTPROT_KERNEL })); n != len(routes) {
		t.Errorf("%d routes over the link after the renames, want %d", n, len(routes))
	}
	t.Logf("%s link, %d renames: down..up (no traffic) %s; down..4 routes back %s", l.Type(), n, pct(linkGap), pct(routeGap))
	if live != nil {
		t.Logf("%s link, live rename (Linux 6.2+, no gap): %s", l.Type(), pct(live))
	}
}

func pct(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))].Round(time.Microsecond) }
	return fmt.Sprintf("p50 %v p90 %v p99 %v max %v", at(0.5), at(0.9), at(0.99), s[len(s)-1].Round(time.Microsecond))
}

package link

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// upgraded is twoTunnels with their peers' sites and transports, named by
// the site-based scheme of earlier releases (old) or by their /30 (new):
// t1 "mw-b-inet-inet" -> mw-02bfc000, t2 "mw-c-inet-inet" -> mw-02bfc001.
func upgraded(old bool) dataplane.Desired {
	d := twoTunnels()
	for i, site := range []string{"b", "c"} {
		t := &d.Tunnels[i]
		t.RemoteSite, t.LocalTransport, t.RemoteTransport = site, "inet", "inet"
		if !old {
			t.LinkName = dataplane.LinkName(t.LocalInner)
		}
	}
	return d
}

const upgradedState = `addr mw-02bfc000 10.255.0.1/30
addr mw-02bfc001 10.255.0.5/30
link mw-02bfc000 gre local 192.0.2.1 remote 198.51.100.1 ttl 64 pmtudisc 1 mtu 1400 alias meshwan:t1 altname mw-b-inet-inet up addrgenmode none
link mw-02bfc001 gre local 192.0.2.1 remote 198.51.100.9 ttl 64 pmtudisc 1 mtu 1400 alias meshwan:t2 altname mw-c-inet-inet up addrgenmode none
route 10.1.1.0/24 via 10.255.0.2 dev mw-02bfc000 proto 240 metric 0 table 254
route 10.1.2.0/24 via 10.255.0.2 dev mw-02bfc000 proto 240 metric 0 table 254
route 10.3.0.0/16 via 10.255.0.6 dev mw-02bfc001 proto 240 metric 0 table 254
route 10.9.0.0/16 via 10.255.0.6 dev mw-02bfc001 proto 186 metric 0 table 100`

// TestApplyRenamesOnUpgrade: an edge upgraded from the site-based names
// renames its links in place (found by alias): no LinkDel, no LinkAdd,
// the same ifindex, Retiring reports nothing (the agent keeps their
// IPsec up) and counts them as present; a second Apply writes nothing.
// On a kernel that refuses live renames (the default fake, like Debian
// 6.1) the sequence is down, rename, up, and the routes the down flushed
// (ours, and another daemon's in another table) are put back at once.
func TestApplyRenamesOnUpgrade(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("live=%v", live), func(t *testing.T) {
			ctx := context.Background()
			f := kernel.NewFakeNetlink()
			f.SetLiveRename(live)
			m := NewManager(f, Options{})
			must(t, applyAll(ctx, m, upgraded(true)))
			// A BGP-style route over t2's link in another table.
			f.InjectRoute(netlink.Route{Dst: ipnet("10.9.0.0/16"), Gw: ipnet("10.255.0.6/32").IP, LinkIndex: 2, Protocol: 186, Table: 100})
			if s := f.String(); strings.Contains(s, "altname") {
				t.Fatalf("old-named links got an altname equal to their name:\n%s", s)
			}
			f.ResetCalls()

			d := upgraded(false)
			ret, present, err := m.Retiring(d)
			must(t, err)
			if len(ret) != 0 || !present["mw-02bfc000"] || !present["mw-02bfc001"] {
				t.Errorf("Retiring reports a rename as a deletion: retiring %+v present %v", ret, present)
			}
			checkNoWrites(t, f)

			must(t, applyAll(ctx, m, d))
			var want []string
			for _, l := range []struct{ old, new, route, gw string }{
				{"mw-b-inet-inet", "mw-02bfc000", "", ""},
				{"mw-c-inet-inet", "mw-02bfc001", "10.9.0.0/16", "10.255.0.6"},
			} {
				rename := "LinkSetName " + l.old + " " + l.new
				if live {
					want = append(want, rename)
					continue
				}
				want = append(want, rename, // EBUSY: up
					"LinkSetIP6AddrGenMode "+l.old+" 1",
					"LinkSetDown "+l.old,
					rename,
					"LinkSetUp "+l.new)
				if l.new == "mw-02bfc000" {
					want = append(want,
						"RouteReplace 10.1.1.0/24 via 10.255.0.2 dev mw-02bfc000 proto 240 metric 0 table 254",
						"RouteReplace 10.1.2.0/24 via 10.255.0.2 dev mw-02bfc000 proto 240 metric 0 table 254")
				} else {
					want = append(want, // in dump order: table 100 first
						"RouteReplace "+l.route+" via "+l.gw+" dev mw-02bfc001 proto 186 metric 0 table 100",
						"RouteReplace 10.3.0.0/16 via 10.255.0.6 dev mw-02bfc001 proto 240 metric 0 table 254")
				}
			}
			want = append(want, "LinkAddAltName mw-02bfc000 mw-b-inet-inet", "LinkAddAltName mw-02bfc001 mw-c-inet-inet")
			if got := f.Writes(); !slices.Equal(got, want) {
				t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			checkState(t, f, upgradedState)

			f.ResetCalls()
			must(t, applyAll(ctx, m, d))
			checkNoWrites(t, f)
			if ret, _, _ := m.Retiring(d); len(ret) != 0 {
				t.Errorf("retiring after the upgrade: %+v", ret)
			}
		})
	}
}

// TestApplyRenameEdgeCases: an old-named link whose GRE parameters no
// longer fit is re-created under the new name (Retiring says so, and the
// old link goes before the new one is made: the kernel refuses two GRE
// links with the same endpoints); an old-named link whose alias names no
// desired tunnel is deleted; a failing rename leaves the link as it was
// and the next Apply finishes the job.
func TestApplyRenameEdgeCases(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	must(t, applyAll(ctx, m, upgraded(true)))
	f.ResetCalls()

	d := upgraded(false)
	d.Tunnels[1].RemoteUnderlay = addr("198.51.100.77")
	d.Tunnels[0].ID = "t9" // t1's old link: nobody's any more
	ret, present, err := m.Retiring(d)
	must(t, err)
	var got []string
	for _, r := range ret {
		got = append(got, fmt.Sprintf("%s %s recreated=%v", r.Link, r.TunnelID, r.Recreated))
	}
	if want := []string{"mw-b-inet-inet t1 recreated=false", "mw-c-inet-inet t2 recreated=true"}; !slices.Equal(got, want) || len(present) != 0 {
		t.Errorf("retiring %q present %v, want %q and none present", got, present, want)
	}
	must(t, applyAll(ctx, m, d))
	w := f.Writes()
	if i, j := slices.Index(w, "LinkDel mw-c-inet-inet"), slices.Index(w, "LinkAdd mw-02bfc001 gre"); i < 0 || j < 0 || i > j {
		t.Errorf("re-create order wrong: %q", w)
	}
	if !slices.Contains(w, "LinkDel mw-b-inet-inet") || slices.ContainsFunc(w, func(s string) bool { return strings.HasPrefix(s, "LinkSetName") }) {
		t.Errorf("writes %q: want the orphan deleted and no rename", w)
	}
	f.ResetCalls()
	must(t, applyAll(ctx, m, d))
	checkNoWrites(t, f)

	// A rename that fails is reported and retried; the link stays.
	f2 := kernel.NewFakeNetlink()
	m2 := NewManager(f2, Options{})
	must(t, applyAll(ctx, m2, upgraded(true)))
	f2.Fail("LinkSetName", "mw-b", unix.EPERM)
	if err := applyAll(ctx, m2, upgraded(false)); err == nil || !strings.Contains(err.Error(), "rename from mw-b-inet-inet") {
		t.Fatalf("want the rename failure, got %v", err)
	}
	if s := f2.String(); !strings.Contains(s, "link mw-b-inet-inet gre") || !strings.Contains(s, "route 10.1.1.0/24 via 10.255.0.2 dev mw-b-inet-inet") {
		t.Errorf("failed rename disturbed the link:\n%s", s)
	}
	f2.Fail("LinkSetName", "mw-b", nil)
	must(t, applyAll(ctx, m2, upgraded(false)))
	checkState(t, f2, strings.Join(slices.DeleteFunc(strings.Split(upgradedState, "\n"), func(l string) bool { return strings.Contains(l, "proto 186") }), "\n"))
}

// TestAltNames: a kernel without altnames (or any refusal) never fails
// Apply and is not asked again; an altname two tunnels would share goes
// to the first (names and altnames share one namespace).
func TestAltNames(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	f.Fail("LinkAddAltName", "", unix.EOPNOTSUPP)
	must(t, applyAll(ctx, m, upgraded(false)))
	if s := f.String(); strings.Contains(s, "altname") || !strings.Contains(s, "alias meshwan:t1") {
		t.Errorf("state:\n%s", s)
	}
	f.ResetCalls()
	must(t, applyAll(ctx, m, upgraded(false)))
	checkNoWrites(t, f)

	f2 := kernel.NewFakeNetlink()
	m2 := NewManager(f2, Options{})
	d := upgraded(false)
	// Remote site "b-inet" over inet/inet and site "b" over inet-inet/inet:
	// both read "mw-b-inet-inet-inet".
	d.Tunnels[0].RemoteSite = "b-inet"
	d.Tunnels[1].RemoteSite, d.Tunnels[1].LocalTransport = "b", "inet-inet"
	must(t, applyAll(ctx, m2, d))
	if s := f2.String(); strings.Count(s, "altname mw-b-inet-inet-inet") != 1 || !strings.Contains(s, "link mw-02bfc000 gre local 192.0.2.1 remote 198.51.100.1 ttl 64 pmtudisc 1 mtu 1400 alias meshwan:t1 altname mw-b-inet-inet-inet") {
		t.Errorf("contested altname:\n%s", s)
	}
	f2.ResetCalls()
	must(t, applyAll(ctx, m2, d))
	checkNoWrites(t, f2)
}

// TestFakeNames pins the fake's model of the kernel's name rules.
func TestFakeNames(t *testing.T) {
	f := kernel.NewFakeNetlink()
	a := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "mw-a"}, LinkType: "dummy"}
	b := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "mw-b"}, LinkType: "dummy"}
	must(t, f.LinkAdd(a))
	must(t, f.LinkAdd(b))
	must(t, f.LinkAddAltName(a, "mw-alt"))
	for _, tc := range []struct {
		name string
		err  error
		call func() error
	}{
		{"altname taken by a name", unix.EEXIST, func() error { return f.LinkAddAltName(a, "mw-b") }},
		{"name taken by an altname", unix.EEXIST, func() error { return f.LinkSetName(b, "mw-alt") }},
		{"link add over an altname", unix.EEXIST, func() error {
			return f.LinkAdd(&netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "mw-alt"}, LinkType: "dummy"})
		}},
		{"name too long", unix.EINVAL, func() error { return f.LinkSetName(b, "mw-0123456789abc") }},
		{"rename while up", unix.EBUSY, func() error { must(t, f.LinkSetUp(b)); return f.LinkSetName(b, "mw-c") }},
	} {
		if err := tc.call(); err != tc.err {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.err)
		}
	}
	f.SetLiveRename(true)
	must(t, f.LinkSetName(b, "mw-c"))
	must(t, f.LinkSetDown(b))
	if s := f.String(); s != "addr mw-c fe80::2/64\nlink mw-a dummy mtu 1500 altname mw-alt\nlink mw-c dummy mtu 1500" {
		t.Errorf("state:\n%s", s)
	}
}

// TestRenameTargetHeldAsAltName: when another link holds the new name as
// an altname, the rename fails before any down (no gap paid for nothing).
func TestRenameTargetHeldAsAltName(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	must(t, applyAll(ctx, m, upgraded(true)))
	other := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "eth9"}, LinkType: "dummy"}
	must(t, f.LinkAdd(other))
	must(t, f.LinkAddAltName(other, "mw-02bfc000"))
	f.ResetCalls()
	err := applyAll(ctx, m, upgraded(false))
	if err == nil || !strings.Contains(err.Error(), "holds mw-02bfc000 as an altname") {
		t.Fatalf("got %v", err)
	}
	for _, w := range f.Writes() {
		if strings.Contains(w, "mw-b-inet-inet") && !strings.HasPrefix(w, "LinkAddAltName") {
			t.Errorf("touched the blocked link: %s", w)
		}
	}
}

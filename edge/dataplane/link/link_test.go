package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/plan"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func tunnel(id, name, remote, inner, peerInner string, lans ...string) dataplane.Tunnel {
	t := dataplane.Tunnel{
		ID:             id,
		LinkName:       name,
		LocalUnderlay:  addr("192.0.2.1"),
		RemoteUnderlay: addr(remote),
		LocalInner:     pfx(inner),
		RemoteInner:    addr(peerInner),
		PSK:            []byte("0123456789abcdef0123456789abcdef"),
	}
	for _, l := range lans {
		t.RemoteLANs = append(t.RemoteLANs, pfx(l))
	}
	return t
}

func desired(ts ...dataplane.Tunnel) dataplane.Desired {
	return dataplane.Desired{Site: "a", LANPrefixes: []netip.Prefix{pfx("10.2.1.0/24")}, Tunnels: ts}
}

func twoTunnels() dataplane.Desired {
	return desired(
		tunnel("t1", "mw-b-inet-inet", "198.51.100.1", "10.255.0.1/30", "10.255.0.2", "10.1.1.0/24", "10.1.2.0/24"),
		tunnel("t2", "mw-c-inet-inet", "198.51.100.9", "10.255.0.5/30", "10.255.0.6", "10.3.0.0/16"),
	)
}

const twoTunnelsState = `addr mw-b-inet-inet 10.255.0.1/30
addr mw-c-inet-inet 10.255.0.5/30
link mw-b-inet-inet gre local 192.0.2.1 remote 198.51.100.1 ttl 64 pmtudisc 1 mtu 1400 alias meshwan:t1 up addrgenmode none
link mw-c-inet-inet gre local 192.0.2.1 remote 198.51.100.9 ttl 64 pmtudisc 1 mtu 1400 alias meshwan:t2 up addrgenmode none
route 10.1.1.0/24 via 10.255.0.2 dev mw-b-inet-inet proto 240 metric 0 table 254
route 10.1.2.0/24 via 10.255.0.2 dev mw-b-inet-inet proto 240 metric 0 table 254
route 10.3.0.0/16 via 10.255.0.6 dev mw-c-inet-inet proto 240 metric 0 table 254`

func checkState(t *testing.T, f *kernel.FakeNetlink, want string) {
	t.Helper()
	if got := f.String(); got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
}

func checkNoWrites(t *testing.T, f *kernel.FakeNetlink) {
	t.Helper()
	if w := f.Writes(); len(w) != 0 {
		t.Errorf("writes on an idempotent apply: %q", w)
	}
}

func TestApplyCreatesAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	checkState(t, f, twoTunnelsState)

	// Per link: create (alias and MTU ride in the create message), set
	// GRO off and addrgenmode none BEFORE up, then the address; routes
	// last.
	want := []string{
		"LinkAdd mw-b-inet-inet gre",
		"LinkSetAlias mw-b-inet-inet meshwan:t1",
		"LinkSetIP6AddrGenMode mw-b-inet-inet 1",
		"LinkSetUp mw-b-inet-inet",
		"AddrAdd mw-b-inet-inet 10.255.0.1/30",
		"LinkAdd mw-c-inet-inet gre",
		"LinkSetAlias mw-c-inet-inet meshwan:t2",
		"LinkSetIP6AddrGenMode mw-c-inet-inet 1",
		"LinkSetUp mw-c-inet-inet",
		"AddrAdd mw-c-inet-inet 10.255.0.5/30",
		"RouteReplace 10.1.1.0/24 via 10.255.0.2 proto 240 metric 0 table 254",
		"RouteReplace 10.1.2.0/24 via 10.255.0.2 proto 240 metric 0 table 254",
		"RouteReplace 10.3.0.0/16 via 10.255.0.6 proto 240 metric 0 table 254",
	}
	if got := f.Writes(); !slices.Equal(got, want) {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	f.ResetCalls()
	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	checkNoWrites(t, f)
	checkState(t, f, twoTunnelsState)
}

func TestApplyChanges(t *testing.T) {
	tests := []struct {
		name       string
		change     func(d *dataplane.Desired)
		wantWrites []string
		wantState  string // "" = unchanged
		// wantRetiring: "link id local>remote recreated=bool" per link
		// Retiring reports before the Apply.
		wantRetiring []string
	}{
		{
			name:       "mtu fixed in place",
			change:     func(d *dataplane.Desired) { d.Tunnels[0].MTU = 1380 },
			wantWrites: []string{"LinkSetMTU mw-b-inet-inet 1380"},
			wantState:  strings.Replace(twoTunnelsState, "pmtudisc 1 mtu 1400 alias meshwan:t1", "pmtudisc 1 mtu 1380 alias meshwan:t1", 1),
		},
		{
			name:   "new tunnel id on the same link name: alias fixed in place",
			change: func(d *dataplane.Desired) { d.Tunnels[0].ID = "t9" },
			wantWrites: []string{
				"LinkSetAlias mw-b-inet-inet meshwan:t9",
			},
			wantState: strings.Replace(twoTunnelsState, "alias meshwan:t1", "alias meshwan:t9", 1),
		},
		{
			name:   "remote underlay changed: re-create, routes back",
			change: func(d *dataplane.Desired) { d.Tunnels[1].RemoteUnderlay = addr("198.51.100.77") },
			wantWrites: []string{
				"LinkDel mw-c-inet-inet",
				"LinkAdd mw-c-inet-inet gre",
				"LinkSetAlias mw-c-inet-inet meshwan:t2",
				"LinkSetIP6AddrGenMode mw-c-inet-inet 1",
				"LinkSetUp mw-c-inet-inet",
				"AddrAdd mw-c-inet-inet 10.255.0.5/30",
				"RouteReplace 10.3.0.0/16 via 10.255.0.6 proto 240 metric 0 table 254",
			},
			wantState:    strings.Replace(twoTunnelsState, "remote 198.51.100.9", "remote 198.51.100.77", 1),
			wantRetiring: []string{"mw-c-inet-inet t2 192.0.2.1>198.51.100.9 recreated=true"},
		},
		{
			name: "inner address changed: address swapped, routes re-pointed",
			change: func(d *dataplane.Desired) {
				d.Tunnels[1].LocalInner = pfx("10.255.0.9/30")
				d.Tunnels[1].RemoteInner = addr("10.255.0.10")
			},
			wantWrites: []string{
				"AddrDel mw-c-inet-inet 10.255.0.5/30",
				"AddrAdd mw-c-inet-inet 10.255.0.9/30",
				"RouteReplace 10.3.0.0/16 via 10.255.0.10 proto 240 metric 0 table 254",
			},
			wantState: strings.NewReplacer("10.255.0.5/30", "10.255.0.9/30", "via 10.255.0.6", "via 10.255.0.10").Replace(twoTunnelsState),
		},
		{
			name: "remote LAN removed and added",
			change: func(d *dataplane.Desired) {
				d.Tunnels[0].RemoteLANs = []netip.Prefix{pfx("10.1.1.0/24"), pfx("10.1.9.0/24")}
			},
			wantWrites: []string{
				"RouteReplace 10.1.9.0/24 via 10.255.0.2 proto 240 metric 0 table 254",
				"RouteDel 10.1.2.0/24 via 10.255.0.2 proto 240 metric 0 table 254",
			},
			wantState: strings.Replace(twoTunnelsState, "route 10.1.2.0/24", "route 10.1.9.0/24", 1),
		},
		{
			name:   "tunnel removed: link deleted, its routes go with it",
			change: func(d *dataplane.Desired) { d.Tunnels = d.Tunnels[:1] },
			wantWrites: []string{
				"LinkDel mw-c-inet-inet",
			},
			wantRetiring: []string{"mw-c-inet-inet t2 192.0.2.1>198.51.100.9 recreated=false"},
			wantState: `addr mw-b-inet-inet 10.255.0.1/30
link mw-b-inet-inet gre local 192.0.2.1 remote 198.51.100.1 ttl 64 pmtudisc 1 mtu 1400 alias meshwan:t1 up addrgenmode none
route 10.1.1.0/24 via 10.255.0.2 dev mw-b-inet-inet proto 240 metric 0 table 254
route 10.1.2.0/24 via 10.255.0.2 dev mw-b-inet-inet proto 240 metric 0 table 254`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := kernel.NewFakeNetlink()
			m := NewManager(f, Options{})
			if err := applyAll(ctx, m, twoTunnels()); err != nil {
				t.Fatal(err)
			}
			f.ResetCalls()
			d := twoTunnels()
			tc.change(&d)
			// Retiring predicts exactly the links Apply deletes, and
			// writes nothing itself.
			ret, present, err := m.Retiring(d)
			if err != nil {
				t.Fatal(err)
			}
			checkNoWrites(t, f)
			var gotRet, wantDel []string
			for _, r := range ret {
				gotRet = append(gotRet, fmt.Sprintf("%s %s %v>%v recreated=%v", r.Link, r.TunnelID, r.Local, r.Remote, r.Recreated))
			}
			if !slices.Equal(gotRet, tc.wantRetiring) {
				t.Errorf("retiring:\n%s\nwant:\n%s", strings.Join(gotRet, "\n"), strings.Join(tc.wantRetiring, "\n"))
			}
			// Every tunnel here had its link: present is all but the
			// re-created ones.
			for _, tn := range d.Tunnels {
				recreated := slices.ContainsFunc(ret, func(r Retiring) bool { return r.Link == tn.LinkName })
				if present[tn.LinkName] == recreated {
					t.Errorf("present[%s] = %v, re-created %v", tn.LinkName, present[tn.LinkName], recreated)
				}
			}
			if err := applyAll(ctx, m, d); err != nil {
				t.Fatal(err)
			}
			for _, w := range f.Writes() {
				if strings.HasPrefix(w, "LinkDel ") {
					wantDel = append(wantDel, strings.TrimPrefix(w, "LinkDel "))
				}
			}
			var retLinks []string
			for _, r := range ret {
				retLinks = append(retLinks, r.Link)
			}
			if !slices.Equal(retLinks, wantDel) {
				t.Errorf("Retiring said %q, Apply deleted %q", retLinks, wantDel)
			}
			if got := f.Writes(); !slices.Equal(got, tc.wantWrites) {
				t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantWrites, "\n"))
			}
			checkState(t, f, tc.wantState)
			f.ResetCalls()
			if err := applyAll(ctx, m, d); err != nil {
				t.Fatal(err)
			}
			checkNoWrites(t, f)
		})
	}
}

// TestApplyLeavesOthersAlone: a hand-made "mw-" link without our alias, a
// non-meshwan link and a foreign route survive Apply and Cleanup; a foreign
// route on a desired (prefix, metric) is reported, not overwritten.
func TestApplyLeavesOthersAlone(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	for _, l := range []netlink.Link{
		&netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, LinkType: "veth"},
		&netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "mw-hand"}, LinkType: "dummy"},
	} {
		if err := f.LinkAdd(l); err != nil {
			t.Fatal(err)
		}
	}
	f.InjectRoute(netlink.Route{Dst: ipnet("10.9.0.0/16"), LinkIndex: 1, Protocol: unix.RTPROT_STATIC})
	f.InjectRoute(netlink.Route{Dst: ipnet("10.3.0.0/16"), LinkIndex: 1, Protocol: 186}) // BGP, same key as t2's route
	f.ResetCalls()

	m := NewManager(f, Options{})
	err := applyAll(ctx, m, twoTunnels())
	if err == nil || !strings.Contains(err.Error(), "10.3.0.0/16") || !strings.Contains(err.Error(), "not touching") {
		t.Fatalf("want a route conflict error for 10.3.0.0/16, got %v", err)
	}
	state := f.String()
	for _, want := range []string{
		"link eth0 veth mtu 1500",
		"link mw-hand dummy mtu 1500",
		"route 10.9.0.0/16 dev eth0 proto 4 metric 0 table 254",
		"route 10.3.0.0/16 dev eth0 proto 186 metric 0 table 254",
		"route 10.1.1.0/24 via 10.255.0.2 dev mw-b-inet-inet proto 240",
	} {
		if !strings.Contains(state, want) {
			t.Errorf("state lacks %q:\n%s", want, state)
		}
	}
	if strings.Contains(state, "route 10.3.0.0/16 via 10.255.0.6") {
		t.Errorf("foreign route overwritten:\n%s", state)
	}

	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	want := `link eth0 veth mtu 1500
link mw-hand dummy mtu 1500
route 10.3.0.0/16 dev eth0 proto 186 metric 0 table 254
route 10.9.0.0/16 dev eth0 proto 4 metric 0 table 254`
	checkState(t, f, want)
}

// TestApplyRepairsDrift: state changed behind our back is put right.
func TestApplyRepairsDrift(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	d := desired(tunnel("t1", "mw-b-inet-inet", "198.51.100.1", "10.255.0.1/30", "10.255.0.2", "10.1.1.0/24"))
	if err := applyAll(ctx, m, d); err != nil {
		t.Fatal(err)
	}
	want := f.String()

	// Someone sets addrgenmode back to eui64 and GRO off, and bounces
	// nothing: a link-local appears (the fake adds one on up), plus a
	// stray address and a stray route of ours.
	l := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "mw-b-inet-inet"}}
	must(t, f.LinkSetIP6AddrGenMode(l, 0))
	must(t, f.LinkSetGRO(l, false))
	must(t, f.LinkSetUp(l))
	must(t, f.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("172.16.0.1").To4(), Mask: net.CIDRMask(24, 32)}}))
	must(t, f.RouteReplace(&netlink.Route{Dst: ipnet("10.7.0.0/16"), Gw: net.ParseIP("10.255.0.2"), LinkIndex: 1, Protocol: kernel.ProtoStatic, Table: 254}))
	f.ResetCalls()

	if err := applyAll(ctx, m, d); err != nil {
		t.Fatal(err)
	}
	checkState(t, f, want)
	wantWrites := []string{
		"LinkSetGRO mw-b-inet-inet on",
		"LinkSetIP6AddrGenMode mw-b-inet-inet 1",
		"AddrDel mw-b-inet-inet fe80::1/64",
		"AddrDel mw-b-inet-inet 172.16.0.1/24",
		"RouteDel 10.7.0.0/16 via 10.255.0.2 proto 240 metric 0 table 254",
	}
	if got := f.Writes(); !slices.Equal(got, wantWrites) {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantWrites, "\n"))
	}
}

func TestApplyFailuresAreIsolatedAndRetried(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	boom := errors.New("boom")
	f.Fail("LinkAdd", "mw-b", boom)
	err := applyAll(ctx, m, twoTunnels())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "tunnel t1 link mw-b-inet-inet: add") {
		t.Fatalf("want the LinkAdd failure naming tunnel t1, got %v", err)
	}
	// t2 is complete despite t1 failing.
	if s := f.String(); !strings.Contains(s, "route 10.3.0.0/16 via 10.255.0.6 dev mw-c-inet-inet") {
		t.Errorf("t2 not applied:\n%s", s)
	}
	f.Fail("LinkAdd", "mw-b", nil)
	f.ResetCalls()
	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	checkState(t, f, twoTunnelsState)
	for _, w := range f.Writes() {
		if strings.Contains(w, "mw-c") || strings.Contains(w, "10.3.0.0") {
			t.Errorf("retry touched the healthy tunnel: %s", w)
		}
	}

	// A failing route install is reported and retried next time.
	f2 := kernel.NewFakeNetlink()
	m2 := NewManager(f2, Options{})
	f2.Fail("RouteReplace", "10.1.2.0/24", boom)
	if err := applyAll(ctx, m2, twoTunnels()); !errors.Is(err, boom) {
		t.Fatalf("want route failure, got %v", err)
	}
	f2.Fail("RouteReplace", "10.1.2.0/24", nil)
	f2.ResetCalls()
	if err := applyAll(ctx, m2, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	if got, want := f2.Writes(), []string{"RouteReplace 10.1.2.0/24 via 10.255.0.2 proto 240 metric 0 table 254"}; !slices.Equal(got, want) {
		t.Errorf("retry writes %q, want %q", got, want)
	}
}

func TestApplyInvalidChangesNothing(t *testing.T) {
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	d := twoTunnels()
	d.Tunnels[1].LocalInner = pfx("10.255.0.5/24")
	err := m.Apply(context.Background(), d)
	if !errors.Is(err, dataplane.ErrInvalid) || !strings.Contains(err.Error(), "Tunnels[1](id=t2).LocalInner") {
		t.Fatalf("got %v", err)
	}
	if c := f.Calls(); len(c) != 0 {
		t.Errorf("calls on invalid state: %q", c)
	}
}

func TestDumpInterruptedIsRetried(t *testing.T) {
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	f.Fail("LinkList", "", netlink.ErrDumpInterrupted)
	err := m.Apply(context.Background(), twoTunnels())
	if !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("got %v", err)
	}
	if n := len(f.Calls()); n != 5 {
		t.Errorf("%d LinkList calls, want 5 tries (kernel.RetryDump)", n)
	}
	if len(f.Writes()) != 0 {
		t.Errorf("wrote after a failed dump: %q", f.Writes())
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	must(t, applyAll(ctx, m, twoTunnels()))
	f.SetStats("mw-b-inet-inet", netlink.LinkStatistics{RxBytes: 100, TxBytes: 200, RxPackets: 1, TxPackets: 2, RxErrors: 3})
	must(t, f.LinkDel(&netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: "mw-c-inet-inet"}}))
	f.ResetCalls()
	st, err := m.Status(ctx)
	must(t, err)
	want := []Status{
		{TunnelID: "t1", Link: "mw-b-inet-inet", Present: true, Up: true, LowerUp: true, OperState: "unknown", MTU: 1400,
			RxBytes: 100, TxBytes: 200, RxPackets: 1, TxPackets: 2, RxErrors: 3},
		{TunnelID: "t2", Link: "mw-c-inet-inet"},
	}
	if !slices.Equal(st, want) {
		t.Errorf("status:\n%+v\nwant:\n%+v", st, want)
	}
	checkNoWrites(t, f)
}

// applyAll does what the edge's owner does for d in static-route mode
// with no path verdicts: the links, then the routes plan.StaticRoutes
// plans over the tunnels whose links exist (all of them after a clean
// Apply; after a failed one, those Retiring reports present), as one
// ApplyRoutes.
func applyAll(ctx context.Context, m *Manager, d dataplane.Desired) error {
	err := m.Apply(ctx, d)
	ready := d.Tunnels
	if err != nil {
		_, present, rerr := m.Retiring(d)
		if rerr != nil {
			return errors.Join(err, rerr)
		}
		ready = slices.DeleteFunc(slices.Clone(d.Tunnels), func(t dataplane.Tunnel) bool { return !present[t.LinkName] })
	}
	return errors.Join(err, m.ApplyRoutes(ctx, plan.StaticRoutes(ready, plan.PathView{})))
}

func ipnet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestApplyRoutesNeverTouchesLinks: ApplyRoutes installs and removes only
// routes. A route over a tunnel without a link (new) fails alone (the
// kernel has no link for its gateway) and creates no link; a link whose
// routes all go survives; the next Apply does the link work, then the
// route goes in.
func TestApplyRoutesNeverTouchesLinks(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	m := NewManager(f, Options{})
	if err := applyAll(ctx, m, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	f.ResetCalls()
	static := func(dst, gw string) kernel.Route {
		return kernel.Route{Dst: pfx(dst), Via: []netip.Addr{addr(gw)}, Protocol: kernel.ProtoStatic}
	}
	// t1 gains 10.1.3.0/24, t2's route goes, t3 (no link yet) asks for 10.4.0.0/16.
	rs := []kernel.Route{static("10.1.1.0/24", "10.255.0.2"), static("10.1.2.0/24", "10.255.0.2"),
		static("10.1.3.0/24", "10.255.0.2"), static("10.4.0.0/16", "10.255.0.10")}
	if err := m.ApplyRoutes(ctx, rs); !errors.Is(err, unix.ENETUNREACH) || !strings.Contains(err.Error(), "10.4.0.0/16") {
		t.Errorf("route over a missing link: %v, want ENETUNREACH for 10.4.0.0/16 alone", err)
	}
	for _, w := range f.Writes() {
		if !strings.HasPrefix(w, "Route") {
			t.Errorf("ApplyRoutes wrote %q", w)
		}
	}
	st := f.String()
	if !strings.Contains(st, "route 10.1.3.0/24 via 10.255.0.2") || strings.Contains(st, "route 10.3.0.0/16") {
		t.Errorf("routes not applied past the failing one:\n%s", st)
	}
	if !strings.Contains(st, "link mw-c-inet-inet") {
		t.Error("ApplyRoutes deleted a link whose routes went")
	}
	if strings.Contains(st, "link mw-d-inet-inet") {
		t.Error("ApplyRoutes created a link")
	}

	d := twoTunnels()
	d.Tunnels = append(d.Tunnels, tunnel("t3", "mw-d-inet-inet", "198.51.100.17", "10.255.0.9/30", "10.255.0.10", "10.4.0.0/16"))
	must(t, m.Apply(ctx, d))
	must(t, m.ApplyRoutes(ctx, rs))
	if !strings.Contains(f.String(), "route 10.4.0.0/16 via 10.255.0.10 dev mw-d-inet-inet") {
		t.Errorf("route over the new link missing after Apply:\n%s", f.String())
	}
}

// TestGROOption: Options.NoGRO turns GRO off before up; the default
// leaves GRO on (a new link has it) and turns it back on where it was off.
func TestGROOption(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNetlink()
	must(t, NewManager(f, Options{NoGRO: true}).Apply(ctx, twoTunnels()))
	if n := strings.Count(f.String(), "gro off"); n != 2 {
		t.Fatalf("NoGRO: %d links with GRO off, want 2:\n%s", n, f.String())
	}
	f.ResetCalls()
	must(t, NewManager(f, Options{}).Apply(ctx, twoTunnels()))
	if w := f.Writes(); !slices.Equal(w, []string{"LinkSetGRO mw-b-inet-inet on", "LinkSetGRO mw-c-inet-inet on"}) {
		t.Errorf("GRO on: writes %q", w)
	}
	if strings.Contains(f.String(), "gro off") {
		t.Errorf("GRO on: state\n%s", f.String())
	}

	f2 := kernel.NewFakeNetlink()
	must(t, NewManager(f2, Options{}).Apply(ctx, twoTunnels()))
	if slices.ContainsFunc(f2.Writes(), func(w string) bool { return strings.HasPrefix(w, "LinkSetGRO") }) {
		t.Errorf("GRO on for new links: writes %q, want no GRO write", f2.Writes())
	}
}

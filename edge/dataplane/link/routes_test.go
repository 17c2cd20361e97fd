package link

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeKernel is a FakeNetlink with two tunnel-like links up: mw-r1
// (10.255.0.1/30, far end 10.255.0.2) and mw-r2 (10.255.0.5/30, far end
// 10.255.0.6), and a LAN link eth0 (192.0.2.1/24).
func routeKernel(t *testing.T) *kernel.FakeNetlink {
	t.Helper()
	f := kernel.NewFakeNetlink()
	for _, l := range []struct{ name, addr string }{{"mw-r1", "10.255.0.1/30"}, {"mw-r2", "10.255.0.5/30"}, {"eth0", "192.0.2.1/24"}} {
		link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: l.name}}
		ip, n, _ := net.ParseCIDR(l.addr)
		n.IP = ip.To4()
		must(t, errors.Join(f.LinkAdd(link), f.AddrAdd(link, &netlink.Addr{IPNet: n}), f.LinkSetIP6AddrGenMode(link, 1), f.LinkSetUp(link)))
	}
	f.ResetCalls()
	return f
}

func kr(dst string, metric, proto int, via ...string) kernel.Route {
	r := kernel.Route{Dst: pfx(dst), Metric: metric, Protocol: proto}
	for _, v := range via {
		r.Via = append(r.Via, addr(v))
	}
	return r
}

// routeLines is the fake's route lines.
func routeLines(f *kernel.FakeNetlink) string {
	var out []string
	for _, l := range strings.Split(f.String(), "\n") {
		if strings.HasPrefix(l, "route ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

const (
	st  = kernel.ProtoStatic
	bgp = kernel.ProtoBGP
)

func TestPlanRoutesTable(t *testing.T) {
	tests := []struct {
		name        string
		want, table []kernel.Route
		plan        string // Dedup / Replace / Delete / Conflicts, one per line
	}{
		{name: "empty"},
		{name: "install", want: []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.2")},
			plan: "replace 10.1.0.0/16 via 10.255.0.2 metric 0 proto 240"},
		{name: "equal: nothing", want: []kernel.Route{kr("10.1.0.0/16", 20, bgp, "10.255.0.2", "10.255.0.6")},
			table: []kernel.Route{kr("10.1.0.0/16", 20, bgp, "10.255.0.2", "10.255.0.6")}},
		{name: "gateway switch: one replace, no delete", want: []kernel.Route{kr("10.1.0.0/16", 20, bgp, "10.255.0.6")},
			table: []kernel.Route{kr("10.1.0.0/16", 20, bgp, "10.255.0.2", "10.255.0.6")},
			plan:  "replace 10.1.0.0/16 via 10.255.0.6 metric 20 proto 241"},
		{name: "protocol change in place", want: []kernel.Route{kr("10.1.0.0/16", 0, bgp, "10.255.0.2")},
			table: []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.2")},
			plan:  "replace 10.1.0.0/16 via 10.255.0.2 metric 0 proto 241"},
		{name: "metric change: replace the new key, delete the old", want: []kernel.Route{kr("10.1.0.0/16", 1, st, "10.255.0.2")},
			table: []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.2")},
			plan:  "replace 10.1.0.0/16 via 10.255.0.2 metric 1 proto 240\ndelete 10.1.0.0/16 via 10.255.0.2 metric 0 proto 240"},
		{name: "foreign on the key: conflict, ours there deleted, foreign elsewhere ignored",
			want: []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.2"), kr("10.2.0.0/16", 0, st, "10.255.0.2")},
			table: []kernel.Route{kr("10.1.0.0/16", 0, 4), kr("10.1.0.0/16", 0, st, "10.255.0.6"),
				kr("10.2.0.0/16", 5, 186, "10.255.0.2")},
			plan: "replace 10.2.0.0/16 via 10.255.0.2 metric 0 proto 240\ndelete 10.1.0.0/16 via 10.255.0.6 metric 0 proto 240\nconflict 10.1.0.0/16 via 10.255.0.2 metric 0 proto 240"},
		{name: "duplicates of ours: extra copies first, gateway-less last", want: []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.2")},
			table: []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.6"), kr("10.1.0.0/16", 0, st), kr("10.1.0.0/16", 0, bgp, "10.255.0.2")},
			plan:  "dedup 10.1.0.0/16 via 10.255.0.2 metric 0 proto 241\ndedup 10.1.0.0/16 via  metric 0 proto 240\nreplace 10.1.0.0/16 via 10.255.0.2 metric 0 proto 240"},
		{name: "unwanted ours deleted, gateway-less last within a key",
			table: []kernel.Route{kr("10.1.0.0/16", 0, st), kr("10.1.0.0/16", 0, bgp, "10.255.0.6"), kr("10.0.0.0/8", 3, bgp, "10.255.0.2")},
			plan:  "delete 10.0.0.0/8 via 10.255.0.2 metric 3 proto 241\ndelete 10.1.0.0/16 via 10.255.0.6 metric 0 proto 241\ndelete 10.1.0.0/16 via  metric 0 proto 240"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planRoutes(tc.want, tc.table, isOurs)
			if got := planText(p); got != tc.plan {
				t.Errorf("plan:\n%s\nwant:\n%s", got, tc.plan)
			}
		})
	}
}

func planText(p routePlan) string {
	var lines []string
	for _, x := range []struct {
		verb string
		rs   []kernel.Route
	}{{"dedup", p.Dedup}, {"replace", p.Replace}, {"delete", p.Delete}, {"conflict", p.Conflicts}} {
		for _, r := range x.rs {
			lines = append(lines, x.verb+" "+r.String())
		}
	}
	return strings.Join(lines, "\n")
}

// TestApplyRoutesAgainstReference: on random tables (ours of both
// protocols with duplicates, foreign routes) and random wanted routes,
// ApplyRoutes leaves exactly what an obvious reference says (foreign
// untouched; per wanted key without a foreign route exactly the wanted
// route; no other route of ours), with exactly the writes the reference
// counts, and a second apply writes nothing.
func TestApplyRoutesAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 13))
	dsts := []string{"10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/24", "0.0.0.0/0"}
	gws := []string{"10.255.0.2", "10.255.0.6"}
	protos := []int{st, bgp, st, bgp, 4, 186}
	randVia := func() []string {
		switch rng.IntN(3) {
		case 0:
			return []string{gws[0]}
		case 1:
			return []string{gws[1]}
		}
		return gws
	}
	for iter := range 400 {
		f := routeKernel(t)
		var table []kernel.Route
		for range rng.IntN(7) {
			r := kr(dsts[rng.IntN(len(dsts))], rng.IntN(3), protos[rng.IntN(len(protos))], randVia()...)
			table = append(table, r)
			f.InjectRoute(*r.NetlinkRoute(kernel.MainTable))
		}
		var want []kernel.Route
		seen := map[string]bool{}
		for range rng.IntN(5) {
			r := kr(dsts[rng.IntN(len(dsts))], rng.IntN(3), []int{st, bgp}[rng.IntN(2)], randVia()...)
			if k := fmt.Sprint(r.Dst, r.Metric); !seen[k] {
				seen[k] = true
				want = append(want, r)
			}
		}

		// The reference: the final table, and the writes it takes.
		key := func(r kernel.Route) string { return fmt.Sprint(r.Dst, " ", r.Metric) }
		foreign := map[string]bool{}
		oursAt := map[string][]kernel.Route{}
		var final []string
		for _, r := range table {
			if isOurs(r.Protocol) {
				oursAt[key(r)] = append(oursAt[key(r)], r)
			} else {
				foreign[key(r)] = true
				final = append(final, r.String())
			}
		}
		writes, conflicts := 0, 0
		wanted := map[string]bool{}
		for _, w := range want {
			if foreign[key(w)] {
				conflicts++
				continue
			}
			wanted[key(w)] = true
			final = append(final, w.String())
			have := oursAt[key(w)]
			if len(have) == 1 && sameRoute(have[0], w) {
				continue
			}
			writes += max(len(have)-1, 0) + 1
		}
		for k, rs := range oursAt {
			if !wanted[k] {
				writes += len(rs)
			}
		}
		slices.Sort(final)

		m := NewManager(f, Options{})
		err := m.ApplyRoutes(context.Background(), want)
		if (conflicts > 0) != errors.Is(err, ErrRouteConflict) || (conflicts == 0 && err != nil) {
			t.Fatalf("iteration %d: err %v with %d conflicts\ntable %v\nwant %v", iter, err, conflicts, table, want)
		}
		var got []string
		all, _ := f.RouteListFiltered(netlink.FAMILY_V4, nil, 0)
		for _, r := range all {
			k, _ := kernel.RouteFromNetlink(r)
			got = append(got, k.String())
		}
		slices.Sort(got)
		if !slices.Equal(got, final) {
			t.Fatalf("iteration %d: table\n%s\nwant\n%s\n(start %v, want %v)", iter, strings.Join(got, "\n"), strings.Join(final, "\n"), table, want)
		}
		if n := len(f.Writes()); n != writes {
			t.Fatalf("iteration %d: %d writes %q, reference %d (start %v, want %v)", iter, n, f.Writes(), writes, table, want)
		}
		f.ResetCalls()
		_ = m.ApplyRoutes(context.Background(), want)
		if w := f.Writes(); len(w) != 0 {
			t.Fatalf("iteration %d: second apply wrote %q", iter, w)
		}
	}
}

// TestApplyRoutes: ECMP and static routes over the kernel fake, the
// verdict switch as one write, Routes reading them back, and Cleanup
// removing ours of both protocols only.
func TestApplyRoutes(t *testing.T) {
	ctx := context.Background()
	f := routeKernel(t)
	f.InjectRoute(netlink.Route{Dst: ipnet("0.0.0.0/0"), Gw: net.ParseIP("192.0.2.254").To4(), LinkIndex: 3, Protocol: unix.RTPROT_BOOT})
	m := NewManager(f, Options{})
	rs := []kernel.Route{
		kr("10.1.0.0/16", 20, bgp, "10.255.0.6", "10.255.0.2"), // unsorted: ApplyRoutes sorts
		kr("10.2.0.0/16", 0, st, "10.255.0.2"),
		kr("10.2.0.0/16", 1, st, "10.255.0.6"),
	}
	must(t, m.ApplyRoutes(ctx, rs))
	want := `route 0.0.0.0/0 via 192.0.2.254 dev eth0 proto 3 metric 0 table 254
route 10.1.0.0/16 nexthop via 10.255.0.2 dev mw-r1 nexthop via 10.255.0.6 dev mw-r2 proto 241 metric 20 table 254
route 10.2.0.0/16 via 10.255.0.2 dev mw-r1 proto 240 metric 0 table 254
route 10.2.0.0/16 via 10.255.0.6 dev mw-r2 proto 240 metric 1 table 254`
	if got := routeLines(f); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	got, err := m.Routes(ctx)
	must(t, err)
	if s := fmt.Sprint(got); s != "[10.1.0.0/16 via 10.255.0.2,10.255.0.6 metric 20 proto 241 10.2.0.0/16 via 10.255.0.2 metric 0 proto 240 10.2.0.0/16 via 10.255.0.6 metric 1 proto 240]" {
		t.Errorf("Routes = %s", s)
	}

	// A verdict takes 10.255.0.2 out: 10.1.0.0/16 is one replace, the
	// static pair becomes one route (the owner's planner decides that).
	f.ResetCalls()
	must(t, m.ApplyRoutes(ctx, []kernel.Route{kr("10.1.0.0/16", 20, bgp, "10.255.0.6"), kr("10.2.0.0/16", 0, st, "10.255.0.6")}))
	wantW := []string{
		"RouteReplace 10.1.0.0/16 via 10.255.0.6 proto 241 metric 20 table 254",
		"RouteReplace 10.2.0.0/16 via 10.255.0.6 proto 240 metric 0 table 254",
		"RouteDel 10.2.0.0/16 via 10.255.0.6 proto 240 metric 1 table 254",
	}
	if w := f.Writes(); !slices.Equal(w, wantW) {
		t.Errorf("switch writes:\n%s\nwant:\n%s", strings.Join(w, "\n"), strings.Join(wantW, "\n"))
	}
	if n := len(f.Calls()) - len(f.Writes()); n != 1 {
		t.Errorf("switch read the table %d times, want once: %q", n, f.Calls())
	}

	must(t, m.Cleanup(ctx))
	if got := routeLines(f); got != "route 0.0.0.0/0 via 192.0.2.254 dev eth0 proto 3 metric 0 table 254" {
		t.Errorf("after Cleanup:\n%s", got)
	}
}

// TestApplyRoutesErrors: an unreachable gateway fails that route only
// and is retried by the next apply; invalid routes are refused while the
// rest applies; a conflict is returned every time but logged once.
func TestApplyRoutesErrors(t *testing.T) {
	ctx := context.Background()
	f := routeKernel(t)
	var logBuf bytes.Buffer
	m := NewManager(f, Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})

	f.Fail("RouteReplace", "10.1.0.0/16", unix.ENETUNREACH)
	err := m.ApplyRoutes(ctx, []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.2"), kr("10.2.0.0/16", 0, st, "10.255.0.2")})
	if !errors.Is(err, unix.ENETUNREACH) {
		t.Fatalf("ApplyRoutes = %v", err)
	}
	f.Fail("RouteReplace", "10.1.0.0/16", nil)
	f.ResetCalls()
	must(t, m.ApplyRoutes(ctx, []kernel.Route{kr("10.1.0.0/16", 0, st, "10.255.0.2"), kr("10.2.0.0/16", 0, st, "10.255.0.2")}))
	if w := f.Writes(); !slices.Equal(w, []string{"RouteReplace 10.1.0.0/16 via 10.255.0.2 proto 240 metric 0 table 254"}) {
		t.Errorf("retry writes %q", w)
	}

	// The kernel's own check: a gateway on no up link.
	if err := m.ApplyRoutes(ctx, []kernel.Route{kr("10.9.0.0/16", 0, st, "10.77.0.1")}); !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("unreachable gateway: %v", err)
	}

	bad := []kernel.Route{
		kr("10.1.0.0/16", 0, st, "10.255.0.2"),
		kr("10.1.0.0/16", 0, bgp, "10.255.0.6"), // second on the key
		kr("10.3.0.0/16", 0, 186, "10.255.0.2"), // not our protocol
		kr("10.4.0.0/16", 0, st),                // no gateway
	}
	f.ResetCalls()
	err = m.ApplyRoutes(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "a second route") || !strings.Contains(err.Error(), "protocol 186") || !strings.Contains(err.Error(), "needs IPv4 gateways") {
		t.Errorf("invalid routes: %v", err)
	}
	if got := routeLines(f); got != "route 10.1.0.0/16 via 10.255.0.2 dev mw-r1 proto 240 metric 0 table 254" {
		t.Errorf("after invalid input:\n%s", got)
	}

	f.InjectRoute(netlink.Route{Dst: ipnet("10.5.0.0/16"), LinkIndex: 3, Protocol: unix.RTPROT_STATIC})
	logBuf.Reset()
	for range 3 {
		if err := m.ApplyRoutes(ctx, []kernel.Route{kr("10.5.0.0/16", 0, st, "10.255.0.2")}); !errors.Is(err, ErrRouteConflict) {
			t.Errorf("conflict: %v", err)
		}
	}
	if n := strings.Count(logBuf.String(), "routes not installed"); n != 1 {
		t.Errorf("conflict logged %d times over 3 applies, want once:\n%s", n, logBuf.String())
	}
	if !strings.Contains(f.String(), "route 10.5.0.0/16 dev eth0 proto 4 metric 0 table 254") {
		t.Errorf("foreign route touched:\n%s", f.String())
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	f.ResetCalls()
	if err := m.ApplyRoutes(cctx, nil); !errors.Is(err, context.Canceled) || len(f.Calls()) != 0 {
		t.Errorf("canceled: %v, calls %q", err, f.Calls())
	}
}

func mustRoutes(t *testing.T, m *Manager) []kernel.Route {
	t.Helper()
	rs, err := m.Routes(context.Background())
	must(t, err)
	return rs
}

package bgp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestChooseRoute(t *testing.T) {
	ext := func(nh string, aspath int) Path {
		return Path{NextHop: ma(nh), LocalPref: 100, ASPathLen: aspath}
	}
	stale := func(c Path) Path { c.Stale = true; return c }
	dst := mp("10.3.0.0/16")
	for _, tc := range []struct {
		name  string
		paths []Path
		want  string // "" = no route
	}{
		{"no paths", nil, ""},
		{"one path", []Path{ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.1"},
		{"ours wins", []Path{{Local: true, LocalPref: 100}, ext("10.255.0.1", 1)}, ""},
		{"two hubs tie: ECMP", []Path{ext("10.255.0.5", 2), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.1,10.255.0.5"},
		{"direct beats via hub", []Path{ext("10.255.0.9", 1), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.9"},
		{"MED breaks the tie", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, MED: 10}}, "10.3.0.0/16 via 10.255.0.1"},
		{"origin breaks the tie", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, Origin: 2}}, "10.3.0.0/16 via 10.255.0.1"},
		{"local pref breaks the tie", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 90, ASPathLen: 2}}, "10.3.0.0/16 via 10.255.0.1"},
		{"ibgp does not tie with ebgp", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, IBGP: true}}, "10.3.0.0/16 via 10.255.0.1"},
		{"same next hop twice", []Path{ext("10.255.0.1", 2), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.1"},
		{"stale dropped when fresh ties", []Path{stale(ext("10.255.0.1", 2)), ext("10.255.0.5", 2)}, "10.3.0.0/16 via 10.255.0.5"},
		{"stale kept when alone", []Path{stale(ext("10.255.0.1", 2))}, "10.3.0.0/16 via 10.255.0.1"},
		{"all stale kept", []Path{stale(ext("10.255.0.1", 2)), stale(ext("10.255.0.5", 2))}, "10.3.0.0/16 via 10.255.0.1,10.255.0.5"},
		{"stale best with longer fresh: stale kept", []Path{stale(ext("10.255.0.9", 1)), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.9"},
		{"invalid next hop skipped", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, NHInvalid: true}}, "10.3.0.0/16 via 10.255.0.1"},
		{"best invalid: none", []Path{{NextHop: ma("10.255.0.5"), LocalPref: 100, NHInvalid: true}}, ""},
		{"no next hop: none", []Path{{LocalPref: 100, ASPathLen: 1}}, ""},
	} {
		r, ok := chooseRoute(dst, tc.paths)
		got := ""
		if ok {
			got = r.String()
		}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRoutesFromRIB feeds API destinations shaped like GoBGP's ListPath
// output (best path first).
func TestRoutesFromRIB(t *testing.T) {
	dests := []*api.Destination{
		{Prefix: "10.3.0.0/16", Paths: []*api.Path{
			apiPath(t, "10.255.0.1", 4200000010, []uint32{4200000010, 4200000003}, "10.255.0.1", false),
			apiPath(t, "10.255.0.5", 4200000011, []uint32{4200000011, 4200000003}, "10.255.0.5", false),
		}},
		{Prefix: "10.2.0.0/16", Paths: []*api.Path{apiPath(t, "<nil>", 0, nil, "0.0.0.0", false)}},
		{Prefix: "10.1.0.0/16", Paths: []*api.Path{
			apiPath(t, "10.255.0.1", 4200000010, []uint32{4200000010}, "10.255.0.1", true),
		}},
		{Prefix: "2001:db8::/32"},
	}
	rs, errs := routesFromRIB(dests, 4200000002, nil)
	var got []string
	for _, r := range rs {
		got = append(got, r.String())
	}
	want := []string{"10.1.0.0/16 via 10.255.0.1", "10.3.0.0/16 via 10.255.0.1,10.255.0.5"}
	if !slices.Equal(got, want) {
		t.Errorf("routes = %q, want %q", got, want)
	}
	if len(errs) != 1 {
		t.Errorf("errors = %v, want one (the IPv6 destination)", errs)
	}
	c, err := candidateFrom(dests[0].Paths[0], 4200000002)
	if err != nil || fmt.Sprint(c.ASPath) != "[4200000010 4200000003]" || c.ASPathLen != 2 || c.FromPeer != ma("10.255.0.1") {
		t.Errorf("candidate = %+v, %v", c, err)
	}
}

// TestRoutesFromRIBExcluded: paths over an excluded next hop (a tunnel the
// probes declared down) are dropped before route choice, so a worse path
// takes over; when every learned path is excluded, all are kept
// (fail-open).
func TestRoutesFromRIBExcluded(t *testing.T) {
	dests := []*api.Destination{
		{Prefix: "10.3.0.0/16", Paths: []*api.Path{
			apiPath(t, "10.255.0.1", 4200000010, []uint32{4200000010}, "10.255.0.1", false),
			apiPath(t, "10.255.0.5", 4200000011, []uint32{4200000011, 4200000012, 4200000003}, "10.255.0.5", false),
		}},
		{Prefix: "10.4.0.0/16", Paths: []*api.Path{
			apiPath(t, "10.255.0.1", 4200000010, []uint32{4200000010}, "10.255.0.1", false),
		}},
	}
	for _, tc := range []struct {
		name     string
		excluded map[netip.Addr]bool
		want     []string
	}{
		{"none", nil, []string{"10.3.0.0/16 via 10.255.0.1", "10.4.0.0/16 via 10.255.0.1"}},
		{"best path's tunnel down: the longer path takes over; the only path stays (fail-open)",
			map[netip.Addr]bool{ma("10.255.0.1"): true}, []string{"10.3.0.0/16 via 10.255.0.5", "10.4.0.0/16 via 10.255.0.1"}},
		{"both down: fail-open keeps BGP's choice", map[netip.Addr]bool{ma("10.255.0.1"): true, ma("10.255.0.5"): true},
			[]string{"10.3.0.0/16 via 10.255.0.1", "10.4.0.0/16 via 10.255.0.1"}},
	} {
		rs, errs := routesFromRIB(dests, 4200000002, tc.excluded)
		var got []string
		for _, r := range rs {
			got = append(got, r.String())
		}
		if !slices.Equal(got, tc.want) || len(errs) != 0 {
			t.Errorf("%s: routes = %q (%v), want %q", tc.name, got, errs, tc.want)
		}
	}
}

func apiPath(t *testing.T, neighbor string, srcAS uint32, aspath []uint32, nh string, stale bool) *api.Path {
	t.Helper()
	var attrs []*anypb.Any
	for _, m := range []proto.Message{
		&api.OriginAttribute{Origin: 0},
		&api.AsPathAttribute{Segments: []*api.AsSegment{{Type: api.AsSegment_AS_SEQUENCE, Numbers: aspath}}},
		&api.NextHopAttribute{NextHop: nh},
	} {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		attrs = append(attrs, a)
	}
	return &api.Path{Pattrs: attrs, NeighborIp: neighbor, SourceAsn: srcAS, Stale: stale, Family: familyIPv4}
}

func TestPlanRoutes(t *testing.T) {
	kr := func(dst string, metric, proto int, via ...string) kernelRoute {
		k := kernelRoute{Dst: mp(dst), Metric: metric, Protocol: proto}
		for _, v := range via {
			k.Via = append(k.Via, ma(v))
		}
		return k
	}
	rt := func(dst string, via ...string) Route {
		r := Route{Dst: mp(dst)}
		for _, v := range via {
			r.Via = append(r.Via, ma(v))
		}
		return r
	}
	for _, tc := range []struct {
		name  string
		want  []Route
		table []kernelRoute
		hold  []string
		plan  string
	}{
		{name: "empty", plan: ""},
		{name: "install", want: []Route{rt("10.1.0.0/16", "10.255.0.1")},
			plan: "replace 10.1.0.0/16 via 10.255.0.1"},
		{name: "already there", want: []Route{rt("10.1.0.0/16", "10.255.0.1")},
			table: []kernelRoute{kr("10.1.0.0/16", 20, 241, "10.255.0.1")}, plan: ""},
		{name: "ECMP grows in place", want: []Route{rt("10.1.0.0/16", "10.255.0.1", "10.255.0.5")},
			table: []kernelRoute{kr("10.1.0.0/16", 20, 241, "10.255.0.1")},
			plan:  "replace 10.1.0.0/16 via 10.255.0.1,10.255.0.5"},
		{name: "withdrawn", table: []kernelRoute{kr("10.1.0.0/16", 20, 241, "10.255.0.1")},
			plan: "delete 10.1.0.0/16 metric 20 proto 241 via [10.255.0.1]"},
		{name: "foreign routes ignored",
			table: []kernelRoute{kr("10.1.0.0/16", 0, 4, "10.9.0.1"), kr("10.2.0.0/16", 20, 186, "10.9.0.1"), kr("0.0.0.0/0", 0, 3, "192.0.2.1")}},
		{name: "foreign route same prefix other metric: coexist",
			want:  []Route{rt("10.1.0.0/16", "10.255.0.1")},
			table: []kernelRoute{kr("10.1.0.0/16", 0, 240, "10.255.0.1")},
			plan:  "replace 10.1.0.0/16 via 10.255.0.1"},
		{name: "foreign route same key: conflict",
			want:  []Route{rt("10.1.0.0/16", "10.255.0.1")},
			table: []kernelRoute{kr("10.1.0.0/16", 20, 4, "10.9.0.1")},
			plan:  "conflict 10.1.0.0/16 via 10.255.0.1"},
		{name: "our route at another metric goes",
			want:  []Route{rt("10.1.0.0/16", "10.255.0.1")},
			table: []kernelRoute{kr("10.1.0.0/16", 30, 241, "10.255.0.1")},
			plan:  "replace 10.1.0.0/16 via 10.255.0.1\ndelete 10.1.0.0/16 metric 30 proto 241 via [10.255.0.1]"},
		{name: "duplicates of ours",
			want:  []Route{rt("10.1.0.0/16", "10.255.0.1")},
			table: []kernelRoute{kr("10.1.0.0/16", 20, 241, "10.255.0.1"), kr("10.1.0.0/16", 20, 241, "10.255.0.5")},
			plan:  "dedup 10.1.0.0/16 metric 20 proto 241 via [10.255.0.5]\nreplace 10.1.0.0/16 via 10.255.0.1"},
		{name: "held during restart", hold: []string{"10.1.0.0/16"},
			table: []kernelRoute{kr("10.1.0.0/16", 20, 241, "10.255.0.1"), kr("10.2.0.0/16", 20, 241, "10.255.0.1")},
			plan:  "delete 10.2.0.0/16 metric 20 proto 241 via [10.255.0.1]\nheld 10.1.0.0/16 metric 20 proto 241 via [10.255.0.1]"},
	} {
		var hold func(netip.Prefix) bool
		if tc.hold != nil {
			hold = func(p netip.Prefix) bool { return slices.Contains(tc.hold, p.String()) }
		}
		got := planText(planRoutes(tc.want, tc.table, RouteProtocol, 20, hold))
		if got != tc.plan {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.name, got, tc.plan)
		}
	}
}

func planText(p routePlan) string {
	var l []string
	for _, r := range p.Dedup {
		l = append(l, "dedup "+r.String())
	}
	for _, r := range p.Replace {
		l = append(l, "replace "+r.String())
	}
	for _, r := range p.Delete {
		l = append(l, "delete "+r.String())
	}
	for _, r := range p.Conflicts {
		l = append(l, "conflict "+r.String())
	}
	for _, r := range p.Held {
		l = append(l, "held "+r.String())
	}
	return strings.Join(l, "\n")
}

// planRoutesSlow is the obviously-correct reference: for every wanted
// route and every table entry, scan everything.
func planRoutesSlow(want []Route, table []kernelRoute, proto, metric int, hold func(netip.Prefix) bool) routePlan {
	var p routePlan
	conflict := func(dst netip.Prefix) bool {
		for _, k := range table {
			if k.Dst == dst && k.Metric == metric && k.Protocol != proto {
				return true
			}
		}
		return false
	}
	wanted := func(k kernelRoute) bool {
		for _, w := range want {
			if w.Dst == k.Dst && k.Metric == metric && !conflict(w.Dst) {
				return true
			}
		}
		return false
	}
	for _, w := range want {
		if conflict(w.Dst) {
			p.Conflicts = append(p.Conflicts, w)
			continue
		}
		var mine []kernelRoute
		for _, k := range table {
			if k.Dst == w.Dst && k.Metric == metric && k.Protocol == proto {
				mine = append(mine, k)
			}
		}
		if len(mine) == 1 && reflect.DeepEqual(mine[0].Via, w.Via) {
			continue
		}
		if len(mine) > 1 {
			p.Dedup = append(p.Dedup, mine[1:]...)
		}
		p.Replace = append(p.Replace, w)
	}
	for _, k := range table {
		if k.Protocol != proto || wanted(k) {
			continue
		}
		inWant := slices.ContainsFunc(want, func(w Route) bool { return w.Dst == k.Dst })
		if hold != nil && hold(k.Dst) && !inWant {
			p.Held = append(p.Held, k)
		} else {
			p.Delete = append(p.Delete, k)
		}
	}
	return p
}

// TestPlanRoutesRandom checks planRoutes against planRoutesSlow on random
// tables, then carries the plan out on FakeRoutes (a kernel model that
// keys routes like the kernel and lets RouteReplace clobber a foreign
// route) and checks the outcome: foreign routes untouched, every wanted
// route without conflict present exactly once with its gateways, nothing
// else of ours except held routes, and a second pass writes nothing.
func TestPlanRoutesRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	prefixes := []string{"0.0.0.0/0", "10.1.0.0/16", "10.1.0.0/24", "10.2.0.0/16", "10.3.0.0/16", "192.0.2.0/24"}
	gws := []string{"10.255.0.1", "10.255.0.5", "10.255.0.9", "10.255.0.13"}
	vias := func(min int) []netip.Addr {
		var v []netip.Addr
		for _, g := range gws {
			if rng.IntN(3) == 0 {
				v = append(v, ma(g))
			}
		}
		if len(v) < min {
			v = append(v, ma(gws[rng.IntN(len(gws))]))
		}
		return v
	}
	for iter := range 2000 {
		var want []Route
		for _, p := range prefixes {
			if rng.IntN(2) == 0 {
				want = append(want, Route{Dst: mp(p), Via: vias(1)})
			}
		}
		var table []kernelRoute
		for range rng.IntN(8) {
			table = append(table, kernelRoute{
				Dst:      mp(prefixes[rng.IntN(len(prefixes))]),
				Metric:   []int{0, 20, 20, 30}[rng.IntN(4)],
				Protocol: []int{RouteProtocol, RouteProtocol, 4, 186, 240}[rng.IntN(5)],
				Via:      vias(0),
			})
		}
		held := map[netip.Prefix]bool{}
		for _, p := range prefixes {
			held[mp(p)] = rng.IntN(4) == 0
		}
		hold := func(p netip.Prefix) bool { return held[p] }
		if rng.IntN(2) == 0 {
			hold = nil
		}

		got := planRoutes(want, table, RouteProtocol, 20, hold)
		ref := planRoutesSlow(want, table, RouteProtocol, 20, hold)
		slices.SortFunc(ref.Dedup, compareDeleteOrder)
		slices.SortFunc(ref.Delete, compareDeleteOrder)
		slices.SortFunc(ref.Held, compareKernelRoute)
		if planText(got) != planText(ref) {
			t.Fatalf("iteration %d: want %v table %v\nplanRoutes:\n%s\nreference:\n%s", iter, want, table, planText(got), planText(ref))
		}

		// Carry it out on the kernel model.
		f := NewFakeRoutes()
		for _, k := range table {
			f.AddForeign(*toNetlinkProto(k))
		}
		ks := &kernelSync{h: f, table: mainTable, metric: 20, log: discard(), adopted: map[netip.Prefix]bool{}}
		for p, h := range held {
			if h && hold != nil {
				ks.adopted[p] = true
			}
		}
		if _, err := ks.sync(want, hold != nil); err != nil {
			t.Fatalf("iteration %d: sync: %v", iter, err)
		}
		after, err := listTable(f, mainTable)
		if err != nil {
			t.Fatal(err)
		}
		checkOutcome(t, iter, want, table, after, got, hold)
		f.ResetCalls()
		if _, err := ks.sync(want, hold != nil); err != nil {
			t.Fatalf("iteration %d: second sync: %v", iter, err)
		}
		if w := f.Writes(); len(w) != 0 {
			t.Fatalf("iteration %d: second sync wrote %q", iter, w)
		}
	}
}

func checkOutcome(t *testing.T, iter int, want []Route, before, after []kernelRoute, p routePlan, hold func(netip.Prefix) bool) {
	t.Helper()
	count := func(l []kernelRoute, k kernelRoute) int {
		n := 0
		for _, x := range l {
			if reflect.DeepEqual(x, k) {
				n++
			}
		}
		return n
	}
	for _, k := range before {
		if k.Protocol != RouteProtocol && count(after, k) != count(before, k) {
			t.Fatalf("iteration %d: foreign route %v changed; before %v after %v", iter, k, before, after)
		}
	}
	for _, w := range want {
		if slices.ContainsFunc(p.Conflicts, func(c Route) bool { return c.Dst == w.Dst }) {
			continue
		}
		n := 0
		for _, k := range after {
			if k.Protocol == RouteProtocol && k.Dst == w.Dst && k.Metric == 20 {
				n++
				if !slices.Equal(k.Via, w.Via) {
					t.Fatalf("iteration %d: %v has gateways %v, want %v", iter, w.Dst, k.Via, w.Via)
				}
			}
		}
		if n != 1 {
			t.Fatalf("iteration %d: %d routes of ours for %v, want 1; after %v", iter, n, w.Dst, after)
		}
	}
	for _, k := range after {
		if k.Protocol != RouteProtocol {
			continue
		}
		isWanted := slices.ContainsFunc(want, func(w Route) bool { return w.Dst == k.Dst && k.Metric == 20 })
		inWant := slices.ContainsFunc(want, func(w Route) bool { return w.Dst == k.Dst })
		if !isWanted && (hold == nil || !hold(k.Dst) || inWant) {
			t.Fatalf("iteration %d: unwanted route of ours left: %v", iter, k)
		}
	}
}

func toNetlinkProto(k kernelRoute) *netlinkRoute {
	r := toNetlink(k.Dst, k.Via, k.Metric, mainTable)
	r.Protocol = netlinkProto(k.Protocol)
	return r
}

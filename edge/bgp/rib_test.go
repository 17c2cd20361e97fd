package bgp

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

func TestChoose(t *testing.T) {
	ext := func(nh string, aspath int) Path {
		return Path{NextHop: ma(nh), LocalPref: 100, ASPathLen: aspath, FromPeer: ma(nh)}
	}
	stale := func(p Path) Path { p.Stale = true; return p }
	local := Path{Local: true, LocalPref: 100}
	excl := func(as ...string) map[netip.Addr]bool {
		m := map[netip.Addr]bool{}
		for _, a := range as {
			m[ma(a)] = true
		}
		return m
	}
	// A spoke with two hubs (10.255.0.1, 10.255.0.5) and a direct
	// tunnel (10.255.0.9).
	rib := RIB{Dests: map[netip.Prefix][]Path{
		mp("10.3.0.0/16"): {ext("10.255.0.1", 2), ext("10.255.0.5", 2)},        // ECMP over both hubs
		mp("10.4.0.0/16"): {ext("10.255.0.9", 1), ext("10.255.0.1", 2)},        // direct beats via hub
		mp("10.5.0.0/16"): {ext("10.255.0.1", 2)},                              // one way only
		mp("10.6.0.0/16"): {stale(ext("10.255.0.1", 2)), ext("10.255.0.5", 2)}, // a hub restarting
		mp("10.7.0.0/16"): {stale(ext("10.255.0.1", 2))},                       // the only way is restarting
		mp("10.2.0.0/16"): {local, ext("10.255.0.1", 2)},                       // ours
		// not masked: Choose masks
		netip.PrefixFrom(ma("10.8.0.7"), 16): {ext("10.255.0.9", 1), ext("10.255.0.1", 2), ext("10.255.0.5", 2)},
	}}
	// BGP's own choice, what nothing excluded gives.
	const noExclusion = `10.3.0.0/16 via 10.255.0.1,10.255.0.5
10.4.0.0/16 via 10.255.0.9
10.5.0.0/16 via 10.255.0.1
10.6.0.0/16 via 10.255.0.5
10.7.0.0/16 via 10.255.0.1
10.8.0.0/16 via 10.255.0.9`
	for _, tc := range []struct {
		name     string
		excluded map[netip.Addr]bool
		want     string
	}{
		{"nothing excluded", nil, noExclusion},
		{"one hub excluded: ECMP shrinks, its lone routes stay (fail-open)", excl("10.255.0.1"), `10.3.0.0/16 via 10.255.0.5
10.4.0.0/16 via 10.255.0.9
10.5.0.0/16 via 10.255.0.1
10.6.0.0/16 via 10.255.0.5
10.7.0.0/16 via 10.255.0.1
10.8.0.0/16 via 10.255.0.9`},
		{"direct tunnel excluded: the hubs' longer paths take over, tied", excl("10.255.0.9"), `10.3.0.0/16 via 10.255.0.1,10.255.0.5
10.4.0.0/16 via 10.255.0.1
10.5.0.0/16 via 10.255.0.1
10.6.0.0/16 via 10.255.0.5
10.7.0.0/16 via 10.255.0.1
10.8.0.0/16 via 10.255.0.1,10.255.0.5`},
		{"fresh path excluded: the stale one is used", excl("10.255.0.5"), `10.3.0.0/16 via 10.255.0.1
10.4.0.0/16 via 10.255.0.9
10.5.0.0/16 via 10.255.0.1
10.6.0.0/16 via 10.255.0.1
10.7.0.0/16 via 10.255.0.1
10.8.0.0/16 via 10.255.0.9`},
		{"everything excluded: fail-open keeps BGP's choice", excl("10.255.0.1", "10.255.0.5", "10.255.0.9"), noExclusion},
		{"excluding a hop nobody uses changes nothing", excl("10.255.0.77"), noExclusion},
	} {
		before := cloneRIB(rib)
		if got := routesText(Choose(rib, tc.excluded)); got != tc.want {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.name, got, tc.want)
		}
		if !reflect.DeepEqual(rib, before) {
			t.Errorf("%s: Choose changed its input", tc.name)
		}
	}
	if got := Choose(RIB{}, excl("10.255.0.1")); got != nil {
		t.Errorf("empty rib: %v", got)
	}
	// Our own path is not a learned way around the exclusion: with the
	// only learned path excluded all paths are kept (fail-open), and ours,
	// best, still means no route.
	if got := Choose(RIB{Dests: map[netip.Prefix][]Path{mp("10.2.0.0/16"): {local, ext("10.255.0.1", 1)}}}, excl("10.255.0.1")); got != nil {
		t.Errorf("our own prefix with its learned copy excluded: %v", got)
	}
}

// TestChooseRandom checks Choose against a slow reference for exclusion:
// removing the excluded learned paths by hand (unless none would be left)
// and choosing with nothing excluded must give the same routes.
func TestChooseRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	hops := []netip.Addr{ma("10.255.0.1"), ma("10.255.0.5"), ma("10.255.0.9"), ma("10.255.0.13")}
	for iter := range 2000 {
		rib := RIB{Dests: map[netip.Prefix][]Path{}}
		for d := range 1 + rng.IntN(4) {
			dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(d), 0, 0}), 16)
			var paths []Path
			if rng.IntN(5) == 0 {
				paths = append(paths, Path{Local: true, LocalPref: 100})
			}
			for range rng.IntN(4) {
				nh := hops[rng.IntN(len(hops))]
				paths = append(paths, Path{NextHop: nh, FromPeer: nh, LocalPref: 100, ASPathLen: 1 + rng.IntN(2),
					Stale: rng.IntN(4) == 0, NHInvalid: rng.IntN(10) == 0})
			}
			// GoBGP's order: best first (shorter AS path first here).
			slices.SortStableFunc(paths, func(a, b Path) int {
				if a.Local != b.Local {
					if a.Local {
						return -1
					}
					return 1
				}
				return a.ASPathLen - b.ASPathLen
			})
			rib.Dests[dst] = paths
		}
		excluded := map[netip.Addr]bool{}
		for _, h := range hops {
			if rng.IntN(3) == 0 {
				excluded[h] = true
			}
		}
		ref := RIB{Dests: map[netip.Prefix][]Path{}}
		for dst, paths := range rib.Dests {
			var kept []Path
			learnedLeft := false
			for _, p := range paths {
				if !p.Local && excluded[p.NextHop] {
					continue
				}
				kept = append(kept, p)
				learnedLeft = learnedLeft || !p.Local
			}
			if !learnedLeft {
				kept = paths
			}
			ref.Dests[dst] = kept
		}
		got, want := Choose(rib, excluded), Choose(ref, nil)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("iteration %d: excluded %v, rib %+v:\ngot  %v\nwant %v", iter, slices.Collect(maps.Keys(excluded)), rib.Dests, got, want)
		}
		if !slices.IsSortedFunc(got, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) }) {
			t.Fatalf("iteration %d: not sorted: %v", iter, got)
		}
	}
}

func TestRIBCandidates(t *testing.T) {
	p := func(nh string, aspath int) Path { return Path{NextHop: ma(nh), LocalPref: 100, ASPathLen: aspath} }
	rib := RIB{Dests: map[netip.Prefix][]Path{
		// every path counts, not only the best ones; sorted, no duplicates
		mp("10.3.0.0/16"): {p("10.255.0.9", 1), p("10.255.0.5", 2), p("10.255.0.1", 2), p("10.255.0.5", 3)},
		// ours first: the learned copy still counts
		mp("10.2.0.0/16"): {{Local: true, LocalPref: 100}, p("10.255.0.1", 2)},
		// ours only: left out
		mp("10.1.0.0/16"): {{Local: true, LocalPref: 100}},
		// invalid or missing next hops: left out
		mp("10.4.0.0/16"): {{NextHop: ma("10.255.0.1"), NHInvalid: true}, {LocalPref: 100}},
		// stale paths are still ways to go
		mp("10.5.0.0/16"): {{NextHop: ma("10.255.0.1"), Stale: true}},
		// masked
		netip.PrefixFrom(ma("10.6.1.1"), 16): {p("10.255.0.1", 1)},
	}}
	got := fmt.Sprint(rib.Candidates())
	want := "map[10.2.0.0/16:[10.255.0.1] 10.3.0.0/16:[10.255.0.1 10.255.0.5 10.255.0.9] 10.5.0.0/16:[10.255.0.1] 10.6.0.0/16:[10.255.0.1]]"
	if got != want {
		t.Errorf("Candidates:\n%s\nwant:\n%s", got, want)
	}
	if c := (RIB{}).Candidates(); len(c) != 0 {
		t.Errorf("empty rib: %v", c)
	}
}

// cloneRIB copies r deeply (Path.ASPath included).
func cloneRIB(r RIB) RIB {
	out := RIB{Holding: r.Holding, Dests: make(map[netip.Prefix][]Path, len(r.Dests))}
	for dst, paths := range r.Dests {
		ps := slices.Clone(paths)
		for i := range ps {
			ps[i].ASPath = slices.Clone(ps[i].ASPath)
		}
		out.Dests[dst] = ps
	}
	return out
}

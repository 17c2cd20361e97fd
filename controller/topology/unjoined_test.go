package topology

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
)

func TestUnjoined(t *testing.T) {
	hub, spoke := intent.RoleHub, intent.RoleSpoke
	sites := []intent.Site{
		site("hq", hub, "inet1"),
		site("b1", spoke, "inet1*"),
		site("b2", spoke, "inet1*", "lte*"),
		site("b3", spoke, "inet1*", "mpls"),
		site("b4", spoke, "lte"),
	}
	for _, c := range []struct {
		topo intent.Topology
		want string
	}{
		// Through the hub: spokes are never joined directly anyway.
		{intent.Topology{Mode: intent.ModeHubAndSpoke, Match: intent.MatchSameName}, "[]"},
		// b1/b2/b3 share only dynamic inet1; b3's mpls is joined to no
		// one; b4 shares nothing with the others under same-name.
		{intent.Topology{Mode: intent.ModeFullMesh, Match: intent.MatchSameName}, "[{b1 b2} {b1 b3} {b2 b3}]"},
		// all-pairs: b3's static mpls joins b1's and b2's dynamic ones.
		{intent.Topology{Mode: intent.ModeFullMesh, Match: intent.MatchAllPairs}, "[{b1 b2}]"},
	} {
		if got := fmt.Sprint(Unjoined(sites, c.topo)); got != c.want {
			t.Errorf("Unjoined(%v, %v) = %s, want %s", c.topo.Mode, c.topo.Match, got, c.want)
		}
	}
	dynHubs := []intent.Site{site("h1", hub, "inet1*"), site("h2", hub, "inet1*"), site("s", spoke, "inet1")}
	if got := fmt.Sprint(Unjoined(dynHubs, intent.Topology{Mode: intent.ModeHubAndSpoke})); got != "[{h1 h2}]" {
		t.Errorf("two dynamic hubs: %s, want [{h1 h2}]", got)
	}
}

// TestUnjoinedAgainstDerive: a pair is unjoined exactly when the topology
// connects it, the match rule has a transport pair for it, and Derive
// makes no link between the two sites.
func TestUnjoinedAgainstDerive(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 14))
	names := []string{"inet1", "inet2", "lte"}
	for range 300 {
		var sites []intent.Site
		for i := range 2 + r.IntN(6) {
			role := intent.RoleSpoke
			if r.IntN(3) == 0 {
				role = intent.RoleHub
			}
			var trs []string
			for _, n := range names {
				if r.IntN(2) == 0 {
					if r.IntN(2) == 0 {
						n += "*"
					}
					trs = append(trs, n)
				}
			}
			sites = append(sites, site(fmt.Sprintf("s%d", i), role, trs...))
		}
		topo := intent.Topology{Mode: []intent.Mode{intent.ModeFullMesh, intent.ModeHubAndSpoke}[r.IntN(2)],
			Match: []intent.Match{intent.MatchSameName, intent.MatchAllPairs}[r.IntN(2)]}
		linked := map[Pair]bool{}
		for _, l := range Derive(sites, topo) {
			linked[Pair{min(l.A.Site, l.B.Site), max(l.A.Site, l.B.Site)}] = true
		}
		var want []Pair
		for i, a := range sites {
			for _, b := range sites[i+1:] {
				p := Pair{min(a.Name, b.Name), max(a.Name, b.Name)}
				candidate := false
				for _, ta := range a.Transports {
					for _, tb := range b.Transports {
						candidate = candidate || topo.Match == intent.MatchAllPairs || ta.Name == tb.Name
					}
				}
				if connected(topo.Mode, a, b) && candidate && !linked[p] {
					want = append(want, p)
				}
			}
		}
		slices.SortFunc(want, func(x, y Pair) int {
			if x.A != y.A {
				if x.A < y.A {
					return -1
				}
				return 1
			}
			if x.B < y.B {
				return -1
			}
			return 1
		})
		if got := Unjoined(sites, topo); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("sites %v topo %v: Unjoined %v, reference %v", sites, topo, got, want)
		}
	}
}

// BenchmarkUnjoined5000: 5,000 sites, every fifth behind NAT only (LTE
// dynamic), two hubs, for both modes: the figure GetTopology, SetTopology
// and a /metrics scrape after a change pay (the controller caches it).
func BenchmarkUnjoined5000(b *testing.B) {
	var sites []intent.Site
	for i := range 5000 {
		role, trs := intent.RoleSpoke, []string{"inet1"}
		if i < 2 {
			role = intent.RoleHub
		} else if i%5 == 0 {
			trs = []string{"lte*"}
		}
		sites = append(sites, site(fmt.Sprintf("s%04d", i), role, trs...))
	}
	for _, m := range []intent.Mode{intent.ModeHubAndSpoke, intent.ModeFullMesh} {
		b.Run(string(m), func(b *testing.B) {
			for b.Loop() {
				Unjoined(sites, intent.Topology{Mode: m, Match: intent.MatchSameName})
			}
		})
	}
}

package topology

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
)

func site(name string, role intent.Role, transports ...string) intent.Site {
	s := intent.Site{Name: name, Role: role}
	for i, t := range transports {
		if strings.HasSuffix(t, "*") { // "inet1*" = dynamic
			s.Transports = append(s.Transports, intent.Transport{Name: strings.TrimSuffix(t, "*"), Dynamic: true})
			continue
		}
		s.Transports = append(s.Transports, intent.Transport{Name: t, Addr: netip.AddrFrom4([4]byte{198, 51, byte(len(name)), byte(i + 1)})})
	}
	return s
}

func ids(links []Link) string {
	var out []string
	for _, l := range links {
		out = append(out, l.ID)
	}
	return strings.Join(out, " ")
}

func TestDerive(t *testing.T) {
	hub := intent.RoleHub
	spoke := intent.RoleSpoke
	tests := []struct {
		name  string
		sites []intent.Site
		topo  intent.Topology
		want  string
	}{
		{"no mode, no tunnels", []intent.Site{site("a", spoke, "inet1"), site("b", spoke, "inet1")}, intent.Topology{}, ""},
		{"mesh of three", []intent.Site{site("c", spoke, "inet1"), site("a", spoke, "inet1"), site("b", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~b.inet1 a.inet1~c.inet1 b.inet1~c.inet1"},
		{"hub first even when it sorts last", []intent.Site{site("zhub", hub, "inet1"), site("a", spoke, "inet1"), site("b", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeHubAndSpoke}, "zhub.inet1~a.inet1 zhub.inet1~b.inet1"},
		{"two hubs: spokes to both, hubs to each other", []intent.Site{site("h1", hub, "inet1"), site("h2", hub, "inet1"), site("s1", spoke, "inet1"), site("s2", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeHubAndSpoke}, "h1.inet1~h2.inet1 h1.inet1~s1.inet1 h1.inet1~s2.inet1 h2.inet1~s1.inet1 h2.inet1~s2.inet1"},
		{"same-name transports only", []intent.Site{site("a", spoke, "inet1", "mpls"), site("b", spoke, "inet1", "lte")},
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~b.inet1"},
		{"all pairs", []intent.Site{site("a", spoke, "inet1", "mpls"), site("b", spoke, "inet1", "lte")},
			intent.Topology{Mode: intent.ModeFullMesh, Match: intent.MatchAllPairs}, "a.inet1~b.inet1 a.inet1~b.lte a.mpls~b.inet1 a.mpls~b.lte"},
		{"dynamic to dynamic skipped", []intent.Site{site("a", spoke, "inet1*"), site("b", spoke, "inet1*"), site("c", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~c.inet1 b.inet1~c.inet1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(Derive(tc.sites, tc.topo)); got != tc.want {
				t.Errorf("Derive:\n got  %s\n want %s", got, tc.want)
			}
		})
	}
}

// TestDeriveMatchesReference checks Derive against an obviously correct
// reference on random networks: every unordered pair of sites, every pair of
// transports, filtered by the rules written out longhand.
func TestDeriveMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	transports := []string{"inet1", "inet2", "mpls"}
	for iter := range 300 {
		var sites []intent.Site
		for i := range r.IntN(8) + 1 {
			role := intent.RoleSpoke
			if r.IntN(4) == 0 {
				role = intent.RoleHub
			}
			var ts []string
			for _, tr := range transports {
				switch r.IntN(3) {
				case 0:
					ts = append(ts, tr)
				case 1:
					ts = append(ts, tr+"*")
				}
			}
			if len(ts) == 0 {
				ts = []string{"inet1"}
			}
			sites = append(sites, site(fmt.Sprintf("s%02d", i), role, ts...))
		}
		topo := intent.Topology{Mode: []intent.Mode{intent.ModeFullMesh, intent.ModeHubAndSpoke}[r.IntN(2)], Match: []intent.Match{intent.MatchSameName, intent.MatchAllPairs}[r.IntN(2)]}
		r.Shuffle(len(sites), func(i, j int) { sites[i], sites[j] = sites[j], sites[i] })

		var want []string
		for _, a := range sites {
			for _, b := range sites {
				if a.Name == b.Name {
					continue
				}
				// a is the A end iff it is a hub and b is not, or both have the same role and a sorts first.
				if !(a.Hub() && !b.Hub() || a.Hub() == b.Hub() && a.Name < b.Name) {
					continue
				}
				if topo.Mode == intent.ModeHubAndSpoke && !a.Hub() && !b.Hub() {
					continue
				}
				for _, ta := range a.Transports {
					for _, tb := range b.Transports {
						if topo.Match == intent.MatchSameName && ta.Name != tb.Name || ta.Dynamic && tb.Dynamic {
							continue
						}
						want = append(want, a.Name+"."+ta.Name+"~"+b.Name+"."+tb.Name)
					}
				}
			}
		}
		slices.Sort(want)
		if got := ids(Derive(sites, topo)); got != strings.Join(want, " ") {
			t.Fatalf("iteration %d (%s/%s): Derive\n got  %s\n want %s", iter, topo.Mode, topo.Match, got, strings.Join(want, " "))
		}
	}
}

func TestFullMeshOf50(t *testing.T) {
	var sites []intent.Site
	for i := range 50 {
		sites = append(sites, site(fmt.Sprintf("site%02d", i), intent.RoleSpoke, "inet1"))
	}
	links := Derive(sites, intent.Topology{Mode: intent.ModeFullMesh})
	if len(links) != 50*49/2 {
		t.Fatalf("full mesh of 50 sites: %d links, want 1225", len(links))
	}
}

func TestDiff(t *testing.T) {
	want := []Link{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	have := map[string]int{"b": 1, "d": 1, "e": 1}
	add, remove := Diff(want, have)
	if got := ids(add); got != "a c" {
		t.Errorf("add = %q, want %q", got, "a c")
	}
	if got := strings.Join(remove, " "); got != "d e" {
		t.Errorf("remove = %q, want %q", got, "d e")
	}
}

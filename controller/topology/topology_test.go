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

// show lists links as "id/initiator".
func show(links []Link) string {
	var out []string
	for _, l := range links {
		out = append(out, l.ID+"/"+string(l.Initiator))
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
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~b.inet1/a a.inet1~c.inet1/a b.inet1~c.inet1/a"},
		{"ends by name, the hub initiates even when it sorts last", []intent.Site{site("zhub", hub, "inet1"), site("a", spoke, "inet1"), site("b", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeHubAndSpoke}, "a.inet1~zhub.inet1/b b.inet1~zhub.inet1/b"},
		{"a hub that sorts first initiates as a", []intent.Site{site("hq", hub, "inet1"), site("x", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeHubAndSpoke}, "hq.inet1~x.inet1/a"},
		{"two hubs: spokes to both, hubs to each other", []intent.Site{site("h1", hub, "inet1"), site("h2", hub, "inet1"), site("s1", spoke, "inet1"), site("s2", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeHubAndSpoke}, "h1.inet1~h2.inet1/a h1.inet1~s1.inet1/a h1.inet1~s2.inet1/a h2.inet1~s1.inet1/a h2.inet1~s2.inet1/a"},
		{"hub in a full mesh initiates", []intent.Site{site("a", spoke, "inet1"), site("m", hub, "inet1"), site("z", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~m.inet1/b a.inet1~z.inet1/a m.inet1~z.inet1/a"},
		{"same-name transports only", []intent.Site{site("a", spoke, "inet1", "mpls"), site("b", spoke, "inet1", "lte")},
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~b.inet1/a"},
		{"all pairs", []intent.Site{site("a", spoke, "inet1", "mpls"), site("b", hub, "inet1", "lte")},
			intent.Topology{Mode: intent.ModeFullMesh, Match: intent.MatchAllPairs}, "a.inet1~b.inet1/b a.inet1~b.lte/b a.mpls~b.inet1/b a.mpls~b.lte/b"},
		{"dynamic to dynamic skipped", []intent.Site{site("a", spoke, "inet1*"), site("b", spoke, "inet1*"), site("c", spoke, "inet1")},
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~c.inet1/a b.inet1~c.inet1/a"},
		{"a prefix of another name sorts first", []intent.Site{site("a-b", spoke, "inet1"), site("a", hub, "inet1")},
			intent.Topology{Mode: intent.ModeFullMesh}, "a.inet1~a-b.inet1/a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := show(Derive(tc.sites, tc.topo)); got != tc.want {
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
				// a is the A end iff its name sorts first; roles play no part.
				if a.Name > b.Name {
					continue
				}
				// The initiator is the hub of a hub-spoke pair, else a.
				side := "a"
				if b.Hub() && !a.Hub() {
					side = "b"
				}
				if topo.Mode == intent.ModeHubAndSpoke && !a.Hub() && !b.Hub() {
					continue
				}
				for _, ta := range a.Transports {
					for _, tb := range b.Transports {
						if topo.Match == intent.MatchSameName && ta.Name != tb.Name || ta.Dynamic && tb.Dynamic {
							continue
						}
						// The end on a dynamic transport initiates
						// (it may be behind NAT).
						side := side
						if ta.Dynamic {
							side = "a"
						} else if tb.Dynamic {
							side = "b"
						}
						want = append(want, a.Name+"."+ta.Name+"~"+b.Name+"."+tb.Name+"/"+side)
					}
				}
			}
		}
		slices.Sort(want)
		if got := show(Derive(sites, topo)); got != strings.Join(want, " ") {
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

// stored is a stored tunnel for Diff: its ends in the stored order.
type stored struct{ a, b End }

func (s stored) Ends() (End, End) { return s.a, s.b }

func storedAs(id string) stored {
	a, b, ok := ParseID(id)
	if !ok {
		panic("bad id " + id)
	}
	return stored{a, b}
}

func TestDiff(t *testing.T) {
	link := func(id string) Link { a, b, _ := ParseID(id); return Link{ID: id, A: a, B: b} }
	tests := []struct {
		name         string
		want         []string
		have         []string
		add, removed string
	}{
		{"by id", []string{"a.x~b.x", "b.x~c.x", "c.x~d.x"}, []string{"b.x~c.x", "d.x~e.x", "e.x~f.x"}, "a.x~b.x c.x~d.x", "d.x~e.x e.x~f.x"},
		{"an old record with the hub first is the same tunnel", []string{"a.x~hub.x", "b.x~hub.x"}, []string{"hub.x~a.x"}, "b.x~hub.x", ""},
		{"an old record not wanted is removed under its own id", nil, []string{"hub.x~a.x"}, "", "hub.x~a.x"},
		{"transports are part of the pair", []string{"a.x~b.y"}, []string{"b.x~a.y"}, "a.x~b.y", "b.x~a.y"},
		{"two records of one pair keep the smaller id", []string{"a.x~hub.x"}, []string{"hub.x~a.x", "a.x~hub.x"}, "", "hub.x~a.x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []Link
			for _, id := range tc.want {
				want = append(want, link(id))
			}
			have := map[string]stored{}
			for _, id := range tc.have {
				have[id] = storedAs(id)
			}
			add, remove := Diff(want, have)
			if got := ids(add); got != tc.add {
				t.Errorf("add = %q, want %q", got, tc.add)
			}
			if got := strings.Join(remove, " "); got != tc.removed {
				t.Errorf("remove = %q, want %q", got, tc.removed)
			}
		})
	}
}

func TestKeyOrderParse(t *testing.T) {
	tests := []struct {
		id, key string
		ok      bool
	}{
		{"hq.inet1~branch1.inet1", "branch1.inet1~hq.inet1", true},
		{"branch1.inet1~hq.inet1", "branch1.inet1~hq.inet1", true},
		{"a.lte~a-b.inet1", "a.lte~a-b.inet1", true},
		{"a-b.inet1~a.lte", "a.lte~a-b.inet1", true},
		{"hq.inet1", "", false},
		{"hq~br.inet1", "", false},
		{".x~br.inet1", "", false},
	}
	for _, tc := range tests {
		a, b, ok := ParseID(tc.id)
		if ok != tc.ok {
			t.Errorf("ParseID(%q) ok = %v, want %v", tc.id, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if ID(a, b) != tc.id {
			t.Errorf("ID(ParseID(%q)) = %q", tc.id, ID(a, b))
		}
		if k := Key(a, b); k != tc.key || Key(b, a) != k {
			t.Errorf("Key(%q) = %q / %q reversed, want %q both ways", tc.id, k, Key(b, a), tc.key)
		}
	}
}

func TestInitiator(t *testing.T) {
	hub, spoke := intent.Site{Role: intent.RoleHub}, intent.Site{Role: intent.RoleSpoke}
	uhub, uspoke := intent.Site{Role: intent.RoleHub, Unmanaged: true}, intent.Site{Role: intent.RoleSpoke, Unmanaged: true}
	tests := []struct {
		a, b intent.Site
		want Side
	}{
		{spoke, spoke, SideA},
		{hub, hub, SideA},
		{hub, spoke, SideA},
		{spoke, hub, SideB},
		// The managed end initiates when exactly one end is unmanaged,
		// whatever the roles.
		{uhub, spoke, SideB},
		{spoke, uhub, SideA},
		{uspoke, hub, SideB},
		{hub, uspoke, SideA},
		// Both unmanaged: the role rule again.
		{uspoke, uhub, SideB},
		{uhub, uspoke, SideA},
	}
	static := intent.Transport{Name: "inet1"}
	for _, tc := range tests {
		if got := Initiator(tc.a, tc.b, static, static); got != tc.want {
			t.Errorf("Initiator(%s unmanaged=%v, %s unmanaged=%v) = %s, want %s", tc.a.Role, tc.a.Unmanaged, tc.b.Role, tc.b.Unmanaged, got, tc.want)
		}
	}
	// The end on a dynamic transport (possibly behind NAT) initiates,
	// whatever the roles; with both static the rules above apply.
	dyn := intent.Transport{Name: "inet1", Dynamic: true}
	for _, tc := range []struct {
		a, b   intent.Site
		ta, tb intent.Transport
		want   Side
	}{
		{hub, spoke, static, dyn, SideB},
		{spoke, hub, dyn, static, SideA},
		{hub, spoke, dyn, static, SideA},
		{spoke, hub, static, dyn, SideB},
		{uhub, spoke, static, dyn, SideB},
		{spoke, uhub, dyn, static, SideA},
	} {
		if got := Initiator(tc.a, tc.b, tc.ta, tc.tb); got != tc.want {
			t.Errorf("Initiator(%s dynamic=%v, %s dynamic=%v) = %s, want %s", tc.a.Role, tc.ta.Dynamic, tc.b.Role, tc.tb.Dynamic, got, tc.want)
		}
	}
}

// TestIdentityIndependentOfRoles: on random networks, re-rolling every
// site's role changes the ends and id of no link that both derivations
// ask for (only the initiator a NEW tunnel would get may differ).
func TestIdentityIndependentOfRoles(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	roles := []intent.Role{intent.RoleHub, intent.RoleSpoke}
	for iter := range 200 {
		var before, after []intent.Site
		for i := range 2 + r.IntN(10) {
			s := site(fmt.Sprintf("s%d", r.IntN(30)*20+i), roles[r.IntN(2)], "inet1", "inet2")
			before = append(before, s)
			s.Role = roles[r.IntN(2)]
			after = append(after, s)
		}
		for _, mode := range []intent.Mode{intent.ModeFullMesh, intent.ModeHubAndSpoke} {
			top := intent.Topology{Mode: mode, Match: intent.MatchAllPairs}
			old := map[string]Link{}
			for _, l := range Derive(before, top) {
				old[l.ID] = l
			}
			for _, l := range Derive(after, top) {
				o, ok := old[l.ID]
				if ok && (o.A != l.A || o.B != l.B) {
					t.Fatalf("iteration %d (%s): link %s has ends %v/%v before and %v/%v after the role change", iter, mode, l.ID, o.A, o.B, l.A, l.B)
				}
				if l.ID != Key(l.A, l.B) || l.A.Compare(l.B) >= 0 {
					t.Fatalf("iteration %d (%s): link %s is not in canonical order", iter, mode, l.ID)
				}
			}
		}
	}
}

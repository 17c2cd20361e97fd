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

// TestDeriveForMatchesDerive checks the per-site derivation against the
// obvious reference: the links of the whole-network Derive with an end at
// the site, for random networks of every mode and match.
func TestDeriveForMatchesDerive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 200 {
		var sites []intent.Site
		for i := range 2 + r.IntN(12) {
			s := intent.Site{Name: fmt.Sprintf("s%02d", r.IntN(40)+i*40)}
			if r.IntN(3) == 0 {
				s.Role = intent.RoleHub
			}
			for j, tr := range []string{"inet1", "inet2", "lte"} {
				if r.IntN(2) == 0 || j == 0 {
					x := intent.Transport{Name: tr}
					if r.IntN(4) == 0 {
						x.Dynamic = true
					} else {
						x.Addr = netip.AddrFrom4([4]byte{20, byte(i), byte(j), 1})
					}
					s.Transports = append(s.Transports, x)
				}
			}
			sites = append(sites, s)
		}
		top := intent.Topology{Mode: []intent.Mode{intent.ModeFullMesh, intent.ModeHubAndSpoke}[r.IntN(2)],
			Match: []intent.Match{intent.MatchSameName, intent.MatchAllPairs}[r.IntN(2)]}
		all := Derive(sites, top)
		for _, s := range sites {
			var want []Link
			for _, l := range all {
				if l.A.Site == s.Name || l.B.Site == s.Name {
					want = append(want, l)
				}
			}
			got := DeriveFor(s, sites, top)
			if !slices.Equal(got, want) {
				t.Fatalf("iteration %d, site %s (%s, %s): DeriveFor = %v, want %v", iter, s.Name, top.Mode, top.Match, got, want)
			}
		}
	}
}

// deriveAllPairs is the obvious reference for Derive: every pair of sites,
// kept when the mode connects it.
func deriveAllPairs(sites []intent.Site, t intent.Topology) []Link {
	sites = slices.Clone(sites)
	intent.SortSites(sites)
	var links []Link
	for i := range sites {
		for j := i + 1; j < len(sites); j++ {
			a, b := sites[i], sites[j]
			if !connected(t.Mode, a, b) {
				continue
			}
			links = append(links, pairLinks(a, b, t.Match)...)
		}
	}
	slices.SortFunc(links, func(x, y Link) int { return strings.Compare(x.ID, y.ID) })
	return links
}

func TestDeriveMatchesAllPairs(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for iter := range 300 {
		var sites []intent.Site
		for i := range 1 + r.IntN(15) {
			s := intent.Site{Name: fmt.Sprintf("s%03d", r.IntN(50)+i*50), Transports: []intent.Transport{{Name: "inet1", Addr: netip.AddrFrom4([4]byte{20, 0, 0, byte(i)})}}}
			if r.IntN(3) == 0 {
				s.Role = intent.RoleHub
			}
			sites = append(sites, s)
		}
		for _, mode := range []intent.Mode{intent.ModeFullMesh, intent.ModeHubAndSpoke, intent.ModeNone} {
			top := intent.Topology{Mode: mode, Match: intent.MatchSameName}
			if got, want := Derive(sites, top), deriveAllPairs(sites, top); !slices.Equal(got, want) {
				t.Fatalf("iteration %d, %s: Derive = %v, want %v", iter, mode, got, want)
			}
		}
	}
}

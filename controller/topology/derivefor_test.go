package topology

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
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

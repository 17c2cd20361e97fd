package network_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
)

// BenchmarkBuildHub measures one push rebuild at a hub of N spokes after
// one spoke's change (the partial build the push does), and the cost of a
// CreateSite at that size. Run: go test -run XXX -bench BuildHub ./controller/network/
func BenchmarkBuildHub(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := newFixture(b, "10.128.0.0/10")
			ctx := context.Background()
			mk := func(i int, role intent.Role) intent.Site {
				return intent.Site{Name: fmt.Sprintf("s%05d", i), Role: role,
					Transports:  []intent.Transport{{Name: "inet1", Addr: netip.AddrFrom4([4]byte{20, byte(i >> 16), byte(i >> 8), byte(i)})}},
					LANPrefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)}}
			}
			if _, err := f.net.CreateSite(ctx, mk(0, intent.RoleHub)); err != nil {
				b.Fatal(err)
			}
			if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
				b.Fatal(err)
			}
			for i := 1; i < n; i++ {
				if _, err := f.net.CreateSite(ctx, mk(i, intent.RoleSpoke)); err != nil {
					b.Fatal(err)
				}
			}
			id := f.net.TunnelsOf("s00001")[0]
			b.Run("build", func(b *testing.B) {
				for b.Loop() {
					if _, err := f.net.Build("s00000", map[string]bool{id: true}); err != nil {
						b.Fatal(err)
					}
				}
			})
			i := n
			b.Run("create", func(b *testing.B) {
				for b.Loop() {
					if _, err := f.net.CreateSite(ctx, mk(i, intent.RoleSpoke)); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
}

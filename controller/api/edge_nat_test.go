package api

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"
)

func TestPreferPeer(t *testing.T) {
	a := netip.MustParseAddr
	pub, priv, lte := a("198.51.100.6"), a("172.16.1.2"), a("203.0.113.9")
	for _, c := range []struct {
		name     string
		reported map[string]netip.Addr
		egress   string
		peer     netip.Addr
		want     map[string]netip.Addr
		nat      bool
	}{
		{"older edge: no egress named", map[string]netip.Addr{"inet1": priv}, "", pub, map[string]netip.Addr{"inet1": priv}, false},
		{"peer unknown", map[string]netip.Addr{"inet1": priv}, "inet1", netip.Addr{}, map[string]netip.Addr{"inet1": priv}, false},
		{"behind NAT: the connection's address wins", map[string]netip.Addr{"inet1": priv, "lte": lte}, "inet1", pub, map[string]netip.Addr{"inet1": pub, "lte": lte}, true},
		{"no NAT: both agree", map[string]netip.Addr{"inet1": pub}, "inet1", pub, map[string]netip.Addr{"inet1": pub}, false},
		{"egress not reported", map[string]netip.Addr{"lte": lte}, "inet1", pub, map[string]netip.Addr{"inet1": pub, "lte": lte}, true},
		{"nothing reported", nil, "inet1", pub, map[string]netip.Addr{"inet1": pub}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := maps.Clone(c.reported)
			got, nat := PreferPeer(c.reported, c.egress, c.peer)
			if fmt.Sprint(got) != fmt.Sprint(c.want) || nat != c.nat {
				t.Errorf("PreferPeer = %v, nat %v; want %v, nat %v", got, nat, c.want, c.nat)
			}
			if !maps.Equal(before, c.reported) {
				t.Errorf("PreferPeer modified its input: %v -> %v", before, c.reported)
			}
		})
	}
}

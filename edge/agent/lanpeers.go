package agent

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshwan/meshwan/edge/bgp"
)

// ParseLANPeers parses "ADDR:ASN,ADDR:ASN" (the --bgp-lan-peer flag).
func ParseLANPeers(s string) ([]bgp.Neighbor, error) {
	var out []bgp.Neighbor
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		addr, asn, ok := strings.Cut(item, ":")
		a, err := netip.ParseAddr(addr)
		n, err2 := strconv.ParseUint(asn, 10, 32)
		if !ok || err != nil || err2 != nil || !a.Is4() || n == 0 {
			return nil, fmt.Errorf("--bgp-lan-peer %q: want IPV4:ASN, e.g. 10.1.1.2:64512", item)
		}
		out = append(out, bgp.Neighbor{Addr: a, ASN: uint32(n), Description: "lan " + addr, LAN: true})
	}
	return out, nil
}

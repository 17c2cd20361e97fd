package dataplane

import (
	"cmp"
	"net/netip"
	"slices"
)

// AddrRanges turns IPv4 prefixes into the sorted, disjoint, non-adjacent
// inclusive ranges [first, last] covering exactly their union; other
// families and invalid prefixes are skipped. Invariant the kernel needs:
// an nftables interval set refuses overlapping elements (EEXIST), and two
// tunnels to one site usually list the same remote LANs, so duplicates
// and overlaps must be merged before they reach it. Adjacent ranges are
// merged too, so no start element ever shares a key with an end element.
// Used by the firewall's sets and the steering rules.
func AddrRanges(ps []netip.Prefix) [][2]netip.Addr {
	var rs [][2]netip.Addr
	for _, p := range ps {
		if !p.IsValid() || !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		rs = append(rs, [2]netip.Addr{p.Addr(), LastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b [2]netip.Addr) int { return cmp.Or(a[0].Compare(b[0]), a[1].Compare(b[1])) })
	var out [][2]netip.Addr
	for _, r := range rs {
		if n := len(out); n > 0 {
			prev := &out[n-1]
			// Overlapping or adjacent (prev last + 1 == r first).
			if next := prev[1].Next(); r[0].Compare(prev[1]) <= 0 || (next.IsValid() && next == r[0]) {
				if r[1].Compare(prev[1]) > 0 {
					prev[1] = r[1]
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

package firewall

import (
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/meshwan/meshwan/edge/dataplane"
)

// Range is an inclusive IPv4 address range.
type Range struct {
	First, Last netip.Addr
}

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Ranges turns IPv4 prefixes into the sorted, disjoint, non-adjacent
// ranges covering exactly their union (dataplane.AddrRanges, which says
// why the kernel needs that).
func Ranges(ps []netip.Prefix) []Range {
	var out []Range
	for _, r := range dataplane.AddrRanges(ps) {
		out = append(out, Range{First: r[0], Last: r[1]})
	}
	return out
}

// elements encodes ranges as interval-set elements: a start element at
// First and an end element (IntervalEnd) at Last+1. A range ending at
// 255.255.255.255 has no end element: it is open to the top, as nft does.
func elements(rs []Range) []nftables.SetElement {
	var es []nftables.SetElement
	for _, r := range rs {
		es = append(es, nftables.SetElement{Key: r.First.AsSlice()})
		if n := r.Last.Next(); n.IsValid() {
			es = append(es, nftables.SetElement{Key: n.AsSlice(), IntervalEnd: true})
		}
	}
	return es
}

// fromElements decodes interval-set elements read from the kernel (in any
// order) back into ranges. Malformed input yields whatever ranges can be
// paired; the comparison then fails and Apply rewrites the set.
func fromElements(es []nftables.SetElement) []Range {
	type el struct {
		a   netip.Addr
		end bool
	}
	var xs []el
	for _, e := range es {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		xs = append(xs, el{a.Unmap(), e.IntervalEnd})
	}
	// Ends sort before starts at the same key.
	slices.SortFunc(xs, func(x, y el) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		switch {
		case x.end == y.end:
			return 0
		case x.end:
			return -1
		}
		return 1
	})
	var out []Range
	var open *netip.Addr
	for _, x := range xs {
		switch {
		case !x.end && open == nil:
			a := x.a
			open = &a
		case x.end && open != nil:
			out = append(out, Range{First: *open, Last: x.a.Prev()})
			open = nil
		case !x.end && open != nil:
			// Two starts in a row: not something we wrote.
			out = append(out, Range{First: *open, Last: *open})
			a := x.a
			open = &a
		}
	}
	if open != nil {
		out = append(out, Range{First: *open, Last: netip.AddrFrom4([4]byte{255, 255, 255, 255})})
	}
	return out
}

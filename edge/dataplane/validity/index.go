package validity

import (
	"cmp"
	"net/netip"
	"slices"
)

// PrefixEntry is a prefix with what it belongs to (a site and field, a
// tunnel).
type PrefixEntry[T any] struct {
	Prefix netip.Prefix
	Val    T
}

// Prefixes answers "which indexed prefix overlaps, covers or lies within
// this one" and "which indexed prefix contains this address" in
// O(log n + bits), with no assumption about the indexed prefixes (they may
// nest or repeat): two prefixes either nest or are disjoint, so q overlaps
// p exactly when q covers p (q is one of p's at most 33 supernets, found
// by exact lookup) or lies within p (q starts inside p's range, found by
// binary search over the prefixes sorted by start).
type Prefixes[T any] struct {
	byStart []PrefixEntry[T]
	byNet   map[netip.Prefix][]int // masked prefix -> indexes into byStart
	// lens has bit b set when a prefix of length b is indexed: a lookup
	// tries only the lengths present (usually one to three), which keeps
	// the map out of the hot path of a scan of thousands of sites.
	lens [3]uint64
}

// smallIndex: up to this many prefixes, a linear scan beats map lookups.
const smallIndex = 8

func (x *Prefixes[T]) hasLen(b int) bool { return x.lens[b/64]&(1<<(b%64)) != 0 }

// NewPrefixes indexes entries (masked; invalid prefixes are left out).
func NewPrefixes[T any](entries []PrefixEntry[T]) *Prefixes[T] {
	x := &Prefixes[T]{byStart: make([]PrefixEntry[T], 0, len(entries)), byNet: make(map[netip.Prefix][]int, len(entries))}
	for _, e := range entries {
		if e.Prefix.IsValid() {
			e.Prefix = e.Prefix.Masked()
			x.byStart = append(x.byStart, e)
		}
	}
	slices.SortFunc(x.byStart, func(a, b PrefixEntry[T]) int { return comparePrefix(a.Prefix, b.Prefix) })
	for i, e := range x.byStart {
		x.byNet[e.Prefix] = append(x.byNet[e.Prefix], i)
		x.lens[e.Prefix.Bits()/64] |= 1 << (e.Prefix.Bits() % 64)
	}
	return x
}

// Len is the number of indexed prefixes.
func (x *Prefixes[T]) Len() int { return len(x.byStart) }

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// Covering returns an indexed prefix that contains p or equals it (for
// which skip is false), the widest first.
func (x *Prefixes[T]) Covering(p netip.Prefix, skip func(T) bool) (PrefixEntry[T], bool) {
	if !p.IsValid() {
		return PrefixEntry[T]{}, false
	}
	p = p.Masked()
	if len(x.byStart) <= smallIndex {
		// Widest first, like the lookups below.
		var best *PrefixEntry[T]
		for i := range x.byStart {
			e := &x.byStart[i]
			if e.Prefix.Bits() <= p.Bits() && e.Prefix.Contains(p.Addr()) && (skip == nil || !skip(e.Val)) &&
				(best == nil || e.Prefix.Bits() < best.Prefix.Bits()) {
				best = e
			}
		}
		if best != nil {
			return *best, true
		}
		return PrefixEntry[T]{}, false
	}
	for b := 0; b <= p.Bits(); b++ {
		if !x.hasLen(b) {
			continue
		}
		q, _ := p.Addr().Prefix(b)
		for _, i := range x.byNet[q] {
			if skip == nil || !skip(x.byStart[i].Val) {
				return x.byStart[i], true
			}
		}
	}
	return PrefixEntry[T]{}, false
}

// Within returns an indexed prefix that lies inside p or equals it (for
// which skip is false), the lowest first. Its cost grows with the skipped
// entries inside p, not with the index.
func (x *Prefixes[T]) Within(p netip.Prefix, skip func(T) bool) (PrefixEntry[T], bool) {
	if !p.IsValid() {
		return PrefixEntry[T]{}, false
	}
	p = p.Masked()
	i, _ := slices.BinarySearchFunc(x.byStart, p.Addr(), func(e PrefixEntry[T], a netip.Addr) int { return e.Prefix.Addr().Compare(a) })
	for ; i < len(x.byStart) && p.Contains(x.byStart[i].Prefix.Addr()); i++ {
		e := x.byStart[i]
		if e.Prefix.Bits() >= p.Bits() && (skip == nil || !skip(e.Val)) {
			return e, true
		}
	}
	return PrefixEntry[T]{}, false
}

// Overlapping returns an indexed prefix that overlaps p (covers it or lies
// within it), for which skip is false.
func (x *Prefixes[T]) Overlapping(p netip.Prefix, skip func(T) bool) (PrefixEntry[T], bool) {
	if len(x.byStart) <= smallIndex && p.IsValid() {
		for _, e := range x.byStart {
			if e.Prefix.Overlaps(p) && (skip == nil || !skip(e.Val)) {
				return e, true
			}
		}
		return PrefixEntry[T]{}, false
	}
	if e, ok := x.Covering(p, skip); ok {
		return e, true
	}
	return x.Within(p, skip)
}

// Containing returns an indexed prefix that contains a (for which skip is
// false).
func (x *Prefixes[T]) Containing(a netip.Addr, skip func(T) bool) (PrefixEntry[T], bool) {
	if !a.IsValid() {
		return PrefixEntry[T]{}, false
	}
	p, _ := a.Prefix(a.BitLen())
	return x.Covering(p, skip)
}

// FirstOverlap returns two of the entries that overlap, if any, in
// O(n log n): sorted by start (then widest first), a prefix overlaps an
// earlier one exactly when it starts before the furthest end seen so far.
// a comes before b in that order.
func FirstOverlap[T any](entries []PrefixEntry[T]) (a, b PrefixEntry[T], ok bool) {
	x := NewPrefixes(entries)
	var far PrefixEntry[T]
	var end netip.Addr
	for i, e := range x.byStart {
		if i > 0 && e.Prefix.Addr().Compare(end) <= 0 {
			return far, e, true
		}
		if last := lastAddr(e.Prefix); i == 0 || last.Compare(end) > 0 {
			far, end = e, last
		}
	}
	return a, b, false
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		switch {
		case bits >= 8:
			bits -= 8
		case bits > 0:
			a[i] |= 0xff >> bits
			bits = 0
		default:
			a[i] = 0xff
		}
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// AddrEntry is an address with what it belongs to.
type AddrEntry[T any] struct {
	Addr netip.Addr
	Val  T
}

// Addrs answers "which indexed address lies in this prefix" and "who else
// has this address" by binary search over the sorted addresses.
type Addrs[T any] struct {
	sorted []AddrEntry[T]
}

// NewAddrs indexes entries (invalid addresses are left out).
func NewAddrs[T any](entries []AddrEntry[T]) *Addrs[T] {
	x := &Addrs[T]{sorted: make([]AddrEntry[T], 0, len(entries))}
	for _, e := range entries {
		if e.Addr.IsValid() {
			x.sorted = append(x.sorted, e)
		}
	}
	slices.SortFunc(x.sorted, func(a, b AddrEntry[T]) int { return a.Addr.Compare(b.Addr) })
	return x
}

// Len is the number of indexed addresses.
func (x *Addrs[T]) Len() int { return len(x.sorted) }

// In returns an indexed address inside p (for which skip is false), the
// lowest first. Its cost grows with the skipped entries inside p.
func (x *Addrs[T]) In(p netip.Prefix, skip func(T) bool) (AddrEntry[T], bool) {
	if !p.IsValid() {
		return AddrEntry[T]{}, false
	}
	p = p.Masked()
	if len(x.sorted) <= smallIndex {
		for _, e := range x.sorted {
			if p.Contains(e.Addr) && (skip == nil || !skip(e.Val)) {
				return e, true
			}
		}
		return AddrEntry[T]{}, false
	}
	i, _ := slices.BinarySearchFunc(x.sorted, p.Addr(), func(e AddrEntry[T], a netip.Addr) int { return e.Addr.Compare(a) })
	for ; i < len(x.sorted) && p.Contains(x.sorted[i].Addr); i++ {
		if skip == nil || !skip(x.sorted[i].Val) {
			return x.sorted[i], true
		}
	}
	return AddrEntry[T]{}, false
}

// Find returns an entry with address a (for which skip is false).
func (x *Addrs[T]) Find(a netip.Addr, skip func(T) bool) (AddrEntry[T], bool) {
	if !a.IsValid() {
		return AddrEntry[T]{}, false
	}
	p, _ := a.Prefix(a.BitLen())
	return x.In(p, skip)
}

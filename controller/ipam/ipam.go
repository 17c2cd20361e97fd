// Package ipam owns address and AS-number allocation: the pure math of
// carving a pool into /30s and of an ASN range, and allocation on the store
// with put-if-absent transactions, so that concurrent controllers sharing
// one etcd never hand out the same /30 or ASN twice (the flannel lease
// pattern, without the lease: allocations live as long as their owner).
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshwan/meshwan/edge/dataplane/validity"
)

// ErrExhausted is returned when a pool has no free entry left.
var ErrExhausted = errors.New("pool exhausted")

// ErrBadPool is returned for a pool that cannot be used.
var ErrBadPool = errors.New("invalid pool")

// Pool30 is an IPv4 prefix carved into /30s, indexed from 0.
type Pool30 struct {
	prefix netip.Prefix
}

// ParsePool30 parses a tunnel pool such as 10.255.0.0/16. It must be IPv4,
// canonical, and hold at least one /30.
func ParsePool30(s string) (Pool30, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Pool30{}, fmt.Errorf("%w: tunnel pool %q is not a CIDR prefix", ErrBadPool, s)
	}
	if !p.Addr().Is4() || p.Bits() > 30 || p.Bits() < 8 {
		return Pool30{}, fmt.Errorf("%w: tunnel pool %q must be an IPv4 prefix between /8 and /30", ErrBadPool, s)
	}
	if p.Masked() != p {
		return Pool30{}, fmt.Errorf("%w: tunnel pool %q has host bits set (did you mean %s?)", ErrBadPool, s, p.Masked())
	}
	if err := validity.LANPrefix(p); err != nil {
		// The /30s are routed between sites like a LAN: loopback,
		// link-local, multicast or reserved space cannot carry them.
		return Pool30{}, fmt.Errorf("%w: tunnel pool: %v", ErrBadPool, err)
	}
	return Pool30{prefix: p}, nil
}

// Prefix is the whole pool.
func (p Pool30) Prefix() netip.Prefix { return p.prefix }

// Size is the number of /30s in the pool.
func (p Pool30) Size() int { return 1 << (30 - p.prefix.Bits()) }

// At returns the i-th /30 of the pool.
func (p Pool30) At(i int) netip.Prefix {
	if i < 0 || i >= p.Size() {
		panic(fmt.Sprintf("ipam: index %d outside a pool of %d", i, p.Size()))
	}
	b := p.prefix.Addr().As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v := base + uint32(i)*4
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 30)
}

// Ends returns the two usable addresses of a /30 as /30 prefixes: the first
// for the tunnel's A end, the second for its B end.
func Ends(p netip.Prefix) (a, b netip.Prefix) {
	first := p.Masked().Addr().Next()
	return netip.PrefixFrom(first, 30), netip.PrefixFrom(first.Next(), 30)
}

// ASNRange is an inclusive range of AS numbers.
type ASNRange struct{ First, Last uint32 }

// ParseASNRange parses "4200000000-4200099999".
func ParseASNRange(s string) (ASNRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	first, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 32)
	last, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 32)
	if !ok || err1 != nil || err2 != nil || first == 0 || first > last {
		return ASNRange{}, fmt.Errorf("%w: ASN pool %q must be FIRST-LAST with 0 < FIRST <= LAST < 2^32", ErrBadPool, s)
	}
	if err := validity.ASNRange(uint32(first), uint32(last)); err != nil {
		// Edges refuse a reserved ASN (edge/dataplane/validity): a pool
		// holding one would sooner or later allocate it.
		return ASNRange{}, fmt.Errorf("%w: ASN pool %q: %v", ErrBadPool, s, err)
	}
	return ASNRange{First: uint32(first), Last: uint32(last)}, nil
}

// Size is the number of ASNs in the range.
func (r ASNRange) Size() int { return int(r.Last-r.First) + 1 }

// Contains reports whether asn is in the range.
func (r ASNRange) Contains(asn uint32) bool { return asn >= r.First && asn <= r.Last }

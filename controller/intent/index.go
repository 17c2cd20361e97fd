package intent

import (
	"fmt"
	"net/netip"

	"github.com/meshwan/meshwan/edge/dataplane/validity"
)

// ref names where an indexed LAN prefix or underlay address comes from:
// positions only (no strings), so that the indexes are pointer-free and
// cheap to sort; names are resolved through Index.sites when an error is
// written.
type ref struct {
	pos int32 // the site's position in the slice given to NewIndex
	i   int32 // index into the site's LANPrefixes or Transports
	// observed marks an address the site's edge reported for a dynamic
	// transport.
	observed bool
}

func (x *Index) site(r ref) string      { return x.sites[r.pos].Name }
func (x *Index) transport(r ref) string { return x.sites[r.pos].Transports[r.i].Name }

func (x *Index) describe(r ref, a netip.Addr) string {
	if r.observed {
		return fmt.Sprintf("%s, the address site %q's edge reports for its dynamic transport %q", a, x.site(r), x.transport(r))
	}
	return fmt.Sprintf("%s, the address of site %q's transport %q", a, x.site(r), x.transport(r))
}

// Index holds the cross-site facts validation needs: every site's LAN
// prefixes, every site's underlay addresses (declared, or observed for a
// dynamic transport: the address the peers' edges receive), and the ASNs,
// sorted for O(log n) queries (validity.Prefixes, validity.Addrs). Built
// in O(n log n); checking one site against it costs O(k log n) for a site
// with k prefixes and transports, so checking every changed site of a
// declaration is O(n log n), never pairwise.
type Index struct {
	sites     []Site
	observed  map[string]map[string]netip.Addr
	lans      *validity.Prefixes[ref]
	underlays []validity.AddrEntry[ref]
	addrs     *validity.Addrs[ref]
	asns      map[uint32][]ref
}

// NewIndex indexes sites. observed (may be nil) holds, per site and
// transport, the addresses edges reported for dynamic transports.
func NewIndex(sites []Site, observed map[string]map[string]netip.Addr) *Index {
	x := &Index{sites: sites, observed: observed, asns: make(map[uint32][]ref, len(sites))}
	var lans []validity.PrefixEntry[ref]
	for pos, s := range sites {
		for i, p := range s.LANPrefixes {
			lans = append(lans, validity.PrefixEntry[ref]{Prefix: p, Val: ref{pos: int32(pos), i: int32(i)}})
		}
		for i, t := range s.Transports {
			if a, obs := x.underlay(s.Name, t); a.IsValid() {
				x.underlays = append(x.underlays, validity.AddrEntry[ref]{Addr: a, Val: ref{pos: int32(pos), i: int32(i), observed: obs}})
			}
		}
		if s.ASN != 0 {
			x.asns[s.ASN] = append(x.asns[s.ASN], ref{pos: int32(pos)})
		}
	}
	x.lans = validity.NewPrefixes(lans)
	x.addrs = validity.NewAddrs(x.underlays)
	return x
}

// underlay is the address the peers of site use for transport t: the
// declared one, or the observed one for a dynamic transport (invalid while
// unknown).
func (x *Index) underlay(site string, t Transport) (netip.Addr, bool) {
	return underlayOf(x.observed, site, t)
}

func underlayOf(observed map[string]map[string]netip.Addr, site string, t Transport) (netip.Addr, bool) {
	if !t.Dynamic {
		return t.Addr, false
	}
	return observed[site][t.Name], true
}

func conflict(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConflict, field, fmt.Sprintf(format, args...))
}

// what describes one of the indexed site's own underlays.
func (x *Index) what(u validity.AddrEntry[ref]) string {
	if u.Val.observed {
		return fmt.Sprintf("%s (reported by this site's edge for a dynamic transport)", u.Addr)
	}
	return u.Addr.String()
}

// checkOwn checks what needs no other site: s's prefixes and addresses
// (observed included) against the tunnel pool, and s's observed addresses
// against its own LANs and other transports. x indexes s alone or holds
// s's own entries under the same name.
func (x *Index) checkOwn(s Site, pool netip.Prefix) error {
	type own struct {
		i   int
		a   netip.Addr
		obs bool
	}
	var owns []own
	for i, t := range s.Transports {
		if a, obs := x.underlay(s.Name, t); a.IsValid() {
			owns = append(owns, own{i, a, obs})
		}
	}
	for i, p := range s.LANPrefixes {
		field := fmt.Sprintf("site.lan_prefixes[%d]", i)
		if pool.IsValid() && p.Overlaps(pool) {
			return conflict(field, "%s overlaps the tunnel pool %s", p, pool)
		}
		for _, o := range owns {
			if o.obs && p.Contains(o.a) {
				return conflict(field, "%s contains %s, the address this site's edge reports for its dynamic transport %q", p, o.a, s.Transports[o.i].Name)
			}
		}
	}
	for _, o := range owns {
		field := fmt.Sprintf("site.transports[%d].address", o.i)
		what := o.a.String()
		if o.obs {
			what = fmt.Sprintf("%s (reported by this site's edge for a dynamic transport)", o.a)
		}
		if pool.IsValid() && pool.Contains(o.a) {
			return conflict(field, "%s is inside the tunnel pool %s", what, pool)
		}
		for _, p := range owns {
			if p.i != o.i && p.a == o.a && (p.obs || o.obs) {
				return conflict(field, "%s is also the address of this site's transport %q", what, s.Transports[p.i].Name)
			}
		}
	}
	return nil
}

// CheckSite checks the clashes that make a network unusable between s (a
// new or changed site) and the indexed sites other than s (by name: the
// index may hold s's previous version): LAN prefixes that overlap between
// sites (routing would be ambiguous), a LAN containing any site's
// underlay address, an underlay address used by another site (tunnels
// could not be told apart) or inside another site's LAN, duplicate ASNs,
// and LAN prefixes or underlay addresses inside the tunnel pool. s's own
// observed addresses are checked too. s must have passed Validate. The
// first problem found is returned, naming the field and the other site;
// clashes wrap ErrConflict.
func (x *Index) CheckSite(s Site, tunnelPool netip.Prefix) error {
	return x.check(s, tunnelPool, func(r ref) bool { return x.site(r) == s.Name })
}

// CheckEarlier checks the site at position pos of the indexed slice
// against the sites before it (a file's order: a clash is reported at the
// later site), ignoring others of the same name.
func (x *Index) CheckEarlier(pos int, tunnelPool netip.Prefix) error {
	s := x.sites[pos]
	return x.check(s, tunnelPool, func(r ref) bool { return int(r.pos) >= pos || x.site(r) == s.Name })
}

func (x *Index) check(s Site, pool netip.Prefix, skip func(ref) bool) error {
	if err := x.checkOwn(s, pool); err != nil {
		return err
	}
	for i, p := range s.LANPrefixes {
		field := fmt.Sprintf("site.lan_prefixes[%d]", i)
		if o, ok := x.lans.Overlapping(p, skip); ok {
			return conflict(field, "%s overlaps %s of site %q", p, o.Prefix, x.site(o.Val))
		}
		if u, ok := x.addrs.In(p, skip); ok {
			return conflict(field, "%s contains %s: its tunnels would be routed into themselves", p, x.describe(u.Val, u.Addr))
		}
	}
	for i, t := range s.Transports {
		a, obs := x.underlay(s.Name, t)
		if !a.IsValid() {
			continue
		}
		field := fmt.Sprintf("site.transports[%d].address", i)
		what := x.what(validity.AddrEntry[ref]{Addr: a, Val: ref{observed: obs}})
		if u, ok := x.addrs.Find(a, skip); ok {
			return conflict(field, "%s is already used by site %q (transport %q)", what, x.site(u.Val), x.transport(u.Val))
		}
		if l, ok := x.lans.Containing(a, skip); ok {
			return conflict(field, "%s is inside %s, a LAN prefix of site %q", what, l.Prefix, x.site(l.Val))
		}
	}
	if s.ASN != 0 {
		for _, r := range x.asns[s.ASN] {
			if !skip(r) {
				return conflict("site.asn", "%d is already used by site %q", s.ASN, x.site(r))
			}
		}
	}
	return nil
}

// CheckObserved checks an address the edge of site reports for its
// dynamic transport: it must be usable as an underlay (validity.Underlay),
// outside the tunnel pool and the transit prefixes, not any other
// transport's address (of any site, the site's own other transports
// included), and inside no site's LAN (its own included). Otherwise the
// peers' edges would refuse the desired states carrying it.
func (x *Index) CheckObserved(site, transport string, a netip.Addr, pool netip.Prefix, t Topology) error {
	field := fmt.Sprintf("site %q transport %q reported address", site, transport)
	if err := validity.Underlay(a); err != nil {
		return invalid(field, "%v", err)
	}
	if pool.IsValid() && pool.Contains(a) {
		return conflict(field, "%s is inside the tunnel pool %s", a, pool)
	}
	if u, ok := x.addrs.Find(a, func(r ref) bool { return x.site(r) == site && x.transport(r) == transport }); ok {
		return conflict(field, "%s is already used by site %q (transport %q)", a, x.site(u.Val), x.transport(u.Val))
	}
	if l, ok := x.lans.Containing(a, nil); ok {
		return conflict(field, "%s is inside %s, a LAN prefix of site %q", a, l.Prefix, x.site(l.Val))
	}
	if len(t.TransitPrefixes) > 0 {
		if p, ok := t.transitIndex().Containing(a, nil); ok {
			return conflict(field, "%s is inside topology.transit_prefixes %s", a, p.Prefix)
		}
	}
	return nil
}

package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/validity"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid desired state")

// FieldError says which field of a Desired is wrong and why. Field is a
// path such as "Tunnels[2](id=t-7).LocalInner".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap lets errors.Is find both ErrInvalid and the cause.
func (e *FieldError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// MinPSKLen is the shortest accepted pre-shared key. The controller makes
// 32 random bytes; 16 is the floor below which we refuse to run.
const MinPSKLen = 16

// MaxIDLen bounds Tunnel.ID: it becomes part of strongSwan connection and
// secret names ("mw-<id>") and of link aliases ("meshwan:<id>", which must
// stay well under the kernel's 256-byte IFALIASZ). The controller's ids
// ("<site>.<transport>~<site>.<transport>", controller/topology.ID) are at
// most 91 bytes.
const MaxIDLen = 100

// Validate checks d before any backend touches the kernel and returns every
// problem found (errors.Join of *FieldError), or nil. Backends call it at
// the start of Apply, so a bad state changes nothing.
//
// The atoms (underlay addresses, LAN prefixes, ASNs, proposals, lifetimes)
// follow edge/dataplane/validity, the rule set the controller validates
// intents with, so a state the controller sends passes here. Rules beyond
// syntax, each one a failure met or foreseen:
//   - the underlay is IPv4 unicast usable on a WAN (validity.Underlay) and
//     both ends differ (the link package builds IPv4 GRE only);
//   - LocalInner is a /30 host address and RemoteInner the other host of
//     the same /30 (seed note 3), and no two tunnels share a /30: the
//     controller gives each tunnel its own /30 from one pool, and the link
//     names (LinkName) are unique per edge only because the /30s are;
//   - tunnel IDs and link names are unique, link names carry LinkPrefix;
//   - local LANs do not overlap each other; no RemoteLAN overlaps a local
//     LAN (except a summary strictly containing it, see below);
//   - no LAN, local or remote, contains a tunnel's underlay address, local
//     or remote, and no underlay lies in a tunnel /30: that would route the
//     GRE packets into a tunnel (recursive routing, the link flaps, or the
//     local uplink's own traffic disappears into the overlay);
//   - no LAN overlaps a tunnel /30 (the /30 routes are the overlay's own);
//   - a PSK is present and at least MinPSKLen bytes;
//   - proposals parse (validity.Proposal), lifetimes and DPD are within
//     validity's bounds (0 means the backend's default), ESP <= IKE.
//
// It runs in O(n log n) in the tunnels and prefixes (hub states have
// thousands of tunnels): cross checks go through validity's indexes.
func (d Desired) Validate() error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}

	if d.Site == "" {
		bad("Site", "empty")
	}
	if d.ASN != 0 {
		if err := validity.ASN(d.ASN); err != nil {
			bad("ASN", "%v", err)
		}
	}
	idx := newCrossIndex(d)
	var locals []validity.PrefixEntry[int]
	for i, p := range d.LANPrefixes {
		f := fmt.Sprintf("LANPrefixes[%d]", i)
		if err := validity.LANPrefix(p); err != nil {
			bad(f, "%v", err)
			continue
		}
		locals = append(locals, validity.PrefixEntry[int]{Prefix: p, Val: i})
		idx.checkLAN(f, p, bad)
	}
	if a, b, ok := validity.FirstOverlap(locals); ok {
		bad(fmt.Sprintf("LANPrefixes[%d]", b.Val), "%v overlaps local LAN %v (LANPrefixes[%d])", b.Prefix, a.Prefix, a.Val)
	}
	localIdx := validity.NewPrefixes(locals)
	for i, n := range d.WANInterfaces {
		if err := ValidLinkName(n); err != nil {
			bad(fmt.Sprintf("WANInterfaces[%d]", i), "%v", err)
		}
	}

	ids := map[string]int{}
	names := map[string]int{}
	nets := map[netip.Prefix]int{} // tunnel /30 -> index+1
	for i, t := range d.Tunnels {
		f := fmt.Sprintf("Tunnels[%d]", i)
		if t.ID != "" {
			f += "(id=" + validity.Clip(t.ID, MaxIDLen) + ")"
		}
		field := func(name string) string { return f + "." + name }

		switch err := checkID(t.ID); {
		case err != nil:
			bad(field("ID"), "%v", err)
		case ids[t.ID] > 0:
			bad(field("ID"), "duplicate of Tunnels[%d]", ids[t.ID]-1)
		default:
			ids[t.ID] = i + 1
		}

		switch {
		case ValidLinkName(t.LinkName) != nil:
			bad(field("LinkName"), "%v", ValidLinkName(t.LinkName))
		case !strings.HasPrefix(t.LinkName, LinkPrefix):
			bad(field("LinkName"), "%s lacks the meshwan prefix %q", validity.Quote(t.LinkName), LinkPrefix)
		case names[t.LinkName] > 0:
			bad(field("LinkName"), "%s duplicates Tunnels[%d]", validity.Quote(t.LinkName), names[t.LinkName]-1)
		default:
			names[t.LinkName] = i + 1
		}

		for _, u := range []struct {
			name string
			a    netip.Addr
		}{{"LocalUnderlay", t.LocalUnderlay}, {"RemoteUnderlay", t.RemoteUnderlay}} {
			if err := validity.Underlay(u.a); err != nil {
				bad(field(u.name), "%v", err)
				continue
			}
			if n, ok := idx.nets.Containing(u.a, nil); ok {
				bad(field(u.name), "%v is inside the tunnel network %v of %s: GRE would route into a tunnel", u.a, n.Prefix, tunnelName(d, n.Val))
			}
		}
		if t.LocalUnderlay.IsValid() && t.LocalUnderlay == t.RemoteUnderlay {
			bad(field("RemoteUnderlay"), "equals LocalUnderlay %v", t.LocalUnderlay)
		}

		checkInner(t, field, bad)
		if li := t.LocalInner; li.IsValid() && li.Addr().Is4() && li.Bits() == 30 {
			if j := nets[li.Masked()]; j > 0 {
				bad(field("LocalInner"), "%v is in the /30 %v of Tunnels[%d]; each tunnel has its own /30", li, li.Masked(), j-1)
			} else {
				nets[li.Masked()] = i + 1
			}
		}

		if t.MTU != 0 && (t.MTU < MinMTU || t.MTU > MaxMTU) {
			bad(field("MTU"), "%d outside [%d, %d] (0 means %d)", t.MTU, MinMTU, MaxMTU, DefaultMTU)
		}
		if t.RemoteASN != 0 {
			if err := validity.ASN(t.RemoteASN); err != nil {
				bad(field("RemoteASN"), "%v", err)
			}
		}

		for j, p := range t.RemoteLANs {
			lf := field(fmt.Sprintf("RemoteLANs[%d]", j))
			if err := validity.LANPrefix(p); err != nil {
				bad(lf, "%v", err)
				continue
			}
			// A summary that strictly contains a local LAN (a hub-and-
			// spoke transit prefix) is fine: the local LAN is more
			// specific, so local traffic stays local. Anything else
			// overlapping a local LAN covers (or equals) p.
			if l, ok := localIdx.Covering(p, nil); ok {
				bad(lf, "%v overlaps local LAN %v", p, l.Prefix)
			}
			idx.checkLAN(lf, p, bad)
		}

		if len(t.PSK) < MinPSKLen {
			// Never print the key, only its length.
			bad(field("PSK"), "%d bytes, want at least %d", len(t.PSK), MinPSKLen)
		}
		checkAcceptKeys(t, field, bad)
		checkIPsec(t.IPsec, func(name string) string { return field("IPsec." + name) }, bad)
	}
	if !d.Paths.Disabled || len(d.Paths.Classes) > 0 {
		for _, e := range d.Paths.Problems() {
			bad("Paths."+e.Field, "%s", e.Msg)
		}
	}
	return errors.Join(errs...)
}

// underlayRef names one end of one tunnel.
type underlayRef struct {
	tunnel int
	local  bool
}

// crossIndex holds what every LAN is checked against: every tunnel's
// underlay addresses (both ends) and tunnel /30s.
type crossIndex struct {
	d         Desired
	underlays *validity.Addrs[underlayRef]
	nets      *validity.Prefixes[int]
}

func newCrossIndex(d Desired) crossIndex {
	us := make([]validity.AddrEntry[underlayRef], 0, 2*len(d.Tunnels))
	ns := make([]validity.PrefixEntry[int], 0, len(d.Tunnels))
	for i, t := range d.Tunnels {
		us = append(us, validity.AddrEntry[underlayRef]{Addr: t.LocalUnderlay, Val: underlayRef{i, true}},
			validity.AddrEntry[underlayRef]{Addr: t.RemoteUnderlay, Val: underlayRef{i, false}})
		if li := t.LocalInner; li.IsValid() && li.Addr().Is4() && li.Bits() == 30 {
			ns = append(ns, validity.PrefixEntry[int]{Prefix: li.Masked(), Val: i})
		}
	}
	return crossIndex{d: d, underlays: validity.NewAddrs(us), nets: validity.NewPrefixes(ns)}
}

// checkLAN refuses a LAN (local or remote) that contains an underlay
// address or overlaps a tunnel /30.
func (x crossIndex) checkLAN(field string, p netip.Prefix, bad func(string, string, ...any)) {
	if u, ok := x.underlays.In(p, nil); ok {
		end := "remote"
		if u.Val.local {
			end = "local"
		}
		bad(field, "%v contains the %s underlay address %v of %s: GRE would route into itself", p, end, u.Addr, tunnelName(x.d, u.Val.tunnel))
	}
	if n, ok := x.nets.Overlapping(p, nil); ok {
		bad(field, "%v overlaps the tunnel network %v of %s", p, n.Prefix, tunnelName(x.d, n.Val))
	}
}

func tunnelName(d Desired, i int) string {
	return fmt.Sprintf("tunnel %s", validity.Quote(d.Tunnels[i].ID))
}

func checkInner(t Tunnel, field func(string) string, bad func(string, string, ...any)) {
	li := t.LocalInner
	switch {
	case !li.IsValid():
		bad(field("LocalInner"), "missing")
		return
	case !li.Addr().Is4():
		bad(field("LocalInner"), "%v is not IPv4", li)
		return
	case li.Bits() != 30:
		bad(field("LocalInner"), "%v: the tunnel network must be a /30", li)
		return
	}
	net := li.Masked()
	hosts := func(a netip.Addr) bool { return net.Contains(a) && a != net.Addr() && a != LastAddr(net) }
	if !hosts(li.Addr()) {
		bad(field("LocalInner"), "%v is the network or broadcast address of %v", li.Addr(), net)
	}
	switch ri := t.RemoteInner; {
	case !ri.IsValid():
		bad(field("RemoteInner"), "missing")
	case !net.Contains(ri):
		bad(field("RemoteInner"), "%v is outside the tunnel network %v", ri, net)
	case ri == li.Addr():
		bad(field("RemoteInner"), "%v equals LocalInner", ri)
	case !hosts(ri):
		bad(field("RemoteInner"), "%v is the network or broadcast address of %v", ri, net)
	}
}

func checkIPsec(p IPsecPolicy, field func(string) string, bad func(string, string, ...any)) {
	for _, s := range []struct {
		name string
		kind validity.Kind
		v    string
	}{{"IKEProposal", validity.IKE, p.IKEProposal}, {"ESPProposal", validity.ESP, p.ESPProposal}} {
		if s.v == "" {
			continue // the backend's default
		}
		if err := validity.Proposal(s.kind, s.v); err != nil {
			bad(field(s.name), "%v", err)
		}
	}
	for _, d := range []struct {
		name  string
		v     time.Duration
		check func(time.Duration) error
	}{{"IKELifetime", p.IKELifetime, validity.IKELifetime}, {"ESPLifetime", p.ESPLifetime, validity.ESPLifetime}, {"DPDInterval", p.DPDInterval, validity.DPD}} {
		if d.v == 0 {
			continue // the backend's default
		}
		if err := d.check(d.v); err != nil {
			bad(field(d.name), "%v", err)
		}
	}
	if p.IKELifetime != 0 && p.ESPLifetime != 0 {
		if err := validity.ESPWithinIKE(p.ESPLifetime, p.IKELifetime); err != nil {
			bad(field("ESPLifetime"), "%v", err)
		}
	}
}

// checkID accepts [A-Za-z0-9._~-]{1,MaxIDLen}, which covers the
// controller's ids: the ID ends up in strongSwan names and link aliases,
// where white space or quotes would hurt.
func checkID(id string) error {
	if id == "" {
		return errors.New("empty")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%d bytes, at most %d", len(id), MaxIDLen)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '~') {
			return fmt.Errorf("%q contains %q", id, c)
		}
	}
	return nil
}

// LastAddr is the highest address of an IPv4 prefix (its broadcast
// address for /30 and shorter).
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= ^uint32(0) >> p.Bits() // a shift by 32 is 0 in Go: a /32 stays itself
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

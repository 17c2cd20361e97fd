package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Backend is what every data-plane sub-package provides. Apply may be
// called again with an identical Desired and must then change nothing;
// Cleanup removes everything the backend ever created and nothing else.
type Backend interface {
	Apply(ctx context.Context, d Desired) error
	Cleanup(ctx context.Context) error
}

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
// Rules beyond syntax, each one a failure met or foreseen:
//   - the underlay is IPv4 and both ends differ (the link package builds
//     IPv4 GRE only);
//   - LocalInner is a /30 host address and RemoteInner the other host of
//     the same /30 (seed note 3), and no two tunnels share a /30: the
//     controller gives each tunnel its own /30 from one pool, and the link
//     names (LinkName) are unique per edge only because the /30s are;
//   - tunnel IDs and link names are unique, link names carry LinkPrefix;
//   - no RemoteLAN overlaps a local LAN prefix, and no RemoteLAN contains a
//     tunnel's RemoteUnderlay: that would route the GRE packets into the
//     tunnel itself (recursive routing, the link flaps);
//   - a PSK is present and at least MinPSKLen bytes.
func (d Desired) Validate() error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}

	if d.Site == "" {
		bad("Site", "empty")
	}
	for i, p := range d.LANPrefixes {
		if err := checkPrefix(p); err != nil {
			bad(fmt.Sprintf("LANPrefixes[%d]", i), "%v", err)
		}
	}
	for i, n := range d.WANInterfaces {
		if err := ValidLinkName(n); err != nil {
			bad(fmt.Sprintf("WANInterfaces[%d]", i), "%v", err)
		}
	}

	ids := map[string]int{}
	names := map[string]int{}
	nets := map[netip.Prefix]int{} // tunnel /30 -> index+1
	underlays := newUnderlayIndex(d.Tunnels)
	for i, t := range d.Tunnels {
		f := fmt.Sprintf("Tunnels[%d]", i)
		if t.ID != "" {
			f += "(id=" + t.ID + ")"
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
			bad(field("LinkName"), "%q lacks the meshwan prefix %q", t.LinkName, LinkPrefix)
		case names[t.LinkName] > 0:
			bad(field("LinkName"), "%q duplicates Tunnels[%d]", t.LinkName, names[t.LinkName]-1)
		default:
			names[t.LinkName] = i + 1
		}

		for _, u := range []struct {
			name string
			a    netip.Addr
		}{{"LocalUnderlay", t.LocalUnderlay}, {"RemoteUnderlay", t.RemoteUnderlay}} {
			switch {
			case !u.a.IsValid():
				bad(field(u.name), "missing")
			case !u.a.Is4():
				bad(field(u.name), "%v is not IPv4 (only IPv4 underlays are supported)", u.a)
			case u.a.IsUnspecified() || u.a.IsMulticast():
				bad(field(u.name), "%v is not a unicast address", u.a)
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

		for j, p := range t.RemoteLANs {
			lf := field(fmt.Sprintf("RemoteLANs[%d]", j))
			if err := checkPrefix(p); err != nil {
				bad(lf, "%v", err)
				continue
			}
			for _, l := range d.LANPrefixes {
				// A summary that strictly contains a local LAN (a hub-and-
				// spoke transit prefix) is fine: the local LAN is more
				// specific, so local traffic stays local.
				summary := p.Bits() < l.Bits() && p.Contains(l.Addr())
				if l.IsValid() && p.Overlaps(l) && !summary {
					bad(lf, "%v overlaps local LAN %v", p, l)
				}
			}
			if u, ok := underlays.inside(p); ok {
				bad(lf, "%v contains the underlay address %v of tunnel %q: GRE would route into itself", p, u.addr, u.id)
			}
		}

		if len(t.PSK) < MinPSKLen {
			// Never print the key, only its length.
			bad(field("PSK"), "%d bytes, want at least %d", len(t.PSK), MinPSKLen)
		}
		checkAcceptKeys(t, field, bad)
		checkIPsec(t.IPsec, func(name string) string { return field("IPsec." + name) }, bad)
	}
	if !d.Paths.Disabled || len(d.Paths.Classes) > 0 {
		d.Paths.WithDefaults().validate(bad)
	}
	return errors.Join(errs...)
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
	for _, s := range []struct{ name, v string }{{"IKEProposal", p.IKEProposal}, {"ESPProposal", p.ESPProposal}} {
		for _, c := range s.v {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == ',') {
				bad(field(s.name), "%q has %q; want strongSwan proposal syntax like aes256-sha256-modp2048", s.v, c)
				break
			}
		}
	}
	for _, d := range []struct {
		name string
		v    int64
	}{{"IKELifetime", int64(p.IKELifetime)}, {"ESPLifetime", int64(p.ESPLifetime)}, {"DPDInterval", int64(p.DPDInterval)}} {
		if d.v < 0 {
			bad(field(d.name), "negative")
		}
	}
}

// checkPrefix accepts a valid, masked IPv4 prefix.
func checkPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("invalid prefix")
	case !p.Addr().Is4():
		return fmt.Errorf("%v is not IPv4", p)
	case p != p.Masked():
		return fmt.Errorf("%v has host bits set (want %v)", p, p.Masked())
	}
	return nil
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

type underlay struct {
	addr netip.Addr
	id   string
}

// underlayIndex answers "does this prefix contain a tunnel's remote
// underlay address" in O(log n), so validating a hub's state with
// thousands of tunnels stays O(n log n).
type underlayIndex []underlay

func newUnderlayIndex(ts []Tunnel) underlayIndex {
	out := make(underlayIndex, 0, len(ts))
	for _, t := range ts {
		if t.RemoteUnderlay.IsValid() {
			out = append(out, underlay{t.RemoteUnderlay, t.ID})
		}
	}
	slices.SortFunc(out, func(a, b underlay) int { return a.addr.Compare(b.addr) })
	return out
}

// inside returns an underlay address inside p, if any.
func (x underlayIndex) inside(p netip.Prefix) (underlay, bool) {
	i, _ := slices.BinarySearchFunc(x, p.Masked().Addr(), func(u underlay, a netip.Addr) int { return u.addr.Compare(a) })
	if i < len(x) && p.Contains(x[i].addr) {
		return x[i], true
	}
	return underlay{}, false
}

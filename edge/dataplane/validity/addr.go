package validity

import (
	"errors"
	"fmt"
	"net/netip"
)

// special is a range no underlay may lie in and no LAN may overlap.
type special struct {
	p    netip.Prefix
	name string
}

// Specials are the IPv4 ranges that cannot be a WAN endpoint nor a routed
// LAN (RFC 6890 and RFC 5735).
var specials = []special{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (0.0.0.0/8)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (127.0.0.0/8)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.0.0/16)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224.0.0.0/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (240.0.0.0/4, incl. broadcast 255.255.255.255)"},
}

// Underlay checks an address used as a tunnel endpoint on a WAN.
func Underlay(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("missing")
	case !a.Is4():
		return fmt.Errorf("%v is not IPv4 (only IPv4 underlays are supported)", a)
	}
	for _, s := range specials {
		if s.p.Contains(a) {
			return fmt.Errorf("%v is in the %s range and cannot be a tunnel endpoint", a, s.name)
		}
	}
	return nil
}

// LANPrefix checks a prefix routed between sites: a site's LAN, a transit
// summary, a remote LAN.
func LANPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("not a valid prefix")
	case !p.Addr().Is4():
		return fmt.Errorf("%v: only IPv4 prefixes are supported", p)
	case p.Masked() != p:
		return fmt.Errorf("%v has host bits set (did you mean %v?)", p, p.Masked())
	case p.Bits() == 0:
		return fmt.Errorf("%v: a default route is not a LAN prefix", p)
	}
	for _, s := range specials {
		if s.p.Overlaps(p) {
			return fmt.Errorf("%v overlaps the %s range, which is never routed between sites", p, s.name)
		}
	}
	return nil
}

package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
)

// LinkPrefix starts the name of every kernel link meshwan creates. Names
// with this prefix are reserved for meshwan on an edge: the link package
// manages every link it is asked for by name, and the firewall matches
// tunnel traffic with the wildcard "mw-*". Links named by the older,
// site-based scheme carry the same prefix, so the wildcard and the link
// package's ownership test cover them until they are renamed.
const LinkPrefix = "mw-"

// MaxLinkNameLen is the longest Linux interface name (IFNAMSIZ-1).
const MaxLinkNameLen = 15

// MaxAltNameLen is the longest alternative interface name (ALTIFNAMSIZ-1).
const MaxAltNameLen = 127

// LinkName returns the GRE interface name of the tunnel whose local inner
// address is localInner: LinkPrefix and the index of the tunnel's /30 in
// the IPv4 space (its network address shifted right by 2) as 8 lowercase
// hex digits, e.g. 10.255.0.5/30 -> "mw-02bfc001" (always 11 bytes).
//
// The name is unique per edge by construction, at any number of tunnels:
// distinct /30s have distinct indexes, and Desired.Validate refuses two
// tunnels whose LocalInner share a /30 (the controller allocates each
// tunnel its own /30 from one pool). It is a pure function of a field
// the desired state already carries, so nothing new is stored. The
// readable form lives on as the link's altname (LinkAltName) and alias
// ("meshwan:<tunnel id>"). Only the address is used (its low two bits
// are dropped), so any host address of the /30 gives the same name; it
// returns "" for anything but an IPv4 address, which Validate refuses.
func LinkName(localInner netip.Prefix) string {
	a := localInner.Addr()
	if !a.Is4() {
		return ""
	}
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	return fmt.Sprintf("%s%08x", LinkPrefix, v>>2)
}

// LinkAltName returns the readable alternative name a tunnel's link gets
// (IFLA_ALT_IFNAME, `ip link property add DEV altname NAME`):
// "mw-<remote site>-<local transport>-<remote transport>", e.g.
// "mw-spoke-00370-inet-lte". For every link the older scheme named
// readably, this is that old name, so `ip link show mw-par-inet-lte` keeps
// working after the upgrade. It returns "" when a part is empty or the
// result is not a valid altname (over MaxAltNameLen bytes, or a
// character the kernel refuses).
//
// Unlike LinkName it is not unique by construction: controller names may
// contain '-', so "a-b"/"c" and "a"/"b-c" meet in "mw-a-b-c-...". Names
// and altnames share one namespace in the kernel, so the link package
// gives a contested altname to the first link only, and a missing
// altname costs nothing but readability (the alias still names the
// tunnel).
func LinkAltName(remoteSite, localTransport, remoteTransport string) string {
	if remoteSite == "" || localTransport == "" || remoteTransport == "" {
		return ""
	}
	n := LinkPrefix + remoteSite + "-" + localTransport + "-" + remoteTransport
	if validName(n, MaxAltNameLen) != nil {
		return ""
	}
	return n
}

// ValidLinkName reports why name cannot be a Linux interface name, using
// the kernel's own rules (dev_valid_name): 1 to 15 bytes, not "." or "..",
// no '/', ':' or white space. '%' is refused too: the kernel treats it as
// a template ("mw-%d").
func ValidLinkName(name string) error {
	return validName(name, MaxLinkNameLen)
}

func validName(name string, max int) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > max:
		return fmt.Errorf("interface name %q is %d bytes, the kernel allows %d", name, len(name), max)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is reserved", name)
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c == '%' || c <= ' ' || c == 0x7f {
			return fmt.Errorf("interface name %q contains %q", name, c)
		}
	}
	return nil
}

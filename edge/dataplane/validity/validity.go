// Package validity is the one set of rules about what a meshwan network may
// contain, used by both sides: the controller (controller/intent, network)
// refuses an intent that breaks them, and the edge (dataplane.Desired.Validate)
// refuses a desired state that breaks them. Because both call the same
// functions, the controller never commits an intent, nor sends a state, that
// an edge would refuse as a whole (issue 11).
//
// It is pure and depends on the standard library only, so the edge binary
// can link it without pulling controller code.
//
// The rules, each one a failure met or foreseen:
//
//   - Underlay (a WAN/transport address GRE and IKE run between): IPv4
//     unicast usable across a WAN. Refused: 0.0.0.0/8 ("this network",
//     incl. 0.0.0.0), 127.0.0.0/8 (loopback), 169.254.0.0/16 (link-local),
//     224.0.0.0/4 (multicast), 240.0.0.0/4 (reserved, incl. the broadcast
//     255.255.255.255). Private (RFC 1918) and shared/CGNAT (100.64.0.0/10)
//     addresses are allowed: MPLS and LTE underlays use them.
//   - LANPrefix (a site's LAN, a transit summary, a remote LAN an edge
//     routes into a tunnel): a valid, masked IPv4 prefix, not /0, that
//     overlaps none of the special ranges above (routing them into a tunnel
//     is meaningless at best).
//   - ASN: not 0, 23456 (AS_TRANS), 64496-64511 and 65536-65551
//     (documentation), 65535 and 4294967295 (reserved last ASNs),
//     65552-131071 (reserved): the IANA special-purpose AS registry.
//   - Proposal: strongSwan proposal syntax, checked keyword by keyword
//     against the algorithms strongSwan 5.9 knows, with the combinations it
//     requires, minus the ones meshwan refuses as weak (see proposal.go).
//   - Durations: IKE lifetime 10 min-7 d, ESP lifetime 5 min-24 h and not
//     longer than the IKE lifetime, DPD interval 5 s-1 h. Zero means "the
//     default" wherever a caller allows it (the intent and the edge's
//     IPsecPolicy do); these functions check non-zero values.
//
// The cross-object rules ("does any LAN contain this address", "do two LANs
// overlap") are answered by the indexes in index.go in O(log n) per query,
// so validating a network of thousands of sites, or a hub's state of
// thousands of tunnels, is O(n log n), never pairwise.
//
// Errors say what is wrong without a field name (callers know the field)
// and never quote more than MaxQuote bytes of their input.
package validity

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxQuote bounds how much of a caller's input an error message quotes:
// a 10 MB name must not become a 10 MB error.
const MaxQuote = 64

// Quote returns s quoted like %q, cut to at most MaxQuote bytes of s (on a
// rune boundary) with the full length noted when cut.
func Quote(s string) string {
	if len(s) <= MaxQuote {
		return strconv.Quote(s)
	}
	return strconv.Quote(Clip(s, MaxQuote)) + fmt.Sprintf("...(%d bytes)", len(s))
}

// Clip returns at most n bytes of s, cut on a rune boundary.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

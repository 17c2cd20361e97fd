// Package export renders the configuration an operator enters on an
// unmanaged site's router (a third-party router: no meshwan-edge runs
// there) from the controller's domain types: the site, its tunnels with
// both ends, their /30s and pre-shared keys, the ASNs, the remote LANs,
// and the topology's IPsec policy, MTU and routing mode. It is pure: no
// I/O, no clock; the same input renders the same bytes (golden tests).
//
// Two formats:
//   - Linux: strongSwan swanctl.conf, an iproute2 shell script (GRE links,
//     addresses, MTU, static routes), an nftables ruleset and, with BGP
//     routing, an FRR frr.conf. They mirror what a meshwan edge installs
//     (edge/dataplane/ipsec/messages.go, edge/dataplane/firewall), so the
//     two ends agree on identities, proposals, lifetimes and traffic
//     selectors by construction.
//   - RansNet: the mbox CLI of the seed recipe (interface tunN, ip route,
//     firewall-snat exempt, firewall-access, ipsec ike-policy, esp-policy,
//     peer), with meshwan's strongSwan proposals mapped to the mbox's
//     keywords (MboxPolicy); a proposal the mbox cannot express is refused.
//
// Every rendered file holds pre-shared keys: callers must treat the result
// as a secret (the API audits every export; meshwanctl writes 0600).
package export

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/controller/intent"
)

// ErrInvalid: the input cannot be rendered in the asked format (a proposal
// the format cannot express, a site shape it cannot hold). The message
// names the field.
var ErrInvalid = errors.New("cannot export")

// Format is an export format.
type Format int

const (
	Linux Format = iota + 1
	RansNet
)

func (f Format) String() string {
	switch f {
	case Linux:
		return "linux"
	case RansNet:
		return "ransnet"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// Tunnel is one tunnel seen from the exported (unmanaged) end.
type Tunnel struct {
	ID              string
	LocalTransport  string
	LocalUnderlay   netip.Addr
	RemoteSite      string
	RemoteTransport string
	RemoteUnderlay  netip.Addr
	// LocalInner is this end's address on the tunnel's /30 (with the /30
	// length); RemoteInner the far end's.
	LocalInner  netip.Prefix
	RemoteInner netip.Addr
	RemoteASN   uint32
	// RemoteLANs are the prefixes routed through this tunnel: the far
	// site's LANs, plus transit summaries or other spokes' LANs when the
	// far end is this spoke's first hub (as a managed spoke gets them).
	RemoteLANs []netip.Prefix
	// PSK is the tunnel's pre-shared key. Never log it.
	PSK []byte
	// Initiates: this end initiates IKE (and keeps the tunnel up); false
	// when the far end does, and this end only responds or lets its own
	// GRE traffic trigger negotiation, as a passive meshwan edge does.
	Initiates bool
}

// Input is everything one export needs.
type Input struct {
	Site     intent.Site
	Topology intent.Topology // defaults are filled in by Render
	Tunnels  []Tunnel
	// Version is the intent revision the input was read at; it is written
	// in every file's header.
	Version int64
}

// File is one rendered file.
type File struct {
	Name    string
	Content string
}

// Render renders in in format f. Tunnels are rendered in id order
// whatever order in holds them in.
func Render(f Format, in Input) ([]File, error) {
	in.Topology = in.Topology.WithDefaults()
	in.Tunnels = slices.Clone(in.Tunnels)
	slices.SortFunc(in.Tunnels, func(a, b Tunnel) int { return strings.Compare(a.ID, b.ID) })
	for i, t := range in.Tunnels {
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("%w: tunnels[%d] (%s): %v", ErrInvalid, i, t.ID, err)
		}
	}
	switch f {
	case Linux:
		return renderLinux(in)
	case RansNet:
		return renderRansNet(in)
	}
	return nil, fmt.Errorf("%w: format: %d is not linux or ransnet", ErrInvalid, int(f))
}

func (t Tunnel) check() error {
	switch {
	case !t.LocalUnderlay.Is4() || !t.RemoteUnderlay.Is4():
		return errors.New("both underlay addresses must be IPv4 (a dynamic far end has not reported its address yet)")
	case !t.LocalInner.Addr().Is4() || !t.RemoteInner.Is4() || !t.LocalInner.Contains(t.RemoteInner):
		return errors.New("inner addresses must be the two ends of one IPv4 /30")
	case len(t.PSK) == 0:
		return errors.New("no pre-shared key")
	}
	return nil
}

// header is the comment block every file starts with; c is the comment
// marker of the file's syntax.
// secret says whether the file holds keys.
func header(c string, in Input, what string, secret bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s for unmanaged site %q, rendered by meshwan from intent revision %d.\n", c, what, in.Site.Name, in.Version)
	if secret {
		fmt.Fprintf(&b, "%s It holds pre-shared keys: keep it readable by root only.\n", c)
	}
	fmt.Fprintf(&b, "%s Re-export after any change to the site, its peers or the topology (meshwanctl site export %s).\n", c, in.Site.Name)
	return b.String()
}

// Package dataplane owns the edge's desired network state as domain types
// and the contract every kernel/daemon backend follows: Apply(ctx, desired)
// is declarative and idempotent — it compares desired with what exists,
// changes only the difference, and running it twice changes nothing.
//
// The backends live in sub-packages, each behind a narrow interface to the
// thing it drives: link (GRE links, addresses, routes via netlink), ipsec
// (strongSwan over VICI) and firewall (nftables). Nothing here knows about
// protobuf: the agent converts the controller's DesiredState once.
package dataplane

import (
	"net/netip"
	"time"
)

// Tunnel is one GRE-over-IPsec tunnel seen from this edge.
type Tunnel struct {
	// ID is the controller's tunnel id, stable for the tunnel's life.
	ID string
	// LinkName is the kernel GRE interface name (at most 15 bytes).
	LinkName string
	// LocalUnderlay and RemoteUnderlay are the public (WAN) addresses GRE
	// and IKE run between.
	LocalUnderlay  netip.Addr
	RemoteUnderlay netip.Addr
	// PublicUnderlay, when valid, is the address the peer knows this end
	// by, a NAT translating LocalUnderlay (then this end's interface
	// address) to it: IKE identifies this end by it. See Localize.
	PublicUnderlay netip.Addr
	// LocalInner is this end's address on the tunnel /30 (10.255.0.1/30);
	// RemoteInner is the far end's (10.255.0.2).
	LocalInner  netip.Prefix
	RemoteInner netip.Addr
	// MTU of the GRE link.
	MTU int
	// RemoteSite and RemoteLANs: static routes to RemoteLANs go via
	// RemoteInner over this link (when BGP does not do it).
	RemoteSite string
	RemoteLANs []netip.Prefix
	// RouteMetric is the kernel priority (metric) of the static routes to
	// RemoteLANs. Tunnels to one site over several transports usually
	// list the same RemoteLANs, and the kernel keeps one route per
	// (prefix, metric), so give them different metrics for
	// primary/backup. When they are equal the planner breaks the tie by
	// tunnel id order (see plan.StaticRoutes). 0 is a valid metric.
	RouteMetric uint32
	// PSK is the IKE pre-shared key (32 random bytes). Never log it.
	PSK []byte
	// AcceptPSKs are keys this end also accepts from the peer but never
	// authenticates with: the new key while a rotation is staged, the old
	// one once it is committed (make-before-break). Never log them.
	AcceptPSKs [][]byte
	// PSKSerial names the key set (PSK + AcceptPSKs); the edge reports the
	// serial whose keys charon has loaded, and the controller advances a
	// rotation only when both ends have. 0: not given (an old controller).
	PSKSerial uint64
	// IPsec holds the proposals and lifetimes.
	IPsec IPsecPolicy
	// Passive: this end never initiates IKE on its own; it only responds,
	// or initiates when its own GRE traffic hits the trap policy. Exactly
	// one end of a tunnel is passive (the controller's B end), because two
	// ends initiating at the same moment create duplicate SAs.
	Passive bool
	// RemoteASN is the far site's BGP AS number.
	RemoteASN uint32
	// LocalTransport and RemoteTransport name the WAN transports the
	// tunnel joins ("inet1"); SLA classes prefer tunnels by them.
	LocalTransport, RemoteTransport string
	// RemoteUnmanaged: the far end is a third-party router (an unmanaged
	// site) that answers no probes. The tunnel is never probed; it is
	// usable while its outbound IPsec SA is installed (with the same
	// hold-down after a recovery).
	RemoteUnmanaged bool
}

// IPsecPolicy is the IKE/ESP parameter set of a tunnel, in strongSwan
// proposal syntax.
type IPsecPolicy struct {
	IKEProposal string        // e.g. "aes256-sha256-modp2048"
	IKELifetime time.Duration // e.g. 8h
	ESPProposal string        // e.g. "aes256gcm16-modp2048"
	ESPLifetime time.Duration // e.g. 1h
	DPDInterval time.Duration // e.g. 30s
}

// Desired is the whole state one edge must realise.
type Desired struct {
	Site        string
	LANPrefixes []netip.Prefix
	// WANInterfaces are the interfaces facing the underlay; SNAT exemption
	// and IKE/ESP/GRE permits are attached to them. Empty means "any".
	WANInterfaces []string
	Tunnels       []Tunnel
	// ASN is this site's BGP AS number; BGP says whether routes are learned
	// over eBGP on each tunnel (true) or installed statically from each
	// tunnel's RemoteLANs (false).
	ASN uint32
	BGP bool
	// Paths is the probing, failover and steering policy.
	Paths PathPolicy
}

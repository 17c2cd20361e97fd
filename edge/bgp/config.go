package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
)

// ErrInvalid marks a Config or Desired that cannot be applied; it is
// wrapped with the reason.
var ErrInvalid = errors.New("bgp: invalid configuration")

// ErrStopped is returned by calls on a stopped Speaker.
var ErrStopped = errors.New("bgp: speaker stopped")

// Defaults, chosen for BGP over GRE/IPsec tunnels across the Internet.
const (
	// DefaultHoldTime and DefaultKeepAlive: a tunnel whose far end died is
	// noticed after at most 9 s (three lost keepalives) instead of the
	// 90 s of GoBGP's default. 3 s is the smallest hold time RFC 4271
	// allows, 9 s keeps a margin for the odd lost packet over the
	// Internet. BGP timers are not the failover mechanism: the steering
	// layer probes every tunnel sub-second and moves traffic away from a
	// dead path without waiting for BGP (see docs/architecture.md). Also
	// note that with graceful restart enabled GoBGP treats a hold-timer
	// expiry like a restart (its routes stay, marked stale, for up to the
	// peer's restart time; see README.md).
	DefaultHoldTime  = 9 * time.Second
	DefaultKeepAlive = 3 * time.Second
	// DefaultRestartTime is the graceful-restart time we advertise: how
	// long peers keep our routes after our session dropped without a
	// NOTIFICATION (agent crash or restart). It also bounds how long a
	// restarted speaker's RIB is Holding (see README.md).
	DefaultRestartTime = 120 * time.Second
	// RouteMetric is the kernel priority the owner gives the routes
	// chosen from the RIB. It differs from the static routes' (metric 0
	// and up) so the two never share a (prefix, metric) key; 20 echoes
	// the administrative distance routers give eBGP.
	RouteMetric = 20
	// DefaultResyncInterval is how often the RIB is published even
	// without a BGP event: a lost event delays a change by at most this.
	DefaultResyncInterval = 10 * time.Second
	// connectRetry replaces GoBGP's 120 s connect-retry: GoBGP waits
	// between one and two intervals before each new active attempt, and a
	// tunnel that comes back should carry routes within seconds.
	connectRetry = 5 * time.Second
	// deferralTime bounds how long a restarting speaker holds back its
	// own updates while waiting for its peers' End-of-RIB markers.
	deferralTime = 60 * time.Second
)

// Config is fixed for a Speaker's life.
type Config struct {
	// ASN is the site's AS number (the controller allocates private
	// 4-byte ASNs, 4200000000-4200099999; see README.md).
	ASN uint32
	// RouterID is the BGP identifier, an IPv4 address unique in the
	// overlay (the agent uses the site's first LAN address or a tunnel
	// address).
	RouterID netip.Addr
	// ListenPort is the TCP port for incoming sessions: 0 means 179, -1
	// means do not listen (then every neighbor must be active).
	ListenPort int32
	// ListenAddrs restricts the listener to these addresses; empty means
	// all (GoBGP's default 0.0.0.0 and ::). Unknown peers are refused by
	// GoBGP either way.
	ListenAddrs []netip.Addr
	// Logger receives the speaker's log lines; nil discards. GoBGP's own
	// lines go to it too, with component=gobgp.
	Logger *slog.Logger
	// GoBGPLogLevel is the lowest level of GoBGP's own lines that is
	// passed on; nil means slog.LevelWarn. Two harmless GoBGP warnings are
	// always demoted to debug (see gobgplog.go).
	GoBGPLogLevel slog.Leveler

	// OnRIB receives a fresh RIB (nothing in it is shared with the
	// speaker or with an earlier RIB) at start, after every GoBGP
	// best-path, End-of-RIB or peer event and every Apply (coalesced),
	// every ResyncInterval, and when the restart hold ends. It is called
	// from the speaker's own goroutine, one call at a time, never with
	// the speaker's mutex held and never after Stop returned. It must be
	// cheap (store the RIB in a newest-wins slot) and must not call Stop.
	// nil: nothing is published (a speaker that only speaks BGP).
	OnRIB func(RIB)
	// Restarting: the agent restarted while the kernel kept forwarding
	// (the owner found BGP routes of ours in the kernel at start). Peers
	// added within RestartTime get the Restart State bit, and published
	// RIBs are Holding until every tunnel peer has sent its End-of-RIB or
	// RestartTime has passed.
	Restarting bool
	// RestartTime is the graceful-restart time; 0 means
	// DefaultRestartTime.
	RestartTime time.Duration
	// ResyncInterval is the period of publishing the RIB without an
	// event; 0 means DefaultResyncInterval.
	ResyncInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.RestartTime == 0 {
		c.RestartTime = DefaultRestartTime
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.ASN == 0:
		return fmt.Errorf("%w: ASN is 0", ErrInvalid)
	case !c.RouterID.Is4():
		return fmt.Errorf("%w: router id %v is not an IPv4 address", ErrInvalid, c.RouterID)
	case c.ListenPort < -1 || c.ListenPort > 65535:
		return fmt.Errorf("%w: listen port %d", ErrInvalid, c.ListenPort)
	case c.RestartTime < 0 || c.RestartTime > 4095*time.Second:
		// The capability carries 12 bits of seconds.
		return fmt.Errorf("%w: restart time %v out of 0..4095s", ErrInvalid, c.RestartTime)
	case c.ResyncInterval < 0:
		return fmt.Errorf("%w: negative resync interval", ErrInvalid)
	}
	return nil
}

// Desired is what the speaker must announce and to whom. Apply makes the
// running speaker match it.
type Desired struct {
	// Originate lists the site's own prefixes (its LAN prefixes),
	// announced to every neighbor except LAN peers.
	Originate []netip.Prefix
	// Neighbors are the BGP sessions, at most one per address.
	Neighbors []Neighbor
}

// Neighbor is one BGP session.
type Neighbor struct {
	// Addr is the peer's address: for a tunnel the far end's /30 address
	// (dataplane.Tunnel.RemoteInner).
	Addr netip.Addr
	// ASN is the peer's AS number. It must differ from the site's: every
	// session is eBGP (iBGP would not rewrite the next hop to our tunnel
	// address, and AS-path loop detection is what keeps hub-and-spoke
	// re-advertisement loop-free).
	ASN uint32
	// LocalAddr is our address on the session (the tunnel's LocalInner
	// address); the zero value lets the kernel choose.
	LocalAddr netip.Addr
	// Port is the peer's TCP port; 0 means 179. Tests use it.
	Port uint16
	// Description is free text, by convention the tunnel id; it is
	// reported in Status and logs. Changing it does not touch GoBGP.
	Description string
	// Interface is the tunnel's link name, reported in Status and logs.
	// Changing it does not touch GoBGP.
	Interface string
	// HoldTime and KeepAlive; zero means DefaultHoldTime and
	// DefaultKeepAlive. Whole seconds; HoldTime >= 3s, KeepAlive <
	// HoldTime.
	HoldTime  time.Duration
	KeepAlive time.Duration
	// LAN marks a router on the site's LAN rather than a tunnel peer. It
	// receives the overlay's routes (everything we learned over the
	// tunnels) but not the site's own Originate prefixes (it routes those
	// itself, and an eBGP copy would beat its IGP routes to them); routes
	// it sends us are rejected, so they are neither installed nor
	// re-advertised into the overlay: the controller's LAN prefixes stay
	// the only source of what a site announces, and a LAN default route or
	// another site's prefix cannot leak into the overlay.
	LAN bool
	// Passive: wait for the peer to connect instead of connecting too.
	// FromDataplane makes a tunnel's IKE responder passive (see there).
	Passive bool
}

// sameSession reports whether a and b (both normalised) need the same
// GoBGP peer; Description and Interface are ours alone.
func sameSession(a, b Neighbor) bool {
	a.Description, a.Interface = "", ""
	b.Description, b.Interface = "", ""
	return a == b
}

func (n Neighbor) normalised() Neighbor {
	if n.HoldTime == 0 {
		n.HoldTime = DefaultHoldTime
	}
	if n.KeepAlive == 0 {
		n.KeepAlive = DefaultKeepAlive
	}
	return n
}

func (n Neighbor) validate(localASN uint32) error {
	switch {
	case !n.Addr.Is4():
		return fmt.Errorf("%w: neighbor %v is not an IPv4 address", ErrInvalid, n.Addr)
	case n.ASN == 0:
		return fmt.Errorf("%w: neighbor %v: ASN is 0", ErrInvalid, n.Addr)
	case n.ASN == localASN:
		return fmt.Errorf("%w: neighbor %v: ASN %d is the site's own (only eBGP is supported)", ErrInvalid, n.Addr, n.ASN)
	case n.LocalAddr.IsValid() && !n.LocalAddr.Is4():
		return fmt.Errorf("%w: neighbor %v: local address %v is not IPv4", ErrInvalid, n.Addr, n.LocalAddr)
	case n.HoldTime < 3*time.Second || n.HoldTime > 65535*time.Second || n.HoldTime%time.Second != 0:
		return fmt.Errorf("%w: neighbor %v: hold time %v (whole seconds, at least 3s)", ErrInvalid, n.Addr, n.HoldTime)
	case n.KeepAlive < time.Second || n.KeepAlive >= n.HoldTime || n.KeepAlive%time.Second != 0:
		return fmt.Errorf("%w: neighbor %v: keepalive %v (whole seconds, below the hold time)", ErrInvalid, n.Addr, n.KeepAlive)
	}
	return nil
}

// normalise validates d against the site ASN and returns it with
// defaults filled, prefixes masked, sorted and deduplicated, and
// neighbors sorted by address.
func (d Desired) normalise(localASN uint32) (Desired, error) {
	var out Desired
	for _, p := range d.Originate {
		if !p.IsValid() || !p.Addr().Is4() {
			return Desired{}, fmt.Errorf("%w: originate %v is not an IPv4 prefix", ErrInvalid, p)
		}
		out.Originate = append(out.Originate, p.Masked())
	}
	slices.SortFunc(out.Originate, comparePrefix)
	out.Originate = slices.Compact(out.Originate)

	seen := map[netip.Addr]bool{}
	for _, n := range d.Neighbors {
		n = n.normalised()
		if err := n.validate(localASN); err != nil {
			return Desired{}, err
		}
		if seen[n.Addr] {
			return Desired{}, fmt.Errorf("%w: neighbor %v listed twice", ErrInvalid, n.Addr)
		}
		seen[n.Addr] = true
		out.Neighbors = append(out.Neighbors, n)
	}
	slices.SortFunc(out.Neighbors, func(a, b Neighbor) int { return a.Addr.Compare(b.Addr) })
	return out, nil
}

// FromDataplane maps the edge's data-plane state to the BGP sessions it
// implies: one eBGP neighbor per tunnel (peer = the far end's /30
// address, local address = ours, description = tunnel id, interface =
// link name, default timers) and the site's LAN prefixes as Originate.
//
// The tunnel's IKE responder (dataplane.Tunnel.Passive, set per tunnel
// by the controller) is the passive BGP end too; the initiator connects.
// Exactly one end is passive, and the choice follows the tunnel's stored
// orientation, not its addresses or its sites' roles. Problem met
// (TestLANPeer, GoBGP on both sides): after a session reset each GoBGP
// side stays idle for 5 s, closes connections arriving meanwhile, and
// goes idle again after each of its own failed attempts, so two active
// ends can keep missing each other (re-establishing took from 8 s to
// over 60 s). With one passive end the active end's first attempt after
// the other's idle hold succeeds.
//
// remoteASN maps tunnel id to the far site's ASN (the controller sends it
// with each tunnel); a tunnel without one, or with the site's own ASN, is
// an error. LAN peers are not in dataplane.Desired: the agent appends
// them to the result. Pure; the result is normalised (sorted, defaults
// filled).
func FromDataplane(siteASN uint32, d dataplane.Desired, remoteASN map[string]uint32) (Desired, error) {
	var out Desired
	out.Originate = slices.Clone(d.LANPrefixes)
	for _, t := range d.Tunnels {
		asn, ok := remoteASN[t.ID]
		if !ok {
			return Desired{}, fmt.Errorf("%w: tunnel %s: no remote ASN", ErrInvalid, t.ID)
		}
		out.Neighbors = append(out.Neighbors, Neighbor{
			Addr:        t.RemoteInner,
			ASN:         asn,
			LocalAddr:   t.LocalInner.Addr(),
			Description: t.ID,
			Interface:   t.LinkName,
			Passive:     t.Passive,
		})
	}
	n, err := out.normalise(siteASN)
	if err != nil {
		return Desired{}, fmt.Errorf("from dataplane: %w", err)
	}
	return n, nil
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

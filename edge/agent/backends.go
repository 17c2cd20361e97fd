package agent

import (
	"context"
	"net/netip"

	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/steer"
)

// The backends the owner drives, each behind the narrowest interface the
// owner needs. The owner calls Firewall, Links and Steering from its own
// goroutine (kernel calls, milliseconds); IPsec and the BGP speaker only
// from their workers (daemon calls, up to seconds), never from the owner.

// Firewall is nftables (firewall.Manager).
type Firewall interface {
	Apply(ctx context.Context, d dataplane.Desired) error
	Cleanup(ctx context.Context) error
}

// Links is the GRE links, their addresses and the main-table routes
// meshwan owns (link.Manager).
type Links interface {
	// Apply makes the links and addresses match d (no routes).
	Apply(ctx context.Context, d dataplane.Desired) error
	// ApplyRoutes makes meshwan's main-table routes (ProtoStatic and
	// ProtoBGP) equal to rs.
	ApplyRoutes(ctx context.Context, rs []kernel.Route) error
	// Routes lists meshwan's main-table routes.
	Routes(ctx context.Context) ([]kernel.Route, error)
	// Retiring lists the links Apply(d) would delete and the links of
	// d's tunnels that exist as d wants them (present, by link name).
	Retiring(d dataplane.Desired) ([]link.Retiring, map[string]bool, error)
	Status(ctx context.Context) ([]link.Status, error)
	Cleanup(ctx context.Context) error
}

// Steering is the SLA steering backend (steer.Kernel).
type Steering interface {
	Apply(ctx context.Context, classes []dataplane.TrafficClass, p steer.Plan) error
	Cleanup(ctx context.Context) error
}

// IPsec is strongSwan over VICI (ipsec.Manager).
type IPsec interface {
	Apply(ctx context.Context, d dataplane.Desired) error
	// TidyStatus ends surplus IKE_SAs (ipsec.Manager.Tidy) and reports
	// the tunnels' status, from one listing of charon's SAs.
	TidyStatus(ctx context.Context) ([]ipsec.Status, error)
	Cleanup(ctx context.Context) error
}

// SAList lists the kernel's ESP SAs as (source, destination) underlay
// pairs (ipsec.KernelSAs).
type SAList func() (map[[2]netip.Addr]bool, error)

// Speaker is a running BGP speaker (bgp.Speaker). It never writes kernel
// state: it publishes its RIB through BGPStart.OnRIB.
type Speaker interface {
	Apply(ctx context.Context, d bgp.Desired) error
	Status(ctx context.Context) ([]bgp.PeerStatus, error)
	// Stop withdraws everything (a Cease to every peer); called only when
	// routing turns static or the ASN changes, never on process exit.
	Stop()
}

// BGPStart is what a speaker is started with.
type BGPStart struct {
	ASN      uint32
	RouterID netip.Addr
	// Restarting: the owner found BGP routes of a previous process in the
	// kernel (graceful restart: the speaker's RIB holds until its peers
	// have resent theirs, and peers get the Restart State bit).
	Restarting bool
	// OnRIB receives every new RIB; it must not block (it puts into a
	// newest-wins slot).
	OnRIB func(bgp.RIB)
}

// StartBGP starts a speaker.
type StartBGP func(ctx context.Context, c BGPStart) (Speaker, error)

// Prober is what the owner needs of probe.Prober.
type Prober interface {
	Run(ctx context.Context) error
	Apply(targets []probe.Target) error
	Events() <-chan probe.Event
	Snapshot() []probe.TunnelSnapshot
}

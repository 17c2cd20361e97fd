package web

import (
	"context"
	"time"
)

// Source is where the dashboard reads the network from. The controller
// implements it over its store; tests implement it with fixed data.
//
// Building a State is the expensive part of the dashboard (the whole
// network, every edge's status), so the Server builds one only for a
// reader: while at least one event stream is open it follows Changes and
// rebuilds on each; with none open it builds only when a request asks for
// the state, and Changes is not even running.
type Source interface {
	// State returns the whole network as it is now. The fields documented as
	// "set by the server" are ignored.
	State(ctx context.Context) (State, error)
	// Changes returns a channel that receives a value (coalesced, never
	// blocking the sender) whenever State may have changed, and a func that
	// stops the notifications and releases what they hold. Run calls it
	// when the first event stream opens and stops it when the last one
	// closes, so it may be called many times, never twice at once.
	Changes() (<-chan struct{}, func())
}

// Sampler is what a Source may also implement so that the tunnels' history
// and state-change events go on while no browser is connected, without
// building the State: with no stream open, Run calls Sample at once when
// SampleChanges says an edge's state changed (at most once a second) and
// otherwise once per history period.
type Sampler interface {
	// Sample returns what the edges say now: every site with a status
	// (Name and State set) and every tunnel an edge reports (ID, Reports
	// and the probe figures set; the ends are taken from the last State).
	Sample(ctx context.Context) ([]Site, []Tunnel, error)
	// SampleChanges returns a channel that receives a value (coalesced)
	// when an edge's state may have changed, and a func that stops it.
	SampleChanges() (<-chan struct{}, func())
}

// State is everything the dashboard shows, as served to the page.
type State struct {
	// Topology is the topology mode: "full-mesh", "hub-and-spoke", or ""
	// when none is set (no tunnels are built).
	Topology string `json:"topology"`
	// Routing is "static" or "bgp".
	Routing string `json:"routing"`
	// GRPCPort is the port edges dial (the --controller HOST:PORT of the
	// onboarding command).
	GRPCPort int      `json:"grpc_port"`
	Sites    []Site   `json:"sites"`
	Tunnels  []Tunnel `json:"tunnels"`
	// Events are the source's recent events; the server adds the tunnel
	// state changes it observes.
	Events []Event `json:"events"`
	// Devices are the boxes that claimed with a fleet claim token (pending
	// approval, approved in advance, enrolled, rejected).
	Devices []Device `json:"devices"`
	// Summary is set by the server.
	Summary Summary `json:"summary"`
}

// Site states, as in controller/health.
const (
	SiteUp        = "up"
	SiteDown      = "down"
	SiteNeverSeen = "never_seen"
	// SiteUnmanaged: a third-party router, no edge; its tunnels' states
	// come from the managed ends' reports.
	SiteUnmanaged = "unmanaged"
)

// Site is one location and what its edge last said.
type Site struct {
	Name        string      `json:"name"`
	Role        string      `json:"role"` // "hub" or "spoke"
	ASN         uint32      `json:"asn"`
	Transports  []Transport `json:"transports"`
	LANPrefixes []string    `json:"lan_prefixes"`
	// State is SiteUp, SiteDown or SiteNeverSeen.
	State          string     `json:"state"`
	AgentVersion   string     `json:"agent_version,omitempty"`
	AppliedVersion int64      `json:"applied_version,omitempty"`
	LastSeen       *time.Time `json:"last_seen,omitempty"`
	// BGPPeers are the BGP sessions the edge reports (routing BGP only).
	BGPPeers []BGPPeer `json:"bgp_peers,omitempty"`
	// Cert is the site's current edge certificate; nil before enrollment.
	Cert *Cert `json:"cert,omitempty"`
}

// Cert is a site's edge certificate.
type Cert struct {
	NotAfter time.Time `json:"not_after"`
	// ExpiresSoon: less than a quarter of its lifetime left. The edge
	// renews at two thirds, so this means it has not: it is offline, or
	// its renewal is refused.
	ExpiresSoon bool   `json:"expires_soon"`
	Expired     bool   `json:"expired"`
	Revoked     bool   `json:"revoked"`
	DeviceID    string `json:"device_id,omitempty"`
}

// Device is a box that claimed with a fleet claim token.
type Device struct {
	ID    string `json:"id"`
	State string `json:"state"` // pending, approved, enrolled, rejected
	Site  string `json:"site,omitempty"`
	// KeySHA256 is the hex SHA-256 of the device's public key, to compare
	// with what the box logs.
	KeySHA256  string     `json:"key_sha256,omitempty"`
	Hostname   string     `json:"hostname,omitempty"`
	RemoteAddr string     `json:"remote_addr,omitempty"`
	LastSeen   *time.Time `json:"last_seen,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

// BGPPeer is one BGP session of a site's edge.
type BGPPeer struct {
	Neighbor   string `json:"neighbor"`
	ASN        uint32 `json:"asn"`
	TunnelID   string `json:"tunnel_id,omitempty"`
	State      string `json:"state"`
	Received   uint64 `json:"received"`
	Advertised uint64 `json:"advertised"`
}

// Transport is one WAN uplink of a site.
type Transport struct {
	Name string `json:"name"`
	// Address is the declared IPv4 address or "dynamic".
	Address string `json:"address"`
	// Observed is the address the edge reported for a dynamic transport.
	Observed string `json:"observed,omitempty"`
}

// Tunnel states. TunnelUnknown means no edge has reported the tunnel.
const (
	TunnelUp       = "up"
	TunnelDegraded = "degraded"
	TunnelDown     = "down"
	TunnelUnknown  = "unknown"
)

// Tunnel is one GRE-over-IPsec tunnel between two site transports.
type Tunnel struct {
	ID        string    `json:"id"`
	A         TunnelEnd `json:"a"`
	B         TunnelEnd `json:"b"`
	Prefix    string    `json:"prefix"` // the /30
	CreatedAt time.Time `json:"created_at"`
	// Reports holds what each end's edge says about the tunnel (zero, one
	// or two entries).
	Reports []EndReport `json:"reports"`
	// Probe results; nil until edges measure them.
	RTTMillis    *float64 `json:"rtt_ms,omitempty"`
	JitterMillis *float64 `json:"jitter_ms,omitempty"`
	LossPercent  *float64 `json:"loss_pct,omitempty"`

	// Set by the server from Reports and the sites' states.
	State      string     `json:"state"`
	IKEState   string     `json:"ike_state,omitempty"`
	ChildState string     `json:"child_state,omitempty"`
	Detail     string     `json:"detail,omitempty"`
	LastChange *time.Time `json:"last_change,omitempty"`
}

// TunnelEnd is one side of a tunnel.
type TunnelEnd struct {
	Site      string `json:"site"`
	Transport string `json:"transport"`
	Underlay  string `json:"underlay"` // public address, "dynamic" until known
	Inner     string `json:"inner"`    // address on the /30, CIDR form
	ASN       uint32 `json:"asn"`
}

// EndReport is one edge's report about one tunnel.
type EndReport struct {
	Site       string `json:"site"`
	State      string `json:"state"` // up, degraded, down ("" if unreported)
	LinkUp     bool   `json:"link_up"`
	IKEState   string `json:"ike_state,omitempty"`
	ChildState string `json:"child_state,omitempty"`
	Detail     string `json:"detail,omitempty"`
	BytesIn    uint64 `json:"bytes_in"`
	BytesOut   uint64 `json:"bytes_out"`
}

// Event levels.
const (
	LevelInfo  = "info"
	LevelOK    = "ok"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Event is one entry of the recent-events list.
type Event struct {
	Time  time.Time `json:"time"`
	What  string    `json:"what"`
	Level string    `json:"level"` // LevelInfo, LevelOK, LevelWarn or LevelError
}

// Summary counts sites and tunnels by state.
type Summary struct {
	SitesUp         int `json:"sites_up"`
	SitesDown       int `json:"sites_down"`
	SitesNeverSeen  int `json:"sites_never_seen"`
	SitesUnmanaged  int `json:"sites_unmanaged"`
	TunnelsUp       int `json:"tunnels_up"`
	TunnelsDegraded int `json:"tunnels_degraded"`
	TunnelsDown     int `json:"tunnels_down"`
	TunnelsUnknown  int `json:"tunnels_unknown"`
	// DevicesPending counts devices waiting for approval.
	DevicesPending int `json:"devices_pending"`
	// CertsExpiringSoon counts sites whose certificate expires soon, has
	// expired or was revoked.
	CertsExpiringSoon int `json:"certs_expiring_soon"`
}

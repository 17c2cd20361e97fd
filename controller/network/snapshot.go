package network

import (
	"net/netip"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/topology"
)

// Store keys (relative to the store root). intent/rev is the guard every
// intent write compares, which serialises intent changes across replicas
// and makes cross-site validation (overlaps, duplicates) race-free.
const (
	sitesDir    = "intent/sites/"
	topologyKey = "intent/topology"
	intentRev   = "intent/rev"
	tunnelsDir  = "tunnels/"
	observedDir = "edges/observed/"
	tunnelIPAM  = "ipam/tunnel/"
	asnIPAM     = "ipam/asn/"
)

// WatchPrefixes are the key prefixes whose changes can alter any edge's
// desired state.
var WatchPrefixes = []string{"intent/", tunnelsDir, observedDir}

// Tunnel is a stored tunnel: its ends, its /30, its sealed PSK, its
// initiator and the state of a key rotation (see rotate.go).
//
// Invariants: SealedPSK is the key both ends authenticate with;
// SealedAcceptPSK is set exactly while PSKRotation is not "" (staged: the
// new key, committed: the old one). Records written before rotation
// existed have no serial and read as serial 1, no rotation (Serial).
// ID, A, B, Index, Prefix and Initiator are fixed at creation: nothing
// rewrites them, whatever happens to the sites' roles. A tunnel is found
// by the unordered pair of its ends (Key), so records of older versions,
// whose A end was the hub and whose id names it first, keep their id.
type Tunnel struct {
	ID string       `json:"id"`
	A  topology.End `json:"a"`
	B  topology.End `json:"b"`
	// Initiator is the end that initiates IKE and opens BGP ("a" or
	// "b"), chosen by topology.Initiator at creation. Records written
	// before it existed have none and read as "a" (InitiatorSide): their
	// A end initiated, inferred by the edges from the lower /30 address.
	Initiator topology.Side `json:"initiator,omitempty"`
	Index     int           `json:"index"`
	Prefix    netip.Prefix  `json:"prefix"`
	CreatedAt time.Time     `json:"created_at"`
	SealedPSK []byte        `json:"sealed_psk"`
	// PSKSerial grows with every change of the key set the ends load
	// (0 in old records: read as 1).
	PSKSerial uint64 `json:"psk_serial,omitempty"`
	// PSKRotation is the rotation phase: "", RotationStaged or
	// RotationCommitted.
	PSKRotation string `json:"psk_rotation,omitempty"`
	// SealedAcceptPSK is the key the ends accept but never use (sealed
	// with acceptContext).
	SealedAcceptPSK []byte `json:"sealed_accept_psk,omitempty"`
	// PhaseSince is when the current rotation phase began (stall check).
	PhaseSince time.Time `json:"phase_since,omitzero"`
	// PSKRotatedAt is the end of the last completed rotation.
	PSKRotatedAt time.Time `json:"psk_rotated_at,omitzero"`
	modRev       int64
}

// Ends returns the tunnel's ends in the stored order (topology.Ends).
func (t Tunnel) Ends() (a, b topology.End) { return t.A, t.B }

// Key is the tunnel's identity: the unordered pair of its ends.
func (t Tunnel) Key() string { return topology.Key(t.A, t.B) }

// InitiatorSide is the end that initiates; old records read as "a".
func (t Tunnel) InitiatorSide() topology.Side {
	if t.Initiator == topology.SideB {
		return topology.SideB
	}
	return topology.SideA
}

// Serial is the serial of the tunnel's key set; old records read as 1.
func (t Tunnel) Serial() uint64 { return max(t.PSKSerial, 1) }

// KeyAge is when the tunnel's current key was made: its last rotation's
// end, or its creation.
func (t Tunnel) KeyAge() time.Time {
	if t.PSKRotatedAt.IsZero() {
		return t.CreatedAt
	}
	return t.PSKRotatedAt
}

// AInner and BInner are the ends' addresses on the /30.
func (t Tunnel) AInner() netip.Prefix { a, _ := ipam.Ends(t.Prefix); return a }

// BInner is the B end's /30 address.
func (t Tunnel) BInner() netip.Prefix { _, b := ipam.Ends(t.Prefix); return b }

// Snapshot is the whole intent plus allocations, read at one revision.
type Snapshot struct {
	Revision int64
	Sites    map[string]intent.Site
	Topology intent.Topology // with defaults applied
	Tunnels  map[string]Tunnel
	// Observed holds the public addresses edges report for dynamic transports.
	Observed map[string]map[string]netip.Addr

	rawTopology intent.Topology
	intentRev   int64
	siteRevs    map[string]int64
}

// SiteList returns the sites sorted by name.
func (s *Snapshot) SiteList() []intent.Site {
	out := make([]intent.Site, 0, len(s.Sites))
	for _, v := range s.Sites {
		out = append(out, v)
	}
	intent.SortSites(out)
	return out
}

// Underlay returns the address of a site transport: declared, or observed
// for a dynamic one (invalid when not known yet).
func (s *Snapshot) Underlay(e topology.End) netip.Addr {
	site := s.Sites[e.Site]
	tr, ok := site.Transport(e.Transport)
	if !ok {
		return netip.Addr{}
	}
	if !tr.Dynamic {
		return tr.Addr
	}
	return s.Observed[e.Site][e.Transport]
}

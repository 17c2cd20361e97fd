package dataplane

import "time"

// TunnelState is a tunnel's reported state. The data plane owns the enum;
// the syncer converts it to protobuf once, at the wire, and nothing
// compares state strings.
type TunnelState uint8

// Tunnel states.
const (
	// TunnelUnknown: no observation yet.
	TunnelUnknown TunnelState = iota
	// TunnelUp: link up, a child SA installed, and (when probed) the
	// probes answered with little loss.
	TunnelUp
	// TunnelDegraded: up, but in hold-down after a recovery or losing
	// probes.
	TunnelDegraded
	// TunnelDown: link missing or down, no installed child SA, or probes
	// unanswered.
	TunnelDown
)

func (s TunnelState) String() string {
	switch s {
	case TunnelUp:
		return "up"
	case TunnelDegraded:
		return "degraded"
	case TunnelDown:
		return "down"
	}
	return "unknown"
}

// ProbeState is a tunnel's liveness as its probes see it.
type ProbeState uint8

// Probe states (the same order as probe.State, which the agent converts).
const (
	ProbeUnknown ProbeState = iota
	ProbeUp
	ProbeDown
)

func (s ProbeState) String() string {
	switch s {
	case ProbeUp:
		return "up"
	case ProbeDown:
		return "down"
	}
	return "unknown"
}

// TunnelStatus is what the edge reports per tunnel: the kernel's and
// charon's view merged with the probe results.
type TunnelStatus struct {
	ID         string
	State      TunnelState
	LinkUp     bool
	IKEState   string // charon's words (ESTABLISHED, ...), passed through
	ChildState string // charon's words (INSTALLED, ...), passed through
	BytesIn    uint64
	BytesOut   uint64
	PacketsIn  uint64
	PacketsOut uint64
	Detail     string
	// Probe results; Probed is false when the tunnel is not probed.
	Probed      bool
	ProbeState  ProbeState
	RTT         time.Duration
	RTTP99      time.Duration
	Jitter      time.Duration
	LossPct     float64
	Transitions uint64
	Usable      bool // carries traffic: probes up and the hold-down over
	// PSKSerial is the key set serial charon has loaded (0: unknown).
	PSKSerial uint64
}

// ClassPath is the tunnel one traffic class uses towards one remote site
// ("" when none is usable and the ordinary routes apply).
type ClassPath struct {
	Class, RemoteSite, TunnelID string
	MeetsSLA                    bool
}

// BGPPeer is one BGP session's status.
type BGPPeer struct {
	Neighbor   string
	ASN        uint32
	TunnelID   string
	State      string // GoBGP's FSM state in lower case, passed through
	Received   uint64
	Accepted   uint64
	Advertised uint64
}

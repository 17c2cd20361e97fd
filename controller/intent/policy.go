package intent

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// PathPolicy is how every edge probes its tunnels, takes a dead one out of
// forwarding and brings it back, and steers traffic classes across parallel
// tunnels. It is network-wide. Zero fields take the defaults below
// (WithDefaults); the edge's own equivalent is edge/dataplane.PathPolicy,
// whose defaults these mirror (the controller does not import edge code).
type PathPolicy struct {
	// ProbeInterval between probes on each tunnel (whole milliseconds on
	// the wire).
	ProbeInterval time.Duration `json:"probe_interval,omitempty"`
	// DownAfter consecutive unanswered probes take a tunnel down; UpAfter
	// consecutive answered ones bring it back.
	DownAfter int `json:"down_after,omitempty"`
	UpAfter   int `json:"up_after,omitempty"`
	// HoldDown is how long a recovered tunnel must stay up before traffic
	// returns to it.
	HoldDown time.Duration `json:"hold_down,omitempty"`
	// Disabled turns probing, probe-driven failover and steering off.
	Disabled       bool           `json:"disabled,omitempty"`
	SLAClasses     []SLAClass     `json:"sla_classes,omitempty"`
	TrafficClasses []TrafficClass `json:"traffic_classes,omitempty"`
}

// SLAClass is a service level a traffic class asks of its tunnel. A zero
// bound means "no bound".
type SLAClass struct {
	Name       string        `json:"name"`
	MaxRTT     time.Duration `json:"max_rtt,omitempty"`
	MaxLossPct float64       `json:"max_loss_pct,omitempty"`
	MaxJitter  time.Duration `json:"max_jitter,omitempty"`
	// TransportPreference lists local transport names, most preferred
	// first; transports not listed come after, by name.
	TransportPreference []string `json:"transport_preference,omitempty"`
	// Damping: a tunnel must fail (or meet again) the SLA this long before
	// the class moves off it (or back).
	Damping time.Duration `json:"damping,omitempty"`
}

// TrafficClass selects packets an edge forwards from its LAN to the
// overlay (every non-empty criterion must match) and puts them in the SLA
// class SLAClass. Classes are tried in order; first match wins.
type TrafficClass struct {
	Name         string         `json:"name"`
	SLAClass     string         `json:"sla_class"`
	DSCP         []uint8        `json:"dscp,omitempty"`
	Protocol     string         `json:"protocol,omitempty"` // "tcp", "udp", "icmp" or "" (any)
	Ports        []PortRange    `json:"ports,omitempty"`
	Destinations []netip.Prefix `json:"destinations,omitempty"`
}

// PortRange is an inclusive range of destination ports (From == To for a
// single port). Its text form is "5060" or "16384-32767".
type PortRange struct {
	From, To uint16
}

func (r PortRange) String() string {
	if r.From == r.To {
		return strconv.Itoa(int(r.From))
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}

// MarshalText writes the text form, so stored policies read like the API.
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses the text form.
func (r *PortRange) UnmarshalText(b []byte) error {
	p, err := ParsePortRange("port", string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// Path policy defaults and bounds (the same numbers as the edge's).
const (
	DefaultProbeInterval = 100 * time.Millisecond
	DefaultDownAfter     = 5
	DefaultUpAfter       = 3
	DefaultHoldDown      = 2 * time.Second
	DefaultDamping       = 2 * time.Second

	MinProbeInterval = 20 * time.Millisecond
	MaxProbeInterval = 10 * time.Second
	MaxHoldDown      = 10 * time.Minute
	MaxDamping       = 10 * time.Minute
	// MaxTrafficClasses bounds the traffic classes: the edge gives each a
	// packet mark and a routing table.
	MaxTrafficClasses = 64
	// MaxDSCP is the largest DSCP value (six bits).
	MaxDSCP = 63
)

// maxMillis is the largest millisecond figure a time.Duration holds.
const maxMillis = float64(math.MaxInt64 / int64(time.Millisecond))

// WithDefaults returns p with every unset field defaulted. The SLA classes
// are copied, never modified in place.
func (p PathPolicy) WithDefaults() PathPolicy {
	if p.ProbeInterval == 0 {
		p.ProbeInterval = DefaultProbeInterval
	}
	if p.DownAfter == 0 {
		p.DownAfter = DefaultDownAfter
	}
	if p.UpAfter == 0 {
		p.UpAfter = DefaultUpAfter
	}
	if p.HoldDown == 0 {
		p.HoldDown = DefaultHoldDown
	}
	if p.SLAClasses != nil {
		slas := make([]SLAClass, len(p.SLAClasses))
		copy(slas, p.SLAClasses)
		for i := range slas {
			if slas[i].Damping == 0 {
				slas[i].Damping = DefaultDamping
			}
		}
		p.SLAClasses = slas
	}
	return p
}

// MillisDuration converts a millisecond figure from the wire (a double) to
// a Duration, refusing what a Duration cannot hold (NaN, infinities,
// overflow). Negative values pass: Validate names them.
func MillisDuration(field string, ms float64) (time.Duration, error) {
	if math.IsNaN(ms) || math.IsInf(ms, 0) || math.Abs(ms) > maxMillis {
		return 0, invalid(field, "%v is not a number of milliseconds", ms)
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// Millis is d in (fractional) milliseconds, the wire unit.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ParseDSCP checks a DSCP value from the wire (0..63).
func ParseDSCP(field string, v uint32) (uint8, error) {
	if v > MaxDSCP {
		return 0, invalid(field, "%d is outside 0..%d", v, MaxDSCP)
	}
	return uint8(v), nil
}

// ParsePortRange parses "5060" or "16384-32767" (ports 1..65535, FROM <= TO).
func ParsePortRange(field, s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	from, err := strconv.ParseUint(lo, 10, 16)
	if err != nil || from == 0 {
		return PortRange{}, invalid(field, "%s is not a port (1..65535) or a range FROM-TO", q(s))
	}
	to := from
	if isRange {
		if to, err = strconv.ParseUint(hi, 10, 16); err != nil || to == 0 {
			return PortRange{}, invalid(field, "%s is not a port (1..65535) or a range FROM-TO", q(s))
		}
		if to < from {
			return PortRange{}, invalid(field, "%s: the range ends before it starts", q(s))
		}
	}
	return PortRange{From: uint16(from), To: uint16(to)}, nil
}

// ParseDestination parses a traffic class destination: an IPv4 prefix in
// canonical CIDR form (0.0.0.0/0 is allowed: it matches every destination).
func ParseDestination(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalid(field, "%s is not a CIDR prefix", q(s))
	}
	return p, checkDestination(field, p)
}

func checkDestination(field string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return invalid(field, "is not a CIDR prefix")
	case !p.Addr().Is4():
		return invalid(field, "%q: only IPv4 prefixes are supported", p)
	case p.Masked() != p:
		return invalid(field, "%q has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// Validate checks a path policy; zero fields mean "default" and pass.
// Errors name the field in the API's terms (milliseconds), under
// "topology.path_policy".
func (p PathPolicy) Validate() error {
	const f = "topology.path_policy."
	if d := p.ProbeInterval; d != 0 && (d < MinProbeInterval || d > MaxProbeInterval) {
		return invalid(f+"probe_interval_ms", "%v is outside %d..%d", Millis(d), MinProbeInterval.Milliseconds(), MaxProbeInterval.Milliseconds())
	}
	if n := p.DownAfter; n != 0 && (n < 2 || n > 100) {
		return invalid(f+"down_after", "%d is outside 2..100", n)
	}
	if n := p.UpAfter; n != 0 && (n < 1 || n > 100) {
		return invalid(f+"up_after", "%d is outside 1..100", n)
	}
	if d := p.HoldDown; d < 0 || d > MaxHoldDown {
		return invalid(f+"hold_down_ms", "%v is outside 0..%d", Millis(d), MaxHoldDown.Milliseconds())
	}
	slas := map[string]bool{}
	for i, s := range p.SLAClasses {
		field := fmt.Sprintf("%ssla_classes[%d].", f, i)
		if !nameRE.MatchString(s.Name) {
			return invalid(field+"name", "%s must be 1-32 lowercase letters, digits or '-', not starting or ending with '-'", q(s.Name))
		}
		if slas[s.Name] {
			return invalid(field+"name", "SLA class %q is defined twice", s.Name)
		}
		slas[s.Name] = true
		if s.MaxRTT < 0 {
			return invalid(field+"max_rtt_ms", "%v is negative", Millis(s.MaxRTT))
		}
		if s.MaxJitter < 0 {
			return invalid(field+"max_jitter_ms", "%v is negative", Millis(s.MaxJitter))
		}
		if l := s.MaxLossPct; math.IsNaN(l) || l < 0 || l > 100 {
			return invalid(field+"max_loss_pct", "%v is outside 0..100", l)
		}
		if s.Damping < 0 || s.Damping > MaxDamping {
			return invalid(field+"damping_ms", "%v is outside 0..%d", Millis(s.Damping), MaxDamping.Milliseconds())
		}
		seen := map[string]bool{}
		for j, tr := range s.TransportPreference {
			tf := fmt.Sprintf("%stransport_preference[%d]", field, j)
			if !transportRE.MatchString(tr) {
				return invalid(tf, "%s is not a transport name (1-12 lowercase letters, digits or '-')", q(tr))
			}
			if seen[tr] {
				return invalid(tf, "transport %q is listed twice", tr)
			}
			seen[tr] = true
		}
	}
	if n := len(p.TrafficClasses); n > MaxTrafficClasses {
		return invalid(f+"traffic_classes", "%d classes, at most %d", n, MaxTrafficClasses)
	}
	names := map[string]bool{}
	for i, c := range p.TrafficClasses {
		field := fmt.Sprintf("%straffic_classes[%d].", f, i)
		if !nameRE.MatchString(c.Name) {
			return invalid(field+"name", "%s must be 1-32 lowercase letters, digits or '-', not starting or ending with '-'", q(c.Name))
		}
		if names[c.Name] {
			return invalid(field+"name", "traffic class %q is defined twice", c.Name)
		}
		names[c.Name] = true
		if !slas[c.SLAClass] {
			return invalid(field+"sla_class", "%s is not a defined SLA class", q(c.SLAClass))
		}
		for j, d := range c.DSCP {
			if d > MaxDSCP {
				return invalid(fmt.Sprintf("%sdscp[%d]", field, j), "%d is outside 0..%d", d, MaxDSCP)
			}
		}
		switch c.Protocol {
		case "", "tcp", "udp", "icmp":
		default:
			return invalid(field+"protocol", "%s must be tcp, udp, icmp or empty (any)", q(c.Protocol))
		}
		if len(c.Ports) > 0 && c.Protocol != "tcp" && c.Protocol != "udp" {
			return invalid(field+"ports", "ports need protocol tcp or udp, not %s", q(c.Protocol))
		}
		for j, r := range c.Ports {
			if r.From == 0 || r.To < r.From {
				return invalid(fmt.Sprintf("%sports[%d]", field, j), "%q is not a port (1..65535) or a range FROM-TO", r.String())
			}
		}
		for j, d := range c.Destinations {
			if err := checkDestination(fmt.Sprintf("%sdestinations[%d]", field, j), d); err != nil {
				return err
			}
		}
	}
	return nil
}

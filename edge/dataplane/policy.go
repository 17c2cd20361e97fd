package dataplane

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/validity"
)

// PathPolicy is how every edge probes its tunnels, takes a dead one out of
// forwarding and brings it back, and steers traffic classes across
// parallel tunnels. It is network-wide.
//
// This is the one model of the path policy: the controller stores it
// (controller/intent.PathPolicy is this type; the json tags are its stored
// form, so renaming one breaks stored intents) and the edge runs it.
// Defaults (WithDefaults), bounds and validation (Problems) exist only
// here; each side converts to and from its wire form and names fields in
// its own terms.
type PathPolicy struct {
	// ProbeInterval between probes on each tunnel (whole milliseconds on
	// the wire).
	ProbeInterval time.Duration `json:"probe_interval,omitempty"`
	// DownAfter consecutive unanswered probes take a tunnel down;
	// UpAfter consecutive answered ones bring it back.
	DownAfter int `json:"down_after,omitempty"`
	UpAfter   int `json:"up_after,omitempty"`
	// HoldDown is how long a recovered tunnel must stay up before traffic
	// returns to it.
	HoldDown time.Duration `json:"hold_down,omitempty"`
	// Disabled turns probing, probe-driven failover and steering off: the
	// routes then follow the desired state (or BGP) alone.
	Disabled bool           `json:"disabled,omitempty"`
	SLAs     []SLA          `json:"sla_classes,omitempty"`
	Classes  []TrafficClass `json:"traffic_classes,omitempty"`
}

// Defaults and bounds of PathPolicy.
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
	// MaxClasses bounds the traffic classes: each gets a mark value and a
	// routing table (see the steer package).
	MaxClasses = 64
	// MaxDSCP is the largest DSCP value (six bits).
	MaxDSCP = 63
)

// WithDefaults returns p with every unset field defaulted. The SLA
// classes are copied, never modified in place.
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
	if p.SLAs != nil {
		slas := make([]SLA, len(p.SLAs))
		copy(slas, p.SLAs)
		for i := range slas {
			if slas[i].Damping == 0 {
				slas[i].Damping = DefaultDamping
			}
		}
		p.SLAs = slas
	}
	return p
}

// SLA is a service level a traffic class asks of its tunnel: bounds (0 =
// unbounded) and the local transports a class prefers.
type SLA struct {
	Name       string        `json:"name"`
	MaxRTT     time.Duration `json:"max_rtt,omitempty"`
	MaxLossPct float64       `json:"max_loss_pct,omitempty"`
	MaxJitter  time.Duration `json:"max_jitter,omitempty"`
	// Transports lists local transport names, most preferred first;
	// transports not listed come after, by name.
	Transports []string `json:"transport_preference,omitempty"`
	// Damping: a tunnel must fail the SLA this long before a class leaves
	// it, and meet it this long before a class returns to it.
	Damping time.Duration `json:"damping,omitempty"`
}

// TrafficClass matches packets an edge forwards from its LAN to the
// overlay (every non-empty criterion must match) and puts them in SLA
// class SLA. Classes are tried in order; first match wins.
type TrafficClass struct {
	Name         string         `json:"name"`
	SLA          string         `json:"sla_class"`
	DSCP         []uint8        `json:"dscp,omitempty"`
	Protocol     string         `json:"protocol,omitempty"` // "tcp", "udp", "icmp" or "" (any)
	Ports        []PortRange    `json:"ports,omitempty"`
	Destinations []netip.Prefix `json:"destinations,omitempty"`
}

// PortRange is an inclusive range of destination ports (From == To for
// one). Its text form is "5060" or "16384-32767".
type PortRange struct {
	From, To uint16
}

// ParsePortRange parses "5060" or "16384-32767" (ports 1..65535, From <= To).
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	from, err := strconv.ParseUint(lo, 10, 16)
	if err != nil || from == 0 {
		return PortRange{}, fmt.Errorf("%s is not a port (1..65535) or a range FROM-TO", validity.Quote(s))
	}
	to := from
	if isRange {
		if to, err = strconv.ParseUint(hi, 10, 16); err != nil || to == 0 {
			return PortRange{}, fmt.Errorf("%s is not a port (1..65535) or a range FROM-TO", validity.Quote(s))
		}
		if to < from {
			return PortRange{}, fmt.Errorf("%s: the range ends before it starts", validity.Quote(s))
		}
	}
	return PortRange{From: uint16(from), To: uint16(to)}, nil
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
	p, err := ParsePortRange(string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

var (
	// policyNameRE: SLA and traffic class names are DNS labels, like the
	// controller's other names.
	policyNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	// transportNameRE: a transport name is short, a link name carries it.
	transportNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$`)
)

// PolicyProblem is one rule a path policy breaks. Field is the field's
// path in the API's terms, relative to the policy (e.g.
// "sla_classes[0].max_rtt_ms"; durations in milliseconds, as on the
// wire), so both sides report it the same way under their own prefix.
type PolicyProblem struct {
	Field, Msg string
}

func (p PolicyProblem) Error() string { return p.Field + ": " + p.Msg }

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Problems returns every rule p breaks, in field order; none for a valid
// policy. Zero fields mean "default" and pass.
func (p PathPolicy) Problems() []PolicyProblem {
	var out []PolicyProblem
	bad := func(field, format string, args ...any) {
		out = append(out, PolicyProblem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if d := p.ProbeInterval; d != 0 && (d < MinProbeInterval || d > MaxProbeInterval) {
		bad("probe_interval_ms", "%v is outside %d..%d", millis(d), MinProbeInterval.Milliseconds(), MaxProbeInterval.Milliseconds())
	}
	if n := p.DownAfter; n != 0 && (n < 2 || n > 100) {
		bad("down_after", "%d is outside 2..100", n)
	}
	if n := p.UpAfter; n != 0 && (n < 1 || n > 100) {
		bad("up_after", "%d is outside 1..100", n)
	}
	if d := p.HoldDown; d < 0 || d > MaxHoldDown {
		bad("hold_down_ms", "%v is outside 0..%d", millis(d), MaxHoldDown.Milliseconds())
	}
	slas := map[string]bool{}
	for i, s := range p.SLAs {
		f := fmt.Sprintf("sla_classes[%d].", i)
		switch {
		case !policyNameRE.MatchString(s.Name):
			bad(f+"name", "%s must be 1-32 lowercase letters, digits or '-', not starting or ending with '-'", validity.Quote(s.Name))
		case slas[s.Name]:
			bad(f+"name", "SLA class %q is defined twice", s.Name)
		}
		slas[s.Name] = true
		if s.MaxRTT < 0 {
			bad(f+"max_rtt_ms", "%v is negative", millis(s.MaxRTT))
		}
		if s.MaxJitter < 0 {
			bad(f+"max_jitter_ms", "%v is negative", millis(s.MaxJitter))
		}
		if l := s.MaxLossPct; math.IsNaN(l) || l < 0 || l > 100 {
			bad(f+"max_loss_pct", "%v is outside 0..100", l)
		}
		if s.Damping < 0 || s.Damping > MaxDamping {
			bad(f+"damping_ms", "%v is outside 0..%d", millis(s.Damping), MaxDamping.Milliseconds())
		}
		seen := map[string]bool{}
		for j, tr := range s.Transports {
			tf := fmt.Sprintf("%stransport_preference[%d]", f, j)
			switch {
			case !transportNameRE.MatchString(tr):
				bad(tf, "%s is not a transport name (1-12 lowercase letters, digits or '-')", validity.Quote(tr))
			case seen[tr]:
				bad(tf, "transport %q is listed twice", tr)
			}
			seen[tr] = true
		}
	}
	if n := len(p.Classes); n > MaxClasses {
		bad("traffic_classes", "%d classes, at most %d", n, MaxClasses)
	}
	names := map[string]bool{}
	for i, c := range p.Classes {
		f := fmt.Sprintf("traffic_classes[%d].", i)
		switch {
		case !policyNameRE.MatchString(c.Name):
			bad(f+"name", "%s must be 1-32 lowercase letters, digits or '-', not starting or ending with '-'", validity.Quote(c.Name))
		case names[c.Name]:
			bad(f+"name", "traffic class %q is defined twice", c.Name)
		}
		names[c.Name] = true
		if !slas[c.SLA] {
			bad(f+"sla_class", "%s is not a defined SLA class", validity.Quote(c.SLA))
		}
		for j, d := range c.DSCP {
			if d > MaxDSCP {
				bad(fmt.Sprintf("%sdscp[%d]", f, j), "%d is outside 0..%d", d, MaxDSCP)
			}
		}
		switch c.Protocol {
		case "", "tcp", "udp", "icmp":
		default:
			bad(f+"protocol", "%s must be tcp, udp, icmp or empty (any)", validity.Quote(c.Protocol))
		}
		if len(c.Ports) > 0 && c.Protocol != "tcp" && c.Protocol != "udp" {
			bad(f+"ports", "ports need protocol tcp or udp, not %s", validity.Quote(c.Protocol))
		}
		for j, r := range c.Ports {
			if r.From == 0 || r.To < r.From {
				bad(fmt.Sprintf("%sports[%d]", f, j), "%q is not a port (1..65535) or a range FROM-TO", r.String())
			}
		}
		for j, d := range c.Destinations {
			if err := CheckDestination(d); err != nil {
				bad(fmt.Sprintf("%sdestinations[%d]", f, j), "%v", err)
			}
		}
	}
	return out
}

// CheckDestination checks a traffic class destination: an IPv4 prefix in
// canonical form (0.0.0.0/0 matches every destination).
func CheckDestination(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("is not a CIDR prefix")
	case !p.Addr().Is4():
		return fmt.Errorf("%q: only IPv4 prefixes are supported", p)
	case p.Masked() != p:
		return fmt.Errorf("%q has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

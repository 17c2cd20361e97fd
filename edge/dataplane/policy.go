package dataplane

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// PathPolicy is how the edge probes its tunnels, fails over and steers
// traffic classes (the controller's PathPolicy, defaults filled in).
type PathPolicy struct {
	// Disabled turns probing, probe-driven failover and steering off: the
	// routes then follow the desired state (or BGP) alone.
	Disabled bool
	// ProbeInterval between probes on each tunnel.
	ProbeInterval time.Duration
	// DownAfter consecutive unanswered probes take a tunnel down;
	// UpAfter consecutive answered ones bring it back.
	DownAfter, UpAfter int
	// HoldDown is how long a recovered tunnel must stay up before traffic
	// returns to it.
	HoldDown time.Duration
	SLAs     []SLA
	Classes  []TrafficClass
}

// Defaults of PathPolicy.
const (
	DefaultProbeInterval = 100 * time.Millisecond
	DefaultDownAfter     = 5
	DefaultUpAfter       = 3
	DefaultHoldDown      = 2 * time.Second
	DefaultDamping       = 2 * time.Second
)

// WithDefaults fills zero fields.
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
	return p
}

// SLA is a service level: bounds (0 = unbounded) and the local transports
// a class prefers, most preferred first (unlisted ones follow by name).
type SLA struct {
	Name       string
	MaxRTT     time.Duration
	MaxLossPct float64
	MaxJitter  time.Duration
	Transports []string
	// Damping: a tunnel must fail the SLA this long before a class leaves
	// it, and meet it this long before a class returns to it.
	Damping time.Duration
}

// TrafficClass matches forwarded packets (every non-empty criterion must
// match) and puts them in SLA class SLA. Classes are tried in order.
type TrafficClass struct {
	Name         string
	SLA          string
	DSCP         []uint8
	Protocol     string // "tcp", "udp", "icmp" or "" (any)
	Ports        []PortRange
	Destinations []netip.Prefix
}

// PortRange is an inclusive range of destination ports (From == To for one).
type PortRange struct {
	From, To uint16
}

// ParsePortRange parses "5060" or "16384-32767" (ports 1..65535, From <= To).
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	from, err := strconv.ParseUint(lo, 10, 16)
	if err != nil || from == 0 {
		return PortRange{}, fmt.Errorf("%q is not a port (1..65535) or range (1000-2000)", s)
	}
	to := from
	if isRange {
		if to, err = strconv.ParseUint(hi, 10, 16); err != nil || to < from {
			return PortRange{}, fmt.Errorf("%q is not a port range FROM-TO with FROM <= TO", s)
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

// MaxClasses bounds the traffic classes: each gets a mark value and a
// routing table (see the steer package).
const MaxClasses = 64

// validate checks a path policy whose defaults are filled in; bad is
// Validate's error collector.
func (p PathPolicy) validate(bad func(field, format string, args ...any)) {
	if p.ProbeInterval < 20*time.Millisecond || p.ProbeInterval > 10*time.Second {
		bad("Paths.ProbeInterval", "%v outside [20ms, 10s]", p.ProbeInterval)
	}
	if p.DownAfter < 2 || p.DownAfter > 100 {
		bad("Paths.DownAfter", "%d outside [2, 100]", p.DownAfter)
	}
	if p.UpAfter < 1 || p.UpAfter > 100 {
		bad("Paths.UpAfter", "%d outside [1, 100]", p.UpAfter)
	}
	if p.HoldDown < 0 || p.HoldDown > 10*time.Minute {
		bad("Paths.HoldDown", "%v outside [0, 10m]", p.HoldDown)
	}
	slas := map[string]bool{}
	for i, s := range p.SLAs {
		f := fmt.Sprintf("Paths.SLAs[%d]", i)
		switch {
		case s.Name == "":
			bad(f+".Name", "empty")
		case slas[s.Name]:
			bad(f+".Name", "%q twice", s.Name)
		}
		slas[s.Name] = true
		if s.MaxRTT < 0 || s.MaxJitter < 0 || s.MaxLossPct < 0 || s.MaxLossPct > 100 || s.Damping < 0 {
			bad(f, "negative bound or loss above 100%%")
		}
	}
	if len(p.Classes) > MaxClasses {
		bad("Paths.Classes", "%d classes, at most %d", len(p.Classes), MaxClasses)
	}
	names := map[string]bool{}
	for i, c := range p.Classes {
		f := fmt.Sprintf("Paths.Classes[%d]", i)
		switch {
		case c.Name == "":
			bad(f+".Name", "empty")
		case names[c.Name]:
			bad(f+".Name", "%q twice", c.Name)
		}
		names[c.Name] = true
		if !slas[c.SLA] {
			bad(f+".SLA", "%q is not an SLA class", c.SLA)
		}
		for j, d := range c.DSCP {
			if d > 63 {
				bad(fmt.Sprintf("%s.DSCP[%d]", f, j), "%d above 63", d)
			}
		}
		switch c.Protocol {
		case "", "tcp", "udp", "icmp":
		default:
			bad(f+".Protocol", "%q must be tcp, udp, icmp or empty", c.Protocol)
		}
		if len(c.Ports) > 0 && c.Protocol != "tcp" && c.Protocol != "udp" {
			bad(f+".Ports", "ports need protocol tcp or udp")
		}
		for j, r := range c.Ports {
			if r.From == 0 || r.To < r.From {
				bad(fmt.Sprintf("%s.Ports[%d]", f, j), "bad range %v", r)
			}
		}
		for j, d := range c.Destinations {
			if err := checkPrefix(d); err != nil {
				bad(fmt.Sprintf("%s.Destinations[%d]", f, j), "%v", err)
			}
		}
	}
}

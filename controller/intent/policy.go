package intent

import (
	"math"
	"net/netip"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
)

// The path policy (probing, failover, SLA steering) is one model shared
// with the edge: edge/dataplane.PathPolicy, a pure package the controller
// may import (the edge never imports the controller). Its defaults
// (WithDefaults), bounds and rules (Problems) and its stored JSON form
// live there; this file keeps only the controller's boundary: converting
// wire values (milliseconds as doubles, DSCP as uint32, text ports and
// prefixes) and naming fields under "topology.path_policy." in errors
// that wrap ErrInvalid.
type (
	PathPolicy   = dataplane.PathPolicy
	SLAClass     = dataplane.SLA
	TrafficClass = dataplane.TrafficClass
	PortRange    = dataplane.PortRange
)

// policyField prefixes a policy field in the API's errors.
const policyField = "topology.path_policy."

// maxMillis is the largest millisecond figure a time.Duration holds.
const maxMillis = float64(math.MaxInt64 / int64(time.Millisecond))

// MillisDuration converts a millisecond figure from the wire (a double) to
// a Duration, refusing what a Duration cannot hold (NaN, infinities,
// overflow). Negative values pass: ValidatePathPolicy names them.
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
	if v > dataplane.MaxDSCP {
		return 0, invalid(field, "%d is outside 0..%d", v, dataplane.MaxDSCP)
	}
	return uint8(v), nil
}

// ParsePortRange parses a port range from the wire, "5060" or
// "16384-32767" (dataplane.ParsePortRange), naming field in its error.
func ParsePortRange(field, s string) (PortRange, error) {
	r, err := dataplane.ParsePortRange(s)
	if err != nil {
		return PortRange{}, invalid(field, "%v", err)
	}
	return r, nil
}

// ParseDestination parses a traffic class destination: an IPv4 prefix in
// canonical CIDR form (0.0.0.0/0 is allowed: it matches every destination).
func ParseDestination(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalid(field, "%s is not a CIDR prefix", q(s))
	}
	if err := dataplane.CheckDestination(p); err != nil {
		return netip.Prefix{}, invalid(field, "%v", err)
	}
	return p, nil
}

// ValidatePathPolicy checks a path policy with the shared rules
// (dataplane.PathPolicy.Problems); zero fields mean "default" and pass.
// The error names the first broken field in the API's terms
// (milliseconds), under "topology.path_policy.".
func ValidatePathPolicy(p PathPolicy) error {
	if probs := p.Problems(); len(probs) > 0 {
		return invalid(policyField+probs[0].Field, "%s", probs[0].Msg)
	}
	return nil
}

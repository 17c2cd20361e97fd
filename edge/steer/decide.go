package steer

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
)

// Health is what steering knows about one tunnel.
type Health struct {
	// Usable: probes up and hold-down over; unusable tunnels are never
	// chosen. A tunnel missing from the health map counts as unusable.
	Usable bool
	// RTT is the smoothed round-trip time, Jitter the RFC 3550 jitter.
	RTT, Jitter time.Duration
	// LossPct is the loss in percent (0..100) over the recent window.
	LossPct float64
}

// Dest is a destination prefix and the tunnels (IDs) that can reach it.
type Dest struct {
	Prefix  netip.Prefix
	Tunnels []string
}

// Choice is the tunnel one class uses towards one remote site. TunnelID ""
// means no tunnel is usable: the ordinary routes in the main table apply.
// RemoteSite is the group key: the remote site, or the sorted sites joined
// with "+" for prefixes reachable through several sites (two hubs).
type Choice struct {
	Class, RemoteSite, TunnelID string
	// MeetsSLA: the chosen tunnel meets the class's SLA right now.
	MeetsSLA bool
}

// Route is one route of a class table: Dst via Gw on Link.
type Route struct {
	Dst      netip.Prefix
	Link     string
	Gw       netip.Addr
	TunnelID string
}

func (r Route) String() string {
	if !r.Gw.IsValid() {
		return fmt.Sprintf("%v dev %s", r.Dst, r.Link)
	}
	return fmt.Sprintf("%v via %v dev %s", r.Dst, r.Gw, r.Link)
}

// ClassTable is the kernel state of one class: packets of the class carry
// Mark and are routed by Table. Routes hold only overlay destinations, so a
// marked packet to anything else finds no route there and the kernel goes
// on to the next ip rule (the main table).
type ClassTable struct {
	Class  string
	Mark   uint32
	Table  int
	Routes []Route
}

// Plan is one steering decision: a table per traffic class (in class
// order, Routes sorted by prefix) and the choice per class and remote
// site (in class order, then by site).
type Plan struct {
	Tables  []ClassTable
	Choices []Choice
}

// Hysteresis is the band a tunnel must be inside to win a class back: to
// re-qualify, every bounded metric must be at most Hysteresis times its
// bound (RTT <= 90% of MaxRTT, ...), while a current tunnel only fails when
// it exceeds the bound itself. A tunnel sitting right at a bound therefore
// keeps a class it has but does not take one back. Applies only with
// SLA.Damping > 0.
const Hysteresis = 0.9

// Steerer chooses, per traffic class and remote site, the tunnel a class
// uses, and remembers what it needs for damping: the tunnel each (class,
// site) is on and since when each tunnel has been failing or meeting each
// SLA. Not safe for concurrent use.
type Steerer struct {
	num     Numbering
	groups  map[groupKey]*groupState
	history map[histKey]*history
}

type groupKey struct{ class, group string }

type groupState struct {
	current string    // chosen tunnel ID, "" for none
	since   time.Time // when current was chosen
}

type histKey struct{ sla, tunnel string }

// history is one tunnel's record against one SLA, sampled at each Decide.
type history struct {
	bounds    dataplane.SLA // bounds only (Transports nil): a change resets the record
	failSince time.Time     // start of the current run of samples failing the SLA; zero while it meets it
	qualSince time.Time     // start of the current run of samples inside the hysteresis band; zero otherwise
	seen      bool          // sampled in the current Decide (for pruning)
}

// New returns a Steerer numbering classes with DefaultNumbering.
func New() *Steerer {
	return &Steerer{num: DefaultNumbering(), groups: map[groupKey]*groupState{}, history: map[histKey]*history{}}
}

// NewWithNumbering returns a Steerer whose plans use n (zero fields take
// the defaults); give the Kernel the same numbering.
func NewWithNumbering(n Numbering) (*Steerer, error) {
	n = n.withDefaults()
	if err := n.Validate(); err != nil {
		return nil, err
	}
	s := New()
	s.num = n
	return s, nil
}

// Decide returns the plan for desired state d, destinations dests and the
// tunnels' health. It is pure apart from the Steerer's damping memory: the
// same inputs and the same memory give the same plan.
//
// Per class and per group of destinations (grouped by the remote sites
// their tunnels lead to), the candidates are the group's tunnels ordered
// by the class SLA's Transports preference (see candidateOrder). The fresh
// choice is the first candidate meeting the SLA, else the usable one with
// the smallest SLA excess (see excess), else none. Damping (SLA.Damping >
// 0) then holds on to the current tunnel:
//   - a current tunnel that is unusable, or no longer a candidate, is left
//     at once for the fresh choice (failover never waits);
//   - a more preferred tunnel that has been inside the hysteresis band for
//     Damping takes the class back, even from a current tunnel that meets
//     the SLA;
//   - otherwise the current tunnel is kept while it meets the SLA, and
//     while it has been failing it for less than Damping;
//   - once it has failed for Damping, the class moves to the fresh choice
//     if that meets the SLA; if no tunnel meets it, the class moves to the
//     best of the rest only if that has a smaller excess and the class has
//     been on its current tunnel for Damping (at most one move per Damping
//     while nothing meets the SLA).
//
// "For Damping" means in every Decide over that span: the Steerer only
// sees the samples it is given. A destination that does not list the
// group's choice (possible with BGP, when not every tunnel to a site
// carries every prefix) gets its own fresh choice among its tunnels.
// Destinations are normalized first (masked, IPv4, merged per prefix,
// unknown tunnels and prefixes overlapping a tunnel's /30 dropped).
// d.Paths.Disabled gives an empty plan and forgets all memory.
func (s *Steerer) Decide(now time.Time, d dataplane.Desired, dests []Dest, health map[string]Health) Plan {
	if d.Paths.Disabled {
		clear(s.groups)
		clear(s.history)
		return Plan{}
	}
	tunnels := make(map[string]dataplane.Tunnel, len(d.Tunnels))
	for _, t := range d.Tunnels {
		tunnels[t.ID] = t
	}
	slas := map[string]dataplane.SLA{}
	for _, sla := range d.Paths.SLAs {
		slas[sla.Name] = sla
	}
	classSLA := func(c dataplane.TrafficClass) dataplane.SLA {
		if sla, ok := slas[c.SLA]; ok {
			return sla
		}
		return dataplane.SLA{Name: c.SLA} // invalid desired state: no bounds, no preference
	}

	// Sample every tunnel against every SLA in use.
	for _, h := range s.history {
		h.seen = false
	}
	sampled := map[string]bool{}
	for _, c := range d.Paths.Classes {
		sla := classSLA(c)
		if sampled[sla.Name] {
			continue
		}
		sampled[sla.Name] = true
		for _, t := range d.Tunnels {
			s.sample(now, sla, t.ID, health[t.ID])
		}
	}
	for k, h := range s.history {
		if !h.seen {
			delete(s.history, k)
		}
	}

	ds := normalize(dests, tunnels)
	var plan Plan
	seenGroups := map[groupKey]bool{}
	for i, c := range d.Paths.Classes {
		if i >= dataplane.MaxClasses {
			break
		}
		sla := classSLA(c)
		ct := ClassTable{Class: c.Name, Mark: s.num.Mark(i), Table: s.num.Table(i)}
		for _, g := range groupDests(ds, c, tunnels) {
			key := groupKey{c.Name, g.key}
			seenGroups[key] = true
			cands := candidateOrder(g.tunnels, sla)
			chosen := s.decideGroup(now, key, cands, sla, health)
			plan.Choices = append(plan.Choices, Choice{Class: c.Name, RemoteSite: g.key, TunnelID: chosen,
				MeetsSLA: chosen != "" && meets(health[chosen], sla)})
			for _, dst := range g.dests {
				via := chosen
				if via == "" {
					continue
				}
				if !slices.Contains(dst.Tunnels, via) {
					var own []dataplane.Tunnel
					for _, id := range dst.Tunnels {
						own = append(own, tunnels[id])
					}
					if via = fresh(candidateOrder(own, sla), sla, health); via == "" {
						continue
					}
				}
				t := tunnels[via]
				ct.Routes = append(ct.Routes, Route{Dst: dst.Prefix, Link: t.LinkName, Gw: t.RemoteInner, TunnelID: t.ID})
			}
		}
		slices.SortFunc(ct.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
		plan.Tables = append(plan.Tables, ct)
	}
	for k := range s.groups {
		if !seenGroups[k] {
			delete(s.groups, k)
		}
	}
	return plan
}

// sample records one health sample of tunnel id against sla.
func (s *Steerer) sample(now time.Time, sla dataplane.SLA, id string, h Health) {
	bounds := dataplane.SLA{Name: sla.Name, MaxRTT: sla.MaxRTT, MaxLossPct: sla.MaxLossPct, MaxJitter: sla.MaxJitter, Damping: sla.Damping}
	k := histKey{sla.Name, id}
	r := s.history[k]
	if r == nil || r.bounds.MaxRTT != bounds.MaxRTT || r.bounds.MaxLossPct != bounds.MaxLossPct ||
		r.bounds.MaxJitter != bounds.MaxJitter || r.bounds.Damping != bounds.Damping {
		r = &history{bounds: bounds}
		s.history[k] = r
	}
	r.seen = true
	if meets(h, sla) {
		r.failSince = time.Time{}
	} else if r.failSince.IsZero() {
		r.failSince = now
	}
	if qualifies(h, sla) {
		if r.qualSince.IsZero() {
			r.qualSince = now
		}
	} else {
		r.qualSince = time.Time{}
	}
}

// decideGroup applies the damping rules (see Decide) to one (class, group)
// and remembers the result.
func (s *Steerer) decideGroup(now time.Time, key groupKey, cands []dataplane.Tunnel, sla dataplane.SLA, health map[string]Health) string {
	st := s.groups[key]
	if st == nil {
		st = &groupState{}
		s.groups[key] = st
	}
	choice := s.pick(now, st, cands, sla, health)
	if choice != st.current || st.since.IsZero() {
		st.current, st.since = choice, now
	}
	return choice
}

func (s *Steerer) pick(now time.Time, st *groupState, cands []dataplane.Tunnel, sla dataplane.SLA, health map[string]Health) string {
	best := fresh(cands, sla, health)
	damping := sla.Damping
	cur := st.current
	if damping <= 0 || cur == "" || !health[cur].Usable ||
		!slices.ContainsFunc(cands, func(t dataplane.Tunnel) bool { return t.ID == cur }) {
		return best
	}
	for _, t := range cands {
		if t.ID == cur {
			break
		}
		if r := s.history[histKey{sla.Name, t.ID}]; r != nil && !r.qualSince.IsZero() && now.Sub(r.qualSince) >= damping {
			return t.ID
		}
	}
	if meets(health[cur], sla) {
		return cur
	}
	if r := s.history[histKey{sla.Name, cur}]; r == nil || r.failSince.IsZero() || now.Sub(r.failSince) < damping {
		return cur
	}
	if meets(health[best], sla) {
		return best
	}
	if best != cur && now.Sub(st.since) >= damping && excess(health[best], sla) < excess(health[cur], sla) {
		return best
	}
	return cur
}

// meets reports whether a tunnel with health h meets sla: usable, and every
// non-zero bound holds.
func meets(h Health, sla dataplane.SLA) bool {
	return h.Usable &&
		(sla.MaxRTT <= 0 || h.RTT <= sla.MaxRTT) &&
		(sla.MaxLossPct <= 0 || h.LossPct <= sla.MaxLossPct) &&
		(sla.MaxJitter <= 0 || h.Jitter <= sla.MaxJitter)
}

// qualifies is meets with every bound scaled by Hysteresis.
func qualifies(h Health, sla dataplane.SLA) bool {
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) * Hysteresis) }
	sla.MaxRTT, sla.MaxJitter, sla.MaxLossPct = scale(sla.MaxRTT), scale(sla.MaxJitter), sla.MaxLossPct*Hysteresis
	return meets(h, sla)
}

// excess is how far h is outside sla: the sum over the bounded metrics of
// the relative excess max(0, value/bound - 1). A tunnel at twice the RTT
// bound and 1.5 times the loss bound has excess 1 + 0.5 = 1.5. Unbounded
// metrics (bound 0) add nothing. It is 0 exactly when the bounds hold.
func excess(h Health, sla dataplane.SLA) float64 {
	over := func(v, bound float64) float64 {
		if bound <= 0 || v <= bound {
			return 0
		}
		return v/bound - 1
	}
	return over(float64(h.RTT), float64(sla.MaxRTT)) + over(h.LossPct, sla.MaxLossPct) + over(float64(h.Jitter), float64(sla.MaxJitter))
}

// fresh is the undamped choice among cands (already in preference order):
// the first that meets sla; else the usable one with the smallest excess,
// the earlier on ties; else "".
func fresh(cands []dataplane.Tunnel, sla dataplane.SLA, health map[string]Health) string {
	for _, t := range cands {
		if meets(health[t.ID], sla) {
			return t.ID
		}
	}
	best, bestExcess := "", 0.0
	for _, t := range cands {
		h := health[t.ID]
		if !h.Usable {
			continue
		}
		if e := excess(h, sla); best == "" || e < bestExcess {
			best, bestExcess = t.ID, e
		}
	}
	return best
}

// candidateOrder sorts tunnels by the SLA's preference: the position of
// the tunnel's LocalTransport in sla.Transports; transports not listed
// come after, by name; ties by tunnel ID.
func candidateOrder(ts []dataplane.Tunnel, sla dataplane.SLA) []dataplane.Tunnel {
	rank := func(t dataplane.Tunnel) int {
		if i := slices.Index(sla.Transports, t.LocalTransport); i >= 0 {
			return i
		}
		return len(sla.Transports)
	}
	out := slices.Clone(ts)
	slices.SortFunc(out, func(a, b dataplane.Tunnel) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a.LocalTransport, b.LocalTransport), strings.Compare(a.ID, b.ID))
	})
	return out
}

// group is the destinations of one class that lead to the same set of
// remote sites, and the union of their tunnels.
type group struct {
	key     string
	dests   []Dest
	tunnels []dataplane.Tunnel
}

// groupDests groups the destinations class c applies to (all, or those
// overlapping c.Destinations) by the sorted set of remote sites of their
// tunnels. Groups come sorted by key. dests must be normalized.
func groupDests(dests []Dest, c dataplane.TrafficClass, tunnels map[string]dataplane.Tunnel) []group {
	byKey := map[string]*group{}
	for _, d := range dests {
		if len(c.Destinations) > 0 && !slices.ContainsFunc(c.Destinations, d.Prefix.Overlaps) {
			continue
		}
		var sites []string
		for _, id := range d.Tunnels {
			sites = append(sites, tunnels[id].RemoteSite)
		}
		slices.Sort(sites)
		key := strings.Join(slices.Compact(sites), "+")
		g := byKey[key]
		if g == nil {
			g = &group{key: key}
			byKey[key] = g
		}
		g.dests = append(g.dests, d)
		for _, id := range d.Tunnels {
			if !slices.ContainsFunc(g.tunnels, func(t dataplane.Tunnel) bool { return t.ID == id }) {
				g.tunnels = append(g.tunnels, tunnels[id])
			}
		}
	}
	out := make([]group, 0, len(byKey))
	for _, g := range byKey {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b group) int { return strings.Compare(a.key, b.key) })
	return out
}

// normalize returns dests with prefixes masked, IPv4 only, one Dest per
// prefix (tunnel lists merged), tunnel IDs known in tunnels, sorted and
// unique, Dests without a known tunnel dropped, sorted by prefix.
//
// A prefix overlapping a tunnel's inner /30 is dropped too: a class route
// to it would send that tunnel's probes and BGP session (from the edge
// itself, through the output chain) over another tunnel. The controller
// keeps LAN prefixes out of the tunnel pool, so this is a guard only.
func normalize(dests []Dest, tunnels map[string]dataplane.Tunnel) []Dest {
	var inner []netip.Prefix
	for _, t := range tunnels {
		if t.LocalInner.IsValid() {
			inner = append(inner, t.LocalInner.Masked())
		}
	}
	byPrefix := map[netip.Prefix][]string{}
	for _, d := range dests {
		if !d.Prefix.IsValid() || !d.Prefix.Addr().Is4() || slices.ContainsFunc(inner, d.Prefix.Overlaps) {
			continue
		}
		p := d.Prefix.Masked()
		for _, id := range d.Tunnels {
			if _, ok := tunnels[id]; ok {
				byPrefix[p] = append(byPrefix[p], id)
			}
		}
	}
	out := make([]Dest, 0, len(byPrefix))
	for p, ids := range byPrefix {
		slices.Sort(ids)
		out = append(out, Dest{Prefix: p, Tunnels: slices.Compact(ids)})
	}
	slices.SortFunc(out, func(a, b Dest) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

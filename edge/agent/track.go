package agent

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/plan"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/steer"
)

// PathHealth is one tunnel's probe results as the agent reports them.
type PathHealth struct {
	Probed      bool // a probe target exists (its SA is installed)
	State       probe.State
	RTT, RTTP99 time.Duration
	Jitter      time.Duration
	LossPct     float64
	Transitions uint64
	Usable      bool
	HoldDown    bool // up, but waiting for the hold-down to pass
}

// Tracker is the path tracking state machine: per tunnel its probe
// state, whether its outbound SA is installed, its recoveries (for the
// hold-down) and when it was last usable (for the fallback rank), plus
// the steering damping (steer.Steerer). It does no I/O: the owner feeds
// it probe events, SA listings and the clock, and asks it for the path
// view. Not safe for concurrent use (the owner's goroutine owns it).
//
// Rules:
//   - a tunnel is usable when its probes say up, its SA is installed and,
//     after a recovery (down -> up, or the SA coming back after the
//     tunnel had been usable), the hold-down has passed; the first up after start has
//     no hold-down so a fresh edge forwards at once;
//   - an unusable tunnel's fallback rank is MaxInt64 while in hold-down,
//     else the time it last stopped being usable (0: never usable), so
//     when every tunnel to a destination is out the routes stay on the
//     one usable most recently rather than return to a dead primary.
type Tracker struct {
	pol   dataplane.PathPolicy
	ids   []string                 // desired tunnels, in desired order
	pairs map[string][2]netip.Addr // tunnel id -> underlay pair
	// unprobed holds the tunnels to third-party routers (no reflector):
	// judged by their SA alone.
	unprobed map[string]bool
	tracks   map[string]*tunnelTrack
	steerer  *steer.Steerer
	// sas is the last SA listing (nil: none yet), so a tunnel added later
	// starts with what the kernel holds.
	sas     map[[2]netip.Addr]bool
	sasSeen bool
}

// tunnelTrack is the tracker's memory of one tunnel.
type tunnelTrack struct {
	state     probe.State
	everUp    bool      // was up at least once (so a later up is a recovery)
	recovered time.Time // when the last recovery happened (hold-down start)
	sa        bool      // outbound SA installed
	usable    bool      // usable at the last View
	lastUsed  time.Time // when it last stopped being usable (zero: never was)
}

// NewTracker returns a tracker with no tunnels.
func NewTracker() *Tracker {
	return &Tracker{tracks: map[string]*tunnelTrack{}, pairs: map[string][2]netip.Addr{}, unprobed: map[string]bool{}, steerer: steer.New()}
}

// SetDesired takes a new desired state: tunnels are added and removed
// (a kept tunnel keeps its memory). It returns whether the probe timing
// changed, so the prober must be restarted; then the caller calls Reset
// once the new prober runs.
func (k *Tracker) SetDesired(d dataplane.Desired) (restart bool) {
	pol := d.Paths.WithDefaults()
	restart = pol.ProbeInterval != k.pol.ProbeInterval || pol.DownAfter != k.pol.DownAfter || pol.UpAfter != k.pol.UpAfter || pol.Disabled != k.pol.Disabled
	k.pol = pol
	k.ids = k.ids[:0]
	clear(k.pairs)
	clear(k.unprobed)
	for _, t := range d.Tunnels {
		k.ids = append(k.ids, t.ID)
		if t.RemoteUnmanaged {
			k.unprobed[t.ID] = true
		}
		k.pairs[t.ID] = [2]netip.Addr{t.LocalUnderlay, t.RemoteUnderlay}
		if k.tracks[t.ID] == nil {
			k.tracks[t.ID] = &tunnelTrack{sa: k.sasSeen && (k.sas == nil || k.sas[k.pairs[t.ID]])}
		}
	}
	maps.DeleteFunc(k.tracks, func(id string, _ *tunnelTrack) bool { _, ok := k.pairs[id]; return !ok })
	return restart
}

// Reset forgets every tunnel's probe memory (a new prober starts with
// fresh statistics); SA knowledge is kept.
func (k *Tracker) Reset() {
	for id, t := range k.tracks {
		k.tracks[id] = &tunnelTrack{sa: t.sa}
	}
}

// Policy is the path policy of the last desired state, defaults filled.
func (k *Tracker) Policy() dataplane.PathPolicy { return k.pol }

// Event takes one probe transition.
func (k *Tracker) Event(ev probe.Event) {
	t := k.tracks[ev.Tunnel]
	if t == nil {
		return
	}
	if ev.To == probe.StateUp {
		if t.everUp {
			t.recovered = ev.At
		}
		t.everUp = true
	}
	t.state = ev.To
}

// SAs takes a listing of the installed outbound SAs as (local, remote)
// underlay pairs; nil means every tunnel has one. An SA coming back
// after the tunnel had been up starts a hold-down.
func (k *Tracker) SAs(now time.Time, sas map[[2]netip.Addr]bool) {
	k.sas, k.sasSeen = sas, true
	for id, t := range k.tracks {
		has := sas == nil || sas[k.pairs[id]]
		// A return after the tunnel had carried traffic is a recovery;
		// an SA showing up for a tunnel never usable yet is not.
		if has && !t.sa && (t.usable || !t.lastUsed.IsZero()) {
			t.recovered = now
		}
		t.sa = has
	}
}

// Probed reports which tunnels have their SA installed (the prober's
// gate: probing earlier sends packets into the trap policy, which starts
// an IKE negotiation of its own and raced the far end's in the lab). A
// tunnel to an unmanaged site is never probed.
func (k *Tracker) Probed() map[string]bool {
	out := make(map[string]bool, len(k.tracks))
	for id, t := range k.tracks {
		out[id] = t.sa && !k.unprobed[id]
	}
	return out
}

// WaitingForSA reports whether some tunnel has no SA yet (poll faster).
func (k *Tracker) WaitingForSA() bool {
	for _, t := range k.tracks {
		if !t.sa {
			return true
		}
	}
	return false
}

// View computes the path view at now from the probe statistics (by
// tunnel id) and the steering destinations, and each tunnel's health.
// With probing disabled the view has no verdicts (every tunnel may carry
// traffic) and there is no health.
func (k *Tracker) View(now time.Time, d dataplane.Desired, snaps map[string]probe.TunnelSnapshot, dests []steer.Dest) (plan.PathView, map[string]PathHealth) {
	if k.pol.Disabled {
		return plan.PathView{}, nil
	}
	health := make(map[string]PathHealth, len(k.ids))
	usable := make(map[string]bool, len(k.ids))
	fallback := map[string]int64{}
	sh := make(map[string]steer.Health, len(k.ids))
	for _, id := range k.ids {
		t := k.tracks[id]
		s := snaps[id]
		h := PathHealth{Probed: t.sa, State: t.state, RTT: s.SRTT, RTTP99: s.P99, Jitter: s.Jitter, LossPct: s.LossPct, Transitions: s.Transitions}
		up := t.sa && t.state == probe.StateUp
		if k.unprobed[id] {
			// No reflector at a third-party router: the SA is all
			// there is to judge by (usable while installed).
			h = PathHealth{}
			up = t.sa
		}
		h.HoldDown = up && !t.recovered.IsZero() && now.Sub(t.recovered) < k.pol.HoldDown
		h.Usable = up && !h.HoldDown
		health[id], usable[id] = h, h.Usable
		if t.usable && !h.Usable {
			t.lastUsed = now
		}
		t.usable = h.Usable
		switch {
		case h.Usable:
		case h.HoldDown:
			fallback[id] = math.MaxInt64
		case !t.lastUsed.IsZero():
			fallback[id] = t.lastUsed.UnixNano()
		}
		sh[id] = steer.Health{Usable: h.Usable, RTT: s.SRTT, Jitter: s.Jitter, LossPct: s.LossPct}
	}
	var sp steer.Plan
	if len(k.pol.Classes) > 0 {
		sp = k.steerer.Decide(now, d, dests, sh)
	}
	return plan.PathView{Usable: usable, Fallback: fallback, Steer: sp}, health
}

// sameReportable compares what makes a report urgent: states and
// usability, not the figures (those go out with the next summary).
func sameReportable(a, b map[string]PathHealth) bool {
	return maps.EqualFunc(a, b, func(x, y PathHealth) bool {
		return x.Probed == y.Probed && x.State == y.State && x.Usable == y.Usable && x.HoldDown == y.HoldDown
	})
}

func usableList(u map[string]bool) []string {
	var out []string
	for id, ok := range u {
		if ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func describeUsable(h PathHealth) string {
	switch {
	case !h.Probed:
		return "not probed: no installed IPsec SA"
	case h.State == probe.StateDown:
		return fmt.Sprintf("probes unanswered (loss %.0f%%)", h.LossPct)
	case h.HoldDown:
		return "recovered, in hold-down"
	case h.State == probe.StateUnknown:
		return "no probe answered yet"
	}
	return ""
}

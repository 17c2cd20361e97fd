package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/steer"
)

// PathView is what the probes decided, for the kernel: which tunnels may
// carry traffic and how traffic classes are steered.
type PathView struct {
	// Usable maps tunnel id -> carries traffic (probes up, hold-down over,
	// IPsec SA installed). nil means "no verdicts": every tunnel may.
	Usable map[string]bool
	// Fallback ranks the unusable tunnels for when every tunnel to a
	// destination is unusable (higher is better, 0 = never usable): a
	// tunnel in hold-down (up again) first, then the one usable most
	// recently. Values change only on transitions, so a view stays equal
	// between them.
	Fallback map[string]int64
	// Plan is the SLA steering plan (no tables when there are no classes).
	Plan steer.Plan
}

// Equal reports whether two views program the kernel the same way.
func (v PathView) Equal(o PathView) bool {
	return maps.Equal(v.Usable, o.Usable) && maps.Equal(v.Fallback, o.Fallback) && reflect.DeepEqual(v.Plan, o.Plan)
}

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

// PathsConfig configures Paths.
type PathsConfig struct {
	Logger *slog.Logger
	// Listen opens the probe sockets (default probe.ListenUDP).
	Listen probe.ListenFunc
	// ListenReflector opens the socket the reflector answers on; nil
	// means no reflector (tests run their own). The real edge listens on
	// 0.0.0.0:7402.
	ListenReflector func(ctx context.Context) (probe.PacketConn, error)
	// SAs returns the (local, remote) underlay pairs that have an
	// installed outbound ESP SA; nil means every tunnel has one.
	SAs func() (map[[2]netip.Addr]bool, error)
	// Apply programs a view (Kernel.ApplyPaths).
	Apply func(ctx context.Context, d dataplane.Desired, v PathView) error
	// Dests returns the steering destinations (nil: the desired state's
	// static routes, steer.DestsFromDesired).
	Dests func(ctx context.Context, d dataplane.Desired) []steer.Dest
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Paths owns probing and probe-driven forwarding on the edge: a Prober
// for every tunnel, a Reflector answering the far ends, each tunnel's
// usability with hold-down, and the SLA steering decisions; it hands the
// result to the kernel as a PathView whenever it changes.
//
// Rules:
//   - a tunnel is probed only while it has an installed outbound IPsec SA.
//     Probing earlier sends packets into the trap policy, which starts an
//     IKE negotiation of its own; on the passive end that raced the
//     active end's and made duplicate SAs (seen in the VM lab);
//   - a tunnel is usable when its probes say up, its SA is installed and,
//     after a recovery (down -> up, or the SA coming back after it had
//     been up), the hold-down has passed; the first up after start has no
//     hold-down so a fresh edge forwards at once;
//   - the view is recomputed on every probe event, every probe interval
//     (hold-down expiry, damping) and every SA poll, and applied only when
//     it differs from the last one applied (or that one failed).
//
// Concurrency: Run owns the goroutines (prober, reflector, loop). Update,
// Status, Choices and Changed may be called from any goroutine.
type Paths struct {
	cfg PathsConfig
	log *slog.Logger

	desired chan dataplane.Desired // cap 1, latest wins
	changed chan struct{}          // cap 1: report now

	mu      sync.Mutex
	health  map[string]PathHealth
	choices []steer.Choice
	prober  *probe.Prober // current one, for Snapshot (metrics)
}

// NewPaths returns Paths; Run drives it.
func NewPaths(cfg PathsConfig) *Paths {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == nil {
		cfg.Listen = probe.ListenUDP
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Paths{cfg: cfg, log: cfg.Logger, desired: make(chan dataplane.Desired, 1), changed: make(chan struct{}, 1)}
}

// Update hands Paths a new desired state; it never blocks.
func (p *Paths) Update(d dataplane.Desired) {
	select {
	case <-p.desired:
	default:
	}
	p.desired <- d
}

// Changed is signalled when a tunnel's state, usability or a class's
// path changed: the agent reports at once rather than at the next tick.
func (p *Paths) Changed() <-chan struct{} { return p.changed }

// Status returns each probed tunnel's health by tunnel id.
func (p *Paths) Status() map[string]PathHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.health)
}

// Choices returns the current steering choices.
func (p *Paths) Choices() []steer.Choice {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.choices)
}

// Snapshot returns the current prober's statistics (for metrics).
func (p *Paths) Snapshot() []probe.TunnelSnapshot {
	p.mu.Lock()
	pr := p.prober
	p.mu.Unlock()
	if pr == nil {
		return nil
	}
	return pr.Snapshot()
}

// tunnelTrack is the loop's memory of one tunnel.
type tunnelTrack struct {
	state     probe.State
	everUp    bool      // was up at least once (so a later up is a recovery)
	recovered time.Time // when the last recovery happened (hold-down start)
	sa        bool      // outbound SA installed
	usable    bool      // usable at the last recompute
	lastUsed  time.Time // when it last stopped being usable (zero: never was)
}

// Run probes and steers until ctx ends.
func (p *Paths) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.cfg.ListenReflector != nil {
		wg.Go(func() { p.runReflector(ctx) })
	}

	var (
		d        dataplane.Desired
		have     bool
		pol      dataplane.PathPolicy
		prober   *probe.Prober
		stopProb context.CancelFunc
		probDone chan struct{}
		events   <-chan probe.Event
		tracks   = map[string]*tunnelTrack{}
		steerer  = steer.New()
		applied  PathView
		okApply  bool
		retryAt  time.Time
		backoff  = 100 * time.Millisecond
	)
	stopProber := func() {
		if stopProb != nil {
			stopProb()
			<-probDone
			stopProb, prober, events = nil, nil, nil
		}
	}
	defer stopProber()
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	saTick := time.NewTicker(time.Hour)
	defer saTick.Stop()

	startProber := func() error {
		stopProber()
		pr, err := probe.NewProber(probe.Config{
			Interval: pol.ProbeInterval, Listen: p.cfg.Listen, Log: p.log, Events: 256,
			Stats: probe.StatsConfig{DownAfter: pol.DownAfter, UpAfter: pol.UpAfter},
			Gate: func(id string) bool {
				p.mu.Lock()
				defer p.mu.Unlock()
				return p.health[id].Probed
			},
		})
		if err != nil {
			return err
		}
		pctx, pcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { // owned by Run through stopProber
			defer close(done)
			_ = pr.Run(pctx)
		}()
		prober, stopProb, probDone, events = pr, pcancel, done, pr.Events()
		p.mu.Lock()
		p.prober = pr
		p.mu.Unlock()
		clear(tracks) // fresh statistics: no memory of earlier states
		return nil
	}

	pollSAs := func() {
		if p.cfg.SAs == nil {
			for _, t := range tracks {
				t.sa = true
			}
			return
		}
		sas, err := p.cfg.SAs()
		if err != nil {
			p.log.Warn("listing IPsec SAs failed", "err", err)
			return
		}
		now := p.cfg.Now()
		for _, tn := range d.Tunnels {
			t := tracks[tn.ID]
			has := sas[[2]netip.Addr{tn.LocalUnderlay, tn.RemoteUnderlay}]
			if has && !t.sa && t.everUp {
				t.recovered = now // the SA came back: hold down again
			}
			t.sa = has
		}
	}

	// recompute derives health and the view, applies the view when it
	// changed, and signals Changed when anything reportable changed.
	recompute := func() {
		if !have || pol.Disabled {
			return
		}
		now := p.cfg.Now()
		snaps := map[string]probe.TunnelSnapshot{}
		if prober != nil {
			for _, s := range prober.Snapshot() {
				snaps[s.Target.Tunnel] = s
			}
		}
		health := make(map[string]PathHealth, len(d.Tunnels))
		usable := make(map[string]bool, len(d.Tunnels))
		fallback := map[string]int64{}
		sh := make(map[string]steer.Health, len(d.Tunnels))
		for _, tn := range d.Tunnels {
			t := tracks[tn.ID]
			s := snaps[tn.ID]
			h := PathHealth{Probed: t.sa, State: t.state, RTT: s.SRTT, RTTP99: s.P99, Jitter: s.Jitter, LossPct: s.LossPct, Transitions: s.Transitions}
			up := t.sa && t.state == probe.StateUp
			h.HoldDown = up && !t.recovered.IsZero() && now.Sub(t.recovered) < pol.HoldDown
			h.Usable = up && !h.HoldDown
			health[tn.ID], usable[tn.ID] = h, h.Usable
			if t.usable && !h.Usable {
				t.lastUsed = now
			}
			t.usable = h.Usable
			switch {
			case h.Usable:
			case h.HoldDown:
				fallback[tn.ID] = math.MaxInt64
			case !t.lastUsed.IsZero():
				fallback[tn.ID] = t.lastUsed.UnixNano()
			}
			sh[tn.ID] = steer.Health{Usable: h.Usable, RTT: s.SRTT, Jitter: s.Jitter, LossPct: s.LossPct}
		}
		var dests []steer.Dest
		if len(pol.Classes) > 0 {
			if p.cfg.Dests != nil {
				dests = p.cfg.Dests(ctx, d)
			} else {
				dests = steer.DestsFromDesired(d)
			}
		}
		plan := steerer.Decide(now, d, dests, sh)
		view := PathView{Usable: usable, Fallback: fallback, Plan: plan}

		p.mu.Lock()
		report := !sameReportable(p.health, health) || !slices.Equal(p.choices, plan.Choices)
		p.health, p.choices = health, plan.Choices
		p.mu.Unlock()
		if report {
			select {
			case p.changed <- struct{}{}:
			default:
			}
		}
		if okApply && view.Equal(applied) || now.Before(retryAt) {
			return
		}
		if err := p.cfg.Apply(ctx, d, view); err != nil {
			if ctx.Err() == nil {
				p.log.Error("applying path decisions failed, will retry", "err", err, "retry_in", backoff)
			}
			okApply, retryAt = false, now.Add(backoff)
			backoff = min(backoff*2, 10*time.Second)
			return
		}
		if !okApply || !maps.Equal(view.Usable, applied.Usable) {
			p.log.Info("path decisions applied", "usable", usableList(view.Usable))
		}
		applied, okApply, retryAt, backoff = view, true, time.Time{}, 100*time.Millisecond
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case nd := <-p.desired:
			npol := nd.Paths.WithDefaults()
			if npol.Disabled {
				stopProber()
				d, have, pol = nd, true, npol
				p.mu.Lock()
				p.health, p.choices, p.prober = nil, nil, nil
				p.mu.Unlock()
				okApply = false
				if err := p.cfg.Apply(ctx, d, PathView{}); err != nil && ctx.Err() == nil {
					p.log.Error("clearing path decisions failed", "err", err)
				}
				continue
			}
			restart := prober == nil || npol.ProbeInterval != pol.ProbeInterval || npol.DownAfter != pol.DownAfter || npol.UpAfter != pol.UpAfter
			d, have, pol = nd, true, npol
			if restart {
				if err := startProber(); err != nil {
					p.log.Error("probing not started", "err", err)
					continue
				}
				tick.Reset(pol.ProbeInterval)
			}
			var targets []probe.Target
			for _, tn := range d.Tunnels {
				if tracks[tn.ID] == nil {
					tracks[tn.ID] = &tunnelTrack{}
				}
				targets = append(targets, probe.Target{Tunnel: tn.ID, Local: tn.LocalInner.Addr(), Remote: netip.AddrPortFrom(tn.RemoteInner, 0)})
			}
			for id := range tracks {
				if !slices.ContainsFunc(d.Tunnels, func(t dataplane.Tunnel) bool { return t.ID == id }) {
					delete(tracks, id)
				}
			}
			if err := prober.Apply(targets); err != nil {
				p.log.Error("probe targets refused", "err", err)
			}
			pollSAs()
			saTick.Reset(250 * time.Millisecond)
			okApply = false // the desired state changed: re-apply the view with it
			recompute()
		case ev := <-events:
			if t := tracks[ev.Tunnel]; t != nil {
				if ev.To == probe.StateUp && t.everUp {
					t.recovered = ev.At
				}
				if ev.To == probe.StateUp {
					t.everUp = true
				}
				t.state = ev.To
				p.log.Info("tunnel path state", "tunnel_id", ev.Tunnel, "from", ev.From.String(), "to", ev.To.String())
			}
			recompute()
		case <-saTick.C:
			pollSAs()
			// Poll fast while a tunnel waits for its SA, slowly otherwise.
			every := time.Second
			for _, t := range tracks {
				if !t.sa {
					every = 250 * time.Millisecond
				}
			}
			saTick.Reset(every)
			recompute()
		case <-tick.C:
			recompute()
		}
	}
}

func (p *Paths) runReflector(ctx context.Context) {
	for {
		conn, err := p.cfg.ListenReflector(ctx)
		if err == nil {
			err = probe.NewReflector(conn, p.log).Run(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		p.log.Error("probe reflector stopped, restarting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
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

// RoutedDesired is d with the static routes the view rules out: per
// prefix, only the usable tunnels listing it keep it. When none is
// usable, the best-ranked by v.Fallback keep it (a tunnel back up but in
// hold-down, else the one usable most recently: when the primary is cut
// and the backup's probes stumble for a moment, traffic stays on the
// backup rather than returning to the dead primary); when none was ever
// usable, every tunnel keeps it (fail-open: the probes may be what is
// broken, and the routes stay as the controller gave them). With
// v.Usable nil, d is returned unchanged. Pure.
func RoutedDesired(d dataplane.Desired, v PathView) dataplane.Desired {
	if v.Usable == nil {
		return d
	}
	rank := func(id string) int64 {
		if v.Usable[id] {
			return math.MaxInt64
		}
		return min(v.Fallback[id], math.MaxInt64-1)
	}
	best := map[netip.Prefix]int64{}
	for _, t := range d.Tunnels {
		for _, p := range t.RemoteLANs {
			best[p] = max(best[p], rank(t.ID))
		}
	}
	out := d
	out.Tunnels = slices.Clone(d.Tunnels)
	for i, t := range out.Tunnels {
		r := rank(t.ID)
		out.Tunnels[i].RemoteLANs = slices.DeleteFunc(slices.Clone(t.RemoteLANs), func(p netip.Prefix) bool { return r < best[p] })
	}
	return out
}

// ExcludedNextHops lists the far-end addresses of unusable tunnels, for
// BGP route choice (bgp.Choose; nil usable: none).
func ExcludedNextHops(d dataplane.Desired, usable map[string]bool) []netip.Addr {
	if usable == nil {
		return nil
	}
	var out []netip.Addr
	for _, t := range d.Tunnels {
		if !usable[t.ID] {
			out = append(out, t.RemoteInner)
		}
	}
	return out
}

// BGPDests maps BGP candidates (prefix -> next hops) to steering
// destinations (prefix -> tunnels whose far end is a next hop). Pure.
func BGPDests(d dataplane.Desired, cands map[netip.Prefix][]netip.Addr) []steer.Dest {
	byNH := map[netip.Addr]string{}
	for _, t := range d.Tunnels {
		byNH[t.RemoteInner] = t.ID
	}
	var out []steer.Dest
	for _, pfx := range slices.SortedFunc(maps.Keys(cands), func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	}) {
		var ids []string
		for _, nh := range cands[pfx] {
			if id, ok := byNH[nh]; ok {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			slices.Sort(ids)
			out = append(out, steer.Dest{Prefix: pfx, Tunnels: slices.Compact(ids)})
		}
	}
	return out
}

var errNoSteer = errors.New("steering: the policy has traffic classes but this agent runs without the steering backend")

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

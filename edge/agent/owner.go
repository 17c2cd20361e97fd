// Package agent is the edge's data-plane owner: ONE goroutine
// (Owner.Run) writes the edge's kernel state. Its inputs are newest-wins
// slots: the desired state (from the controller through the syncer, or
// the cache on disk), probe verdicts (it runs the prober and the path
// Tracker), the BGP speaker's RIB, and the IPsec worker's
// acknowledgements. Each iteration it computes one plan (plan.Make, pure)
// and applies the difference in a fixed order: firewall, links, routes,
// steering; then it hands the IPsec and BGP parts to their workers
// (goroutines it owns) without waiting for them. A failover therefore
// never queues behind charon or GoBGP: the route switch after a verdict
// is the owner's next iteration.
//
// Because the desired state is cached on disk, an edge whose controller
// is unreachable brings its tunnels up from the last state it was given
// and keeps them. A periodic, jittered full resync repairs drift (a link
// deleted by hand, a flushed table); on an unchanged kernel it writes
// nothing. The owner reports every StatusEvery and at once when a
// tunnel's state, usability or a class's path changes.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/edge/backoff"
	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/identity"
	"github.com/meshwan/meshwan/edge/plan"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/steer"
	"github.com/meshwan/meshwan/edge/syncer"
)

// Config configures an Owner.
type Config struct {
	StateDir string
	Logger   *slog.Logger
	// WANInterfaces are copied into every desired state (local knowledge
	// the controller does not have).
	WANInterfaces []string

	Firewall Firewall
	Links    Links
	// Steering programs the SLA steering plan (nil: traffic classes are
	// refused).
	Steering Steering
	IPsec    IPsec
	// SAs lists the kernel's ESP SAs (nil: every tunnel counts as having
	// its SA, and retiring links are deleted without waiting).
	SAs SAList
	// BGP starts the speaker (nil: a desired state asking for BGP is
	// refused by the BGP worker).
	BGP StartBGP
	// LANPeers are routers on the site's LAN that peer with the edge.
	LANPeers []bgp.Neighbor

	// NewProber makes the prober (default probe.NewProber); nil Listen in
	// the config means probe.ListenUDP.
	NewProber func(probe.Config) (Prober, error)
	// Listen opens the probe sockets (default probe.ListenUDP).
	Listen probe.ListenFunc
	// ListenReflector opens the socket the reflector answers on; nil
	// means no reflector (tests run their own). The real edge listens on
	// 0.0.0.0:7402.
	ListenReflector func(ctx context.Context) (probe.PacketConn, error)

	// Resync is the period of the drift-repairing full apply (default
	// 30 s, jittered by ±10 %).
	Resync time.Duration
	// StatusEvery is the period of status reports (default 1 s).
	StatusEvery time.Duration
	// KernelStatusEvery is how often links, charon and GoBGP are asked
	// for status (default 5 s); the reports in between reuse it with
	// fresh probe figures. Asking charon every second multiplies its
	// kernel XFRM queries for no gain: the probes see a dead tunnel first.
	KernelStatusEvery time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// cacheFile holds the last desired state, PSKs included: mode 0600.
const cacheFile = "desired.json"

// Owner owns the edge's kernel state. Run is its goroutine; Applied,
// Health, Choices and Snapshot may be called from any goroutine.
type Owner struct {
	cfg     Config
	log     *slog.Logger
	applied atomic.Int64

	desired slot[syncer.State]
	rib     slot[*bgp.RIB]
	sas     slot[map[[2]netip.Addr]bool]
	ipsecW  *ipsecWorker
	bgpW    *bgpWorker

	// gate is the prober's view of which tunnels have their SA (read on
	// the prober's goroutines).
	gate atomic.Pointer[map[string]bool]
	// saFast: some tunnel waits for its SA; the poller polls faster.
	saFast atomic.Bool

	mu      sync.Mutex // guards the published view below
	health  map[string]PathHealth
	choices []steer.Choice
	prober  Prober
}

// New returns an Owner.
func New(cfg Config) *Owner {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.StatusEvery == 0 {
		cfg.StatusEvery = time.Second
	}
	if cfg.KernelStatusEvery == 0 {
		cfg.KernelStatusEvery = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Listen == nil {
		cfg.Listen = probe.ListenUDP
	}
	if cfg.NewProber == nil {
		cfg.NewProber = func(c probe.Config) (Prober, error) { return probe.NewProber(c) }
	}
	o := &Owner{cfg: cfg, log: cfg.Logger, desired: newSlot[syncer.State](), rib: newSlot[*bgp.RIB](), sas: newSlot[map[[2]netip.Addr]bool]()}
	o.saFast.Store(true) // until the first plan says otherwise
	o.ipsecW = &ipsecWorker{backend: cfg.IPsec, sas: cfg.SAs, log: cfg.Logger.With("worker", "ipsec"), statusEvery: cfg.KernelStatusEvery,
		in: newSlot[ipsecInput](), ack: newSlot[ipsecAck](), status: newSlot[[]ipsec.Status]()}
	o.bgpW = &bgpWorker{start: cfg.BGP, log: cfg.Logger.With("worker", "bgp"), statusEvery: cfg.KernelStatusEvery,
		in: newSlot[bgpInput](), ack: newSlot[bgpAck](), status: newSlot[[]dataplane.BGPPeer](), rib: o.rib}
	return o
}

// Applied is the version last applied completely (0 if none): the
// owner's steps and the IPsec and BGP workers' acknowledgements.
func (o *Owner) Applied() int64 { return o.applied.Load() }

// Health returns each probed tunnel's health by tunnel id. The map is
// shared (the owner publishes a new one each iteration): do not modify.
func (o *Owner) Health() map[string]PathHealth {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.health
}

// Choices returns the current steering choices (shared: do not modify).
func (o *Owner) Choices() []steer.Choice {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.choices
}

// Snapshot returns the current prober's statistics (for metrics).
func (o *Owner) Snapshot() []probe.TunnelSnapshot {
	o.mu.Lock()
	pr := o.prober
	o.mu.Unlock()
	if pr == nil {
		return nil
	}
	return pr.Snapshot()
}

// LoadCache reads the cached desired state.
func (o *Owner) LoadCache() (syncer.State, bool, error) {
	raw, err := os.ReadFile(filepath.Join(o.cfg.StateDir, cacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return syncer.State{}, false, nil
	}
	if err != nil {
		return syncer.State{}, false, err
	}
	var st syncer.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return syncer.State{}, false, fmt.Errorf("cached state %s: %w", cacheFile, err)
	}
	return st, true, nil
}

func (o *Owner) saveCache(st syncer.State) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return identity.WriteFileAtomic(filepath.Join(o.cfg.StateDir, cacheFile), raw, 0o600)
}

// loop is the owner goroutine's state. Only Run's goroutine touches it.
type loop struct {
	o   *Owner
	ctx context.Context

	cur  syncer.State
	d    dataplane.Desired // cur.Desired with WANInterfaces
	have bool

	tracker  *Tracker
	prober   Prober
	stopProb context.CancelFunc
	probDone chan struct{}
	events   <-chan probe.Event
	tick     *time.Ticker // probe interval: hold-down expiry, damping

	rib          *bgp.RIB
	adopted      []kernel.Route
	previous     []dataplane.Tunnel
	linksApplied map[string]bool
	ack          ipsecAck
	bgpAck       bgpAck
	retireGen    map[string]uint64
	view         plan.PathView
	health       map[string]PathHealth
	choices      []steer.Choice

	// What was applied last and whether it went through.
	fw        *dataplane.Desired
	links     *dataplane.Desired
	routes    []kernel.Route
	routesOK  bool
	steerIn   *steerInput
	ipsecIn   *ipsecInput
	ipsecGen  uint64
	bgpIn     *bgpInput
	bgpGen    uint64
	force     bool // resync: apply every step even if unchanged
	failed    bool // a step failed: retry
	bo        *backoff.Backoff
	retry     *time.Timer
	pendingV  int64 // version waiting for the workers' acknowledgement
	ipsecWant uint64
	bgpWant   uint64

	linkSt    []link.Status
	ipsecSt   []ipsec.Status
	bgpPeers  []dataplane.BGPPeer
	kernelAt  time.Time
	reportNow bool
}

type steerInput struct {
	classes []dataplane.TrafficClass
	plan    steer.Plan
}

// Run applies the cached state, then every update, until ctx ends. report
// receives status reports (nil: none are sent). The goroutines it starts
// (workers, prober, reflector, SA poller) end before it returns.
func (o *Owner) Run(ctx context.Context, updates <-chan syncer.State, report func(syncer.Report)) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	l := &loop{o: o, ctx: ctx, tracker: NewTracker(), linksApplied: map[string]bool{}, retireGen: map[string]uint64{},
		bo: retryPolicy.New(), retry: time.NewTimer(time.Hour), tick: time.NewTicker(time.Hour)}
	l.retry.Stop()
	defer l.retry.Stop()
	defer l.tick.Stop()
	defer l.stopProber()

	// Graceful restart: the BGP routes a previous process left in the
	// kernel are kept while the new speaker's RIB is missing or holding.
	if rs, err := o.cfg.Links.Routes(ctx); err != nil {
		o.log.Warn("listing the kernel's routes failed; no BGP routes adopted", "err", err)
	} else {
		for _, r := range rs {
			if r.Protocol == kernel.ProtoBGP {
				l.adopted = append(l.adopted, r)
			}
		}
		if len(l.adopted) > 0 {
			o.log.Info("restart: adopted kernel BGP routes until the RIB is resynchronised", "routes", len(l.adopted))
		}
	}
	o.bgpW.restarting = len(l.adopted) > 0
	wg.Go(func() { o.ipsecW.run(ctx) })
	wg.Go(func() { o.bgpW.run(ctx) })
	if o.cfg.SAs != nil {
		wg.Go(func() { o.pollSAs(ctx) })
	}
	if o.cfg.ListenReflector != nil {
		wg.Go(func() { o.runReflector(ctx) })
	}
	if updates != nil {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case st := <-updates:
					o.desired.put(st)
				}
			}
		})
	}

	if st, ok, err := o.LoadCache(); err != nil {
		o.log.Error("ignoring unreadable cache", "err", err)
	} else if ok {
		o.log.Info("applying cached desired state", "version", st.Version, "tunnels", len(st.Desired.Tunnels))
		// What the previous process applied: its tunnels' links are
		// retired through IPsec like any removed tunnel's.
		l.previous = st.Desired.Tunnels
		l.take(st, false)
	}

	resync := time.NewTimer(l.jittered())
	defer resync.Stop()
	statusT := time.NewTicker(o.cfg.StatusEvery)
	defer statusT.Stop()
	for {
		if l.have {
			l.step()
			if l.reportNow {
				l.reportNow = false
				l.report(report)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case st := <-o.desired.c:
			l.take(st, true)
		case ev := <-l.events:
			l.event(ev)
			// Take every verdict already queued before planning once.
			for more := true; more; {
				select {
				case ev := <-l.events:
					l.event(ev)
				default:
					more = false
				}
			}
		case r := <-o.rib.c:
			l.rib = r
			if r != nil && !r.Holding && l.adopted != nil {
				l.adopted = nil // the RIB is resynchronised: adopted routes are the RIB's business now
			}
		case a := <-o.ipsecW.ack.c:
			l.ack = a
		case a := <-o.bgpW.ack.c:
			l.bgpAck = a
		case sas := <-o.sas.c:
			l.tracker.SAs(o.cfg.Now(), sas)
		case <-l.tick.C:
		case <-l.retry.C:
		case <-resync.C:
			resync.Reset(l.jittered())
			l.force = true
		case <-statusT.C:
			if l.have {
				l.report(report)
			}
		}
	}
}

// jittered is the resync period ±10 %, so edges started together do not
// all hit their kernels and the controller in the same instant.
func (l *loop) jittered() time.Duration {
	r := l.o.cfg.Resync
	return r*9/10 + time.Duration(rand.Int64N(int64(r)/5+1))
}

// take makes st the desired state (validated; saved to the cache when it
// came from the controller).
func (l *loop) take(st syncer.State, save bool) {
	o := l.o
	d := st.Desired
	d.WANInterfaces = o.cfg.WANInterfaces
	if err := d.Validate(); err != nil {
		o.log.Error("desired state refused", "version", st.Version, "err", err)
		return
	}
	if save {
		if err := o.saveCache(st); err != nil {
			o.log.Error("cache write failed", "err", err)
		}
	}
	l.cur, l.d, l.have = st, d, true
	if l.tracker.SetDesired(d) || l.prober == nil {
		l.startProber()
	}
	if l.prober != nil {
		var targets []probe.Target
		for _, t := range d.Tunnels {
			targets = append(targets, probe.Target{Tunnel: t.ID, Local: t.LocalInner.Addr(), Remote: netip.AddrPortFrom(t.RemoteInner, 0)})
		}
		if err := l.prober.Apply(targets); err != nil {
			o.log.Error("probe targets refused", "err", err)
		}
	}
	l.reportNow = true
}

func (l *loop) startProber() {
	l.stopProber()
	pol := l.tracker.Policy()
	if pol.Disabled {
		l.publish(nil, nil)
		return
	}
	o := l.o
	pr, err := o.cfg.NewProber(probe.Config{
		Interval: pol.ProbeInterval, Listen: o.cfg.Listen, Log: o.log, Events: 256,
		Stats: probe.StatsConfig{DownAfter: pol.DownAfter, UpAfter: pol.UpAfter},
		Gate: func(id string) bool {
			g := o.gate.Load()
			return g != nil && (*g)[id]
		},
	})
	if err != nil {
		o.log.Error("probing not started", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan struct{})
	go func() { // owned by the loop: stopProber cancels and awaits it
		defer close(done)
		_ = pr.Run(ctx)
	}()
	l.prober, l.stopProb, l.probDone, l.events = pr, cancel, done, pr.Events()
	l.tick.Reset(pol.ProbeInterval)
	l.tracker.Reset()
	o.mu.Lock()
	o.prober = pr
	o.mu.Unlock()
}

func (l *loop) stopProber() {
	if l.stopProb != nil {
		l.stopProb()
		<-l.probDone
		l.prober, l.stopProb, l.events = nil, nil, nil
		l.tick.Reset(time.Hour)
		l.o.mu.Lock()
		l.o.prober = nil
		l.o.mu.Unlock()
	}
}

func (l *loop) event(ev probe.Event) {
	l.tracker.Event(ev)
	l.o.log.Info("tunnel path state", "tunnel_id", ev.Tunnel, "from", ev.From.String(), "to", ev.To.String())
}

// step is one iteration: plan, then apply the difference in order.
func (l *loop) step() {
	o, ctx := l.o, l.ctx
	now := o.cfg.Now()
	probed := l.tracker.Probed()
	o.gate.Store(&probed)
	o.saFast.Store(l.tracker.WaitingForSA())

	var snaps map[string]probe.TunnelSnapshot
	if l.prober != nil {
		snaps = map[string]probe.TunnelSnapshot{}
		for _, s := range l.prober.Snapshot() {
			snaps[s.Target.Tunnel] = s
		}
	}
	view, health := l.tracker.View(now, l.d, snaps, plan.SteerDests(l.d, l.rib))
	if !sameReportable(l.health, health) || !slices.Equal(l.choices, view.Steer.Choices) {
		l.reportNow = true
	}
	if l.view.Usable != nil || view.Usable != nil {
		if !slices.Equal(usableList(l.view.Usable), usableList(view.Usable)) {
			o.log.Info("path decisions", "usable", usableList(view.Usable))
		}
	}
	l.view, l.health, l.choices = view, health, view.Steer.Choices
	l.publish(health, view.Steer.Choices)

	p := l.plan()
	var errs []error

	// 1. Firewall: the permits, SNAT exemption and GRE guard exist before
	// a tunnel carries its first packet.
	if l.force || l.fw == nil || !reflect.DeepEqual(*l.fw, p.Firewall) {
		l.fw = nil
		if err := o.cfg.Firewall.Apply(ctx, p.Firewall); err != nil {
			errs = append(errs, fmt.Errorf("firewall: %w", err))
		} else {
			fw := p.Firewall
			l.fw = &fw
		}
	}
	// 2. Links (only when changed): a new link exists before its IPsec
	// connection is handed to the worker; a retiring one stays until the
	// worker reports it gone.
	if l.force || l.links == nil || !reflect.DeepEqual(*l.links, p.Links) {
		l.links = nil
		err := o.cfg.Links.Apply(ctx, p.Links)
		applied := map[string]bool{}
		if err == nil {
			lk := p.Links
			l.links = &lk
			for _, t := range p.Links.Tunnels {
				applied[plan.Key(t)] = true
			}
		} else {
			errs = append(errs, fmt.Errorf("links: %w", err))
			if _, present, rerr := o.cfg.Links.Retiring(p.Links); rerr == nil {
				for _, t := range p.Links.Tunnels {
					if present[t.LinkName] {
						applied[plan.Key(t)] = true
					}
				}
			}
		}
		l.previous = p.Links.Tunnels
		if !reflect.DeepEqual(applied, l.linksApplied) {
			l.linksApplied = applied
			p = l.plan() // routes and IPsec follow the links that exist now
		}
	}
	// 3. Routes: whenever they differ (a verdict's failover lands here).
	if l.force || !l.routesOK || !plan.EqualRoutes(l.routes, p.Routes) {
		start := time.Now()
		err := o.cfg.Links.ApplyRoutes(ctx, p.Routes)
		l.routes, l.routesOK = p.Routes, err == nil
		if err != nil {
			errs = append(errs, fmt.Errorf("routes: %w", err))
		} else {
			o.log.Debug("routes applied", "routes", len(p.Routes), "took", time.Since(start))
		}
	}
	// 4. Steering.
	si := steerInput{classes: p.Classes, plan: p.Steer}
	// A resync re-reads the steering state only when there are classes:
	// with none, the last successful apply left none, and a resync
	// touches no nftables table it does not need.
	resyncSteer := l.force && len(si.classes) > 0
	if resyncSteer || l.steerIn == nil || !reflect.DeepEqual(*l.steerIn, si) {
		l.steerIn = nil
		var err error
		switch {
		case o.cfg.Steering != nil:
			err = o.cfg.Steering.Apply(ctx, si.classes, si.plan)
		case len(si.classes) > 0:
			err = errNoSteer
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("steering: %w", err))
		} else {
			l.steerIn = &si
		}
	}
	// 5. Hand-offs, never awaited.
	l.handIPsec(p)
	l.handBGP(p)
	l.force = false

	if ctx.Err() != nil {
		return
	}
	if err := errors.Join(errs...); err != nil {
		d := l.bo.Next()
		o.log.Error("apply failed, will retry", "version", l.cur.Version, "err", err, "retry_in", d)
		l.retry.Reset(d)
		l.failed = true
		return
	}
	if l.failed {
		l.failed = false
		l.bo.Reset()
		l.retry.Stop()
	}
	l.checkApplied()
}

// plan computes the plan from the loop's state.
func (l *loop) plan() plan.Plan {
	gone := map[string]bool{}
	for k := range l.ack.gone {
		if g, ok := l.retireGen[k]; ok && l.ack.gen >= g {
			gone[k] = true
		}
	}
	return plan.Make(plan.Inputs{Desired: l.d, Previous: l.previous, Gone: gone, LinksApplied: l.linksApplied,
		Paths: l.view, RIB: l.rib, Adopted: l.adopted, LANPeers: l.o.cfg.LANPeers})
}

func (l *loop) handIPsec(p plan.Plan) {
	in := ipsecInput{desired: p.IPsec, retiring: p.Retiring}
	if !l.force && l.ipsecIn != nil && reflect.DeepEqual(l.ipsecIn.desired, in.desired) && reflect.DeepEqual(l.ipsecIn.retiring, in.retiring) {
		return
	}
	l.ipsecGen++
	in.gen = l.ipsecGen
	retiring := map[string]bool{}
	for _, t := range in.retiring {
		k := plan.Key(t)
		retiring[k] = true
		if _, ok := l.retireGen[k]; !ok {
			l.retireGen[k] = in.gen
		}
	}
	for k := range l.retireGen {
		if !retiring[k] {
			delete(l.retireGen, k)
		}
	}
	l.ipsecIn = &in
	l.o.ipsecW.in.put(in)
}

func (l *loop) handBGP(p plan.Plan) {
	in := bgpInput{plan: p.BGP}
	if !l.force && l.bgpIn != nil && reflect.DeepEqual(l.bgpIn.plan, in.plan) {
		return
	}
	l.bgpGen++
	in.gen = l.bgpGen
	l.bgpIn = &in
	l.o.bgpW.in.put(in)
}

// checkApplied records the version as applied once the owner's steps
// went through and both workers acknowledged what was handed to them for
// it.
func (l *loop) checkApplied() {
	if l.pendingV != l.cur.Version {
		l.pendingV, l.ipsecWant, l.bgpWant = l.cur.Version, l.ipsecGen, l.bgpGen
	}
	if l.ack.gen < l.ipsecWant || l.ack.err != nil || l.bgpAck.gen < l.bgpWant || l.bgpAck.err != nil {
		return
	}
	if l.o.applied.Swap(l.cur.Version) != l.cur.Version {
		l.o.log.Info("desired state applied", "version", l.cur.Version, "tunnels", len(l.d.Tunnels))
		l.kernelAt = time.Time{} // the kernel changed: ask it afresh
		l.reportNow = true
	}
}

func (l *loop) publish(health map[string]PathHealth, choices []steer.Choice) {
	l.o.mu.Lock()
	l.o.health, l.o.choices = health, choices
	l.o.mu.Unlock()
}

// report sends one status report from what the owner knows: the link
// status (a netlink dump, at most every KernelStatusEvery), the workers'
// last published IPsec and BGP status, and the probe health. It never
// calls charon or GoBGP.
func (l *loop) report(report func(syncer.Report)) {
	if report == nil {
		return
	}
	o := l.o
	select {
	case st := <-o.ipsecW.status.c:
		l.ipsecSt, l.kernelAt = st, time.Time{}
	default:
	}
	select {
	case st := <-o.bgpW.status.c:
		l.bgpPeers = st
	default:
	}
	if time.Since(l.kernelAt) >= o.cfg.KernelStatusEvery {
		l.kernelAt = time.Now()
		var err error
		if l.linkSt, err = o.cfg.Links.Status(l.ctx); err != nil {
			o.log.Warn("link status failed", "err", err)
		}
	}
	ts := TunnelStatuses(l.d, l.linkSt, l.ipsecSt)
	mergeHealth(ts, l.health)
	rep := syncer.Report{AppliedVersion: o.applied.Load(), Tunnels: ts, BGPPeers: slices.Clone(l.bgpPeers)}
	for _, c := range l.choices {
		rep.ClassPaths = append(rep.ClassPaths, dataplane.ClassPath{Class: c.Class, RemoteSite: c.RemoteSite, TunnelID: c.TunnelID, MeetsSLA: c.MeetsSLA})
	}
	report(rep)
}

// TunnelStatuses merges link and IPsec status per desired tunnel. A
// tunnel is up when its link is up and a child SA is installed;
// otherwise down, with the reason. Pure.
func TunnelStatuses(d dataplane.Desired, links []link.Status, sas []ipsec.Status) []dataplane.TunnelStatus {
	byLink := map[string]link.Status{}
	for _, s := range links {
		byLink[s.TunnelID] = s
	}
	bySA := map[string]ipsec.Status{}
	for _, s := range sas {
		bySA[s.TunnelID] = s
	}
	out := make([]dataplane.TunnelStatus, 0, len(d.Tunnels))
	for _, t := range d.Tunnels {
		l, sa := byLink[t.ID], bySA[t.ID]
		ts := dataplane.TunnelStatus{ID: t.ID, LinkUp: l.Present && l.Up, IKEState: string(sa.IKEState), ChildState: string(sa.ChildState),
			BytesIn: l.RxBytes, BytesOut: l.TxBytes, PacketsIn: l.RxPackets, PacketsOut: l.TxPackets, PSKSerial: sa.PSKSerial}
		var why []string
		if !ts.LinkUp {
			why = append(why, "GRE link "+t.LinkName+" missing or down")
		}
		if sa.ChildState != ipsec.ChildInstalled {
			why = append(why, fmt.Sprintf("no installed child SA (IKE %q, child %q)", sa.IKEState, sa.ChildState))
		}
		ts.State = dataplane.TunnelUp
		if len(why) > 0 {
			ts.State, ts.Detail = dataplane.TunnelDown, strings.Join(why, "; ")
		}
		out = append(out, ts)
	}
	return out
}

// DegradedLossPct is the probe loss at and above which an up tunnel is
// reported degraded.
const DegradedLossPct = 5

// mergeHealth adds the probe results to the kernel's view of each tunnel
// and refines the state: a tunnel whose link and SA are up is down when
// its probes are unanswered, and degraded while it waits out the
// hold-down or loses DegradedLossPct or more of its probes.
func mergeHealth(ts []dataplane.TunnelStatus, health map[string]PathHealth) {
	for i := range ts {
		h, ok := health[ts[i].ID]
		if !ok {
			continue
		}
		t := &ts[i]
		t.Probed, t.ProbeState, t.Usable = h.Probed, probeState(h.State), h.Usable
		t.RTT, t.RTTP99, t.Jitter, t.LossPct, t.Transitions = h.RTT, h.RTTP99, h.Jitter, h.LossPct, h.Transitions
		if t.State != dataplane.TunnelUp || !h.Probed {
			continue
		}
		switch {
		case h.State == probe.StateDown:
			t.State, t.Detail = dataplane.TunnelDown, describeUsable(h)
		case h.HoldDown:
			t.State, t.Detail = dataplane.TunnelDegraded, describeUsable(h)
		case h.LossPct >= DegradedLossPct:
			t.State, t.Detail = dataplane.TunnelDegraded, fmt.Sprintf("probe loss %.1f%%", h.LossPct)
		}
	}
}

func probeState(s probe.State) dataplane.ProbeState {
	switch s {
	case probe.StateUp:
		return dataplane.ProbeUp
	case probe.StateDown:
		return dataplane.ProbeDown
	}
	return dataplane.ProbeUnknown
}

var errNoSteer = errors.New("the policy has traffic classes but this agent runs without the steering backend")

// pollSAs lists the kernel's SAs into the owner's slot: every 250 ms
// while a tunnel waits for its SA, every second otherwise. Its own
// goroutine, so a slow XFRM dump never holds up the owner.
func (o *Owner) pollSAs(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if sas, err := o.cfg.SAs(); err != nil {
			o.log.Warn("listing IPsec SAs failed", "err", err)
		} else {
			o.sas.put(sas)
		}
		every := time.Second
		if o.saFast.Load() {
			every = 250 * time.Millisecond
		}
		t.Reset(every)
	}
}

// runReflector answers the far ends' probes, restarting with backoff.
func (o *Owner) runReflector(ctx context.Context) {
	bo := backoff.Policy{Min: time.Second, Max: 30 * time.Second, Jitter: 0.2}.New()
	for {
		conn, err := o.cfg.ListenReflector(ctx)
		if err == nil {
			err = probe.NewReflector(conn, o.log).Run(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		d := bo.Next()
		o.log.Error("probe reflector stopped, restarting", "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// Cleanup removes everything meshwan created and the cached state:
// steering, routes, IPsec, then (once their SAs are gone, bounded) the
// links, then the firewall. It is called instead of Run (--cleanup).
func (o *Owner) Cleanup(ctx context.Context) error {
	var errs []error
	if o.cfg.Steering != nil {
		errs = append(errs, o.cfg.Steering.Cleanup(ctx))
	}
	errs = append(errs, o.cfg.Links.ApplyRoutes(ctx, nil))
	errs = append(errs, o.cfg.IPsec.Cleanup(ctx))
	// As for a retiring tunnel: the links go only once their SAs have
	// left the kernel.
	if ret, _, err := o.cfg.Links.Retiring(dataplane.Desired{}); err == nil && o.cfg.SAs != nil {
		pairs := map[[2]netip.Addr]bool{}
		for _, r := range ret {
			if r.Local.IsValid() && r.Remote.IsValid() {
				pairs[[2]netip.Addr{r.Local, r.Remote}] = true
				pairs[[2]netip.Addr{r.Remote, r.Local}] = true
			}
		}
		if err := waitSAsGone(ctx, o.cfg.SAs, pairs, saGoneWait); err != nil {
			o.log.Warn("deleting links whose SAs are still installed", "err", err)
		}
	}
	errs = append(errs, o.cfg.Links.Cleanup(ctx), o.cfg.Firewall.Cleanup(ctx))
	if err := os.Remove(filepath.Join(o.cfg.StateDir, cacheFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// Speaker is the edge's embedded BGP speaker (GoBGP v3, pkg/server) plus
// the kernel route sync.
//
// Concurrency: Apply, Stop and Status may be called from any goroutine.
// mu serialises Apply and Stop and guards the fields below it; it is
// never held while waiting for the sync loop. The sync loop (one
// goroutine, owned by the Speaker, ended by Stop) is the only user of
// kernel and of the restart-hold fields. GoBGP's own goroutines: its
// Serve loop (started here; GoBGP v3 offers no way to end it, so after
// Stop it stays parked on its channels), per-peer FSM goroutines (ended
// by Stop) and the WatchEvent goroutine (ended when ctx is cancelled).
type Speaker struct {
	cfg    Config
	log    *slog.Logger
	bgp    *server.BgpServer
	kernel *kernelSync // nil when cfg.Routes is nil

	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the sync loop
	kick   chan struct{}  // capacity 1: "resync soon", coalesced

	// writes counts GoBGP calls that change its state (peers, paths,
	// policy); a repeated Apply with the same Desired adds none.
	writes atomic.Uint64

	// restartUntil is non-zero when Start found routes of ours in the
	// kernel: the agent restarted while forwarding. Until then (or until
	// every tunnel peer has sent End-of-RIB) adopted routes are kept, and
	// peers are added with the Restart State bit. Set in Start, read-only
	// afterwards.
	restartUntil time.Time

	mu         sync.Mutex
	stopped    bool
	applied    bool                    // an Apply went through: the neighbor list is real
	peers      map[netip.Addr]Neighbor // as configured in GoBGP, normalised
	originated map[netip.Prefix][]byte // prefix -> AddPath UUID
	lanAddrs   map[netip.Addr]bool     // members of lanSetName besides the sentinel
	excluded   map[netip.Addr]bool     // next hops not to route over (SetExcluded)
}

// Start starts a speaker with cfg: GoBGP with the site's ASN, router id
// and listener, the LAN-peer policy, and (with cfg.Routes) the kernel
// route sync. It has no neighbors and announces nothing until Apply. ctx
// bounds only the start itself; Stop ends the speaker.
//
// Graceful restart, restarting side: Start first reads our routes from
// the kernel table. Finding some means the agent restarted while the
// kernel kept forwarding (a reboot empties the table). They are adopted,
// not flushed: kept as they are until GoBGP has re-learned the RIB
// (every tunnel peer established and its End-of-RIB received) or the
// restart time has passed, then made equal to the RIB. Peers added
// during that window get the Restart State bit, so they keep our routes
// until our End-of-RIB.
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Speaker{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "bgp"),
		kick:       make(chan struct{}, 1),
		peers:      map[netip.Addr]Neighbor{},
		originated: map[netip.Prefix][]byte{},
		lanAddrs:   map[netip.Addr]bool{},
	}
	s.bgp = server.NewBgpServer(server.LoggerOption(newGoBGPLogger(cfg.Logger, cfg.GoBGPLogLevel)))
	go s.bgp.Serve() // never returns in GoBGP v3; parked after Stop

	fail := func(err error) (*Speaker, error) {
		s.bgp.Stop()
		return nil, err
	}
	if err := s.bgp.StartBgp(ctx, &api.StartBgpRequest{Global: globalFor(cfg)}); err != nil {
		return fail(fmt.Errorf("start bgp (asn %d, port %d): %w", cfg.ASN, cfg.ListenPort, err))
	}
	if err := s.installPolicy(ctx); err != nil {
		return fail(err)
	}
	if cfg.Routes != nil {
		k, adopted, err := newKernelSync(cfg.Routes, cfg.Table, cfg.RouteMetric, s.log)
		if err != nil {
			return fail(err)
		}
		s.kernel = k
		if adopted > 0 {
			s.restartUntil = time.Now().Add(cfg.RestartTime)
			s.log.Info("restart: adopted kernel routes, keeping them until the rib is resynchronised",
				"routes", adopted, "table", cfg.Table, "hold", cfg.RestartTime)
		}
	}

	s.ctx, s.cancel = context.WithCancel(context.Background())
	watch := &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_BEST},
			{Type: api.WatchEventRequest_Table_Filter_EOR},
		}},
	}
	// The callback runs on GoBGP's watch goroutine: it must not block.
	if err := s.bgp.WatchEvent(s.ctx, watch, func(*api.WatchEventResponse) { s.Resync() }); err != nil {
		s.cancel()
		return fail(fmt.Errorf("watch bgp events: %w", err))
	}
	if s.kernel != nil {
		s.wg.Add(1)
		go s.syncLoop()
	}
	s.log.Info("bgp speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID.String(),
		"listen_port", cfg.ListenPort, "kernel_sync", s.kernel != nil)
	return s, nil
}

// installPolicy sets up the LAN-peer policy (see gobgpconf.go).
func (s *Speaker) installPolicy(ctx context.Context) error {
	set := lanSet()
	set.List = []string{lanSetSentinel}
	s.writes.Add(1)
	if err := s.bgp.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set}); err != nil {
		return fmt.Errorf("add lan neighbor set: %w", err)
	}
	for _, p := range lanPolicies() {
		s.writes.Add(1)
		if err := s.bgp.AddPolicy(ctx, &api.AddPolicyRequest{Policy: p}); err != nil {
			return fmt.Errorf("add policy %s: %w", p.Name, err)
		}
	}
	for _, a := range lanAssignments() {
		s.writes.Add(1)
		if err := s.bgp.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fmt.Errorf("assign policy %s: %w", a.Policies[0].Name, err)
		}
	}
	return nil
}

// Apply makes the speaker's sessions and announcements equal to d. It is
// idempotent: it diffs d against what GoBGP was given and calls GoBGP
// only for the difference, so a second Apply with the same d changes
// nothing (no session flap, no re-announcement).
//
//   - A neighbor whose session parameters changed (ASN, local address,
//     port, timers, LAN, passive) is deleted and re-added: its session
//     restarts. Description and Interface are ours only and change
//     nothing in GoBGP.
//   - A removed neighbor is deleted (GoBGP sends a Cease NOTIFICATION, so
//     the peer withdraws our routes at once and we drop its own).
//   - Originate is diffed by prefix: new prefixes are added, removed ones
//     withdrawn.
//
// On a partial failure Apply returns every error and records only what
// succeeded, so the next Apply retries the rest.
func (s *Speaker) Apply(ctx context.Context, d Desired) error {
	nd, err := d.normalise(s.cfg.ASN)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	want := make(map[netip.Addr]Neighbor, len(nd.Neighbors))
	for _, n := range nd.Neighbors {
		want[n.Addr] = n
	}
	var errs []error

	// 1. Sessions that go or change.
	for _, addr := range slices.SortedFunc(maps.Keys(s.peers), netip.Addr.Compare) {
		have := s.peers[addr]
		if w, ok := want[addr]; ok && sameSession(have, w) {
			continue
		}
		s.writes.Add(1)
		if err := s.bgp.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbor %v: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("bgp neighbor deleted", "peer", addr.String(), "peer_asn", have.ASN, "description", have.Description)
	}
	// 2. LAN set members that go: after their sessions (a session still
	// in place keeps its membership), before any new session uses the
	// address.
	for _, addr := range slices.SortedFunc(maps.Keys(s.lanAddrs), netip.Addr.Compare) {
		if w, ok := want[addr]; ok && w.LAN {
			continue
		}
		if p, ok := s.peers[addr]; ok && p.LAN {
			continue
		}
		s.writes.Add(1)
		if err := s.bgp.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: lanSet(addr)}); err != nil {
			errs = append(errs, fmt.Errorf("remove %v from the lan neighbor set: %w", addr, err))
			continue
		}
		delete(s.lanAddrs, addr)
	}
	// 3. LAN set members that come, before their sessions exist.
	for _, n := range nd.Neighbors {
		if !n.LAN || s.lanAddrs[n.Addr] {
			continue
		}
		s.writes.Add(1)
		if err := s.bgp.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: lanSet(n.Addr)}); err != nil {
			errs = append(errs, fmt.Errorf("add %v to the lan neighbor set: %w", n.Addr, err))
			continue
		}
		s.lanAddrs[n.Addr] = true
	}
	// 4. Sessions that come.
	restarting := !s.restartUntil.IsZero() && time.Now().Before(s.restartUntil)
	for _, n := range nd.Neighbors {
		if _, ok := s.peers[n.Addr]; ok {
			s.peers[n.Addr] = n // same session; description/interface may differ
			continue
		}
		if n.LAN && !s.lanAddrs[n.Addr] {
			// Without the policy membership its routes would be accepted.
			errs = append(errs, fmt.Errorf("neighbor %v: not added: lan policy not in place", n.Addr))
			continue
		}
		s.writes.Add(1)
		if err := s.bgp.AddPeer(ctx, &api.AddPeerRequest{Peer: peerFor(n, s.cfg.RestartTime, restarting)}); err != nil {
			errs = append(errs, fmt.Errorf("add neighbor %v: %w", n.Addr, err))
			continue
		}
		s.peers[n.Addr] = n
		s.log.Info("bgp neighbor added", "peer", n.Addr.String(), "peer_asn", n.ASN, "description", n.Description,
			"interface", n.Interface, "lan", n.LAN, "restarting", restarting)
	}
	// 5. Announcements.
	wantP := map[netip.Prefix]bool{}
	for _, p := range nd.Originate {
		wantP[p] = true
	}
	for _, p := range slices.SortedFunc(maps.Keys(s.originated), comparePrefix) {
		if wantP[p] {
			continue
		}
		s.writes.Add(1)
		if err := s.bgp.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: familyIPv4, Uuid: s.originated[p]}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", p, err))
			continue
		}
		delete(s.originated, p)
		s.log.Info("prefix withdrawn", "prefix", p.String())
	}
	for _, p := range nd.Originate {
		if _, ok := s.originated[p]; ok {
			continue
		}
		path, err := pathFor(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %v: %w", p, err))
			continue
		}
		s.writes.Add(1)
		resp, err := s.bgp.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %v: %w", p, err))
			continue
		}
		s.originated[p] = resp.Uuid
		s.log.Info("prefix announced", "prefix", p.String())
	}
	s.applied = true
	s.Resync()
	return errors.Join(errs...)
}

// Resync asks the route sync for a full pass soon (it coalesces); the
// agent calls it after re-creating tunnel links, whose kernel routes the
// kernel drops. It never blocks.
func (s *Speaker) Resync() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Stop ends the speaker: the route sync stops first, then GoBGP closes
// every session with a Cease NOTIFICATION (peers withdraw our routes at
// once). Kernel routes are left in place on purpose: the next Start
// adopts them (FlushRoutes removes them for good). For a graceful
// restart, where peers must keep our routes, the agent does not call
// Stop: it exits, the sessions drop without a NOTIFICATION, and the peers
// hold our routes for the restart time (see README.md). Stop is
// idempotent.
func (s *Speaker) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.bgp.Stop()
	s.log.Info("bgp speaker stopped")
}

// neighbors returns a copy of the configured neighbors and whether an
// Apply went through.
func (s *Speaker) neighbors() (map[netip.Addr]Neighbor, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.peers), s.applied
}

// rib lists GoBGP's global IPv4 unicast RIB, best path first per prefix.
func (s *Speaker) rib(ctx context.Context) ([]*api.Destination, error) {
	var out []*api.Destination
	err := s.bgp.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: familyIPv4},
		func(d *api.Destination) { out = append(out, d) })
	if err != nil {
		return nil, fmt.Errorf("list rib: %w", err)
	}
	return out, nil
}

// Routes returns the routes the kernel should hold according to the RIB
// right now (what the next sync writes), sorted by prefix. It changes
// nothing.
func (s *Speaker) Routes(ctx context.Context) ([]Route, error) {
	dests, err := s.rib(ctx)
	if err != nil {
		return nil, err
	}
	rs, errs := routesFromRIB(dests, s.cfg.ASN, s.excludedSet())
	return rs, errors.Join(errs...)
}

// SetExcluded sets the next hops whose paths the kernel route sync must
// not use (see routesFromRIB) and resyncs at once when the set changed.
// BGP itself is not touched: sessions stay up and keep advertising, so
// recovery needs no new session, only a resync. It never blocks.
func (s *Speaker) SetExcluded(nextHops []netip.Addr) {
	set := make(map[netip.Addr]bool, len(nextHops))
	for _, a := range nextHops {
		set[a] = true
	}
	s.mu.Lock()
	changed := !maps.Equal(set, s.excluded)
	s.excluded = set
	s.mu.Unlock()
	if changed {
		s.Resync()
	}
}

func (s *Speaker) excludedSet() map[netip.Addr]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.excluded
}

// Candidates returns, per learned prefix, the next hops of every valid
// path (not only the best ones), sorted: the ways traffic to the prefix
// could go, for SLA steering. Prefixes we originate are left out.
func (s *Speaker) Candidates(ctx context.Context) (map[netip.Prefix][]netip.Addr, error) {
	dests, err := s.rib(ctx)
	if err != nil {
		return nil, err
	}
	out := map[netip.Prefix][]netip.Addr{}
	var errs []error
	for _, d := range dests {
		dst, err := netip.ParsePrefix(d.Prefix)
		if err != nil || !dst.Addr().Is4() {
			continue
		}
		var nhs []netip.Addr
		for _, p := range d.Paths {
			c, err := candidateFrom(p, s.cfg.ASN)
			if err != nil {
				errs = append(errs, fmt.Errorf("destination %v: %w", dst, err))
				continue
			}
			if c.Local || c.NHInvalid || !c.NextHop.IsValid() {
				continue
			}
			nhs = append(nhs, c.NextHop)
		}
		if len(nhs) > 0 {
			slices.SortFunc(nhs, netip.Addr.Compare)
			out[dst.Masked()] = slices.Compact(nhs)
		}
	}
	return out, errors.Join(errs...)
}

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

// Speaker is the edge's embedded BGP speaker (GoBGP v3, pkg/server). It
// never writes kernel state: it publishes its RIB (Config.OnRIB) and the
// edge's owner computes and writes the routes (Choose), so a failover
// never waits for a GoBGP call.
//
// Concurrency: Apply, Stop and Status may be called from any goroutine.
// mu serialises Apply and Stop and guards the fields below it; it is
// never held while waiting for the publish loop nor while OnRIB runs. The
// publish loop (one goroutine, owned by the Speaker, ended by Stop) is
// the only caller of OnRIB. GoBGP's own goroutines: its Serve loop
// (started here; GoBGP v3 offers no way to end it, so after Stop it stays
// parked on its channels), per-peer FSM goroutines (ended by Stop) and
// the WatchEvent goroutine (ended when ctx is cancelled).
type Speaker struct {
	cfg Config
	log *slog.Logger
	bgp *server.BgpServer

	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the publish loop
	kicks  chan struct{}  // capacity 1: "publish soon", coalesced

	// writes counts GoBGP calls that change its state (peers, paths,
	// policy); a repeated Apply with the same Desired adds none.
	writes atomic.Uint64

	// restartUntil is non-zero when Config.Restarting: the agent
	// restarted while the kernel kept forwarding. Until then (or until
	// every tunnel peer has sent End-of-RIB) the published RIB is
	// Holding, and peers are added with the Restart State bit. Set in
	// Start, read-only afterwards.
	restartUntil time.Time

	mu         sync.Mutex
	stopped    bool
	applied    bool                    // an Apply went through: the neighbor list is real
	peers      map[netip.Addr]Neighbor // as configured in GoBGP, normalised
	originated map[netip.Prefix][]byte // prefix -> AddPath UUID
	lanAddrs   map[netip.Addr]bool     // members of lanSetName besides the sentinel
}

// Start starts a speaker with cfg: GoBGP with the site's ASN, router id
// and listener, the LAN-peer policy, and (with cfg.OnRIB) the publish
// loop, which hands OnRIB its first RIB at once. It has no neighbors and
// announces nothing until Apply. ctx bounds only the start itself; Stop
// ends the speaker.
//
// Graceful restart, restarting side: with cfg.Restarting (the owner found
// BGP routes of a previous agent in the kernel) the speaker opens a
// restart window of cfg.RestartTime. Peers added in that window get the
// Restart State bit, so they keep our routes until our End-of-RIB, and
// every RIB published is Holding until every tunnel peer is established
// and has sent its End-of-RIB, or the window has ended; the owner keeps
// the routes it adopted while the RIB is Holding.
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Speaker{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "bgp"),
		kicks:      make(chan struct{}, 1),
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
	if cfg.Restarting {
		s.restartUntil = time.Now().Add(cfg.RestartTime)
		s.log.Info("restart: the rib is holding until it is resynchronised", "hold", cfg.RestartTime)
	}

	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.OnRIB != nil {
		watch := &api.WatchEventRequest{
			Peer: &api.WatchEventRequest_Peer{},
			Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
				{Type: api.WatchEventRequest_Table_Filter_BEST},
				{Type: api.WatchEventRequest_Table_Filter_EOR},
			}},
		}
		// The callback runs on GoBGP's watch goroutine: it must not block.
		if err := s.bgp.WatchEvent(s.ctx, watch, func(*api.WatchEventResponse) { s.kick() }); err != nil {
			s.cancel()
			return fail(fmt.Errorf("watch bgp events: %w", err))
		}
		s.wg.Add(1)
		go s.publishLoop()
	}
	s.log.Info("bgp speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID.String(),
		"listen_port", cfg.ListenPort, "publishes_rib", cfg.OnRIB != nil, "restarting", cfg.Restarting)
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
	// New neighbors can end the restart hold, new announcements change
	// the RIB: publish soon (GoBGP's own events cover the rest).
	s.kick()
	return errors.Join(errs...)
}

// Stop ends the speaker: the publish loop stops first (no OnRIB call
// after Stop returns), then GoBGP closes every session with a Cease
// NOTIFICATION (peers withdraw our routes at once). The kernel routes are
// the owner's, not the speaker's. For a graceful restart, where peers
// must keep our routes, the agent does not call Stop: it exits, the
// sessions drop without a NOTIFICATION, and the peers hold our routes for
// the restart time (see README.md). Stop is idempotent. It must not be
// called from OnRIB (it waits for the loop that runs OnRIB).
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

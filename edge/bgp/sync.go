package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// kernelSync keeps our routes in one kernel table equal to what it is
// given. It is level-triggered: every pass reads the whole table back and
// writes only the difference (planRoutes), so a missed event, a failed
// write or a route someone deleted by hand is repaired by the next pass.
// Used by one goroutine at a time (the Speaker's sync loop; tests).
type kernelSync struct {
	h      RouteHandle
	table  int
	metric int
	log    *slog.Logger
	// adopted holds the prefixes of our routes found at start and not
	// yet confirmed by the RIB: during the restart hold they are kept
	// even when the RIB lacks them.
	adopted map[netip.Prefix]bool
	// conflicts is the last conflict report, logged when it changes.
	conflicts string
}

// newKernelSync reads our routes from the table and adopts them; it
// returns how many it found.
func newKernelSync(h RouteHandle, table, metric int, log *slog.Logger) (*kernelSync, int, error) {
	k := &kernelSync{h: h, table: table, metric: metric, log: log, adopted: map[netip.Prefix]bool{}}
	rs, err := listTable(h, table)
	if err != nil {
		return nil, 0, fmt.Errorf("route sync: %w", err)
	}
	n := 0
	for _, r := range rs {
		if r.Protocol == RouteProtocol {
			k.adopted[r.Dst] = true
			n++
		}
	}
	return k, n, nil
}

// sync makes the table match want. With holding, adopted prefixes that
// want lacks are kept. It returns the plan it carried out and every
// list or write error; a failed write is retried by the next pass.
// Conflicts (a foreign route on a wanted key) are not errors: they are in
// the plan and logged when they change; nothing retrying could fix them.
func (k *kernelSync) sync(want []Route, holding bool) (routePlan, error) {
	table, err := listTable(k.h, k.table)
	if err != nil {
		return routePlan{}, err
	}
	var hold func(netip.Prefix) bool
	if holding {
		hold = func(p netip.Prefix) bool { return k.adopted[p] }
	} else {
		clear(k.adopted)
	}
	p := planRoutes(want, table, RouteProtocol, k.metric, hold)
	var errs []error
	for _, r := range p.Dedup {
		if err := k.h.RouteDel(toNetlink(r.Dst, r.Via, r.Metric, k.table)); err != nil {
			errs = append(errs, fmt.Errorf("delete duplicate route %v: %w", r, err))
		}
	}
	for _, r := range p.Replace {
		if err := k.h.RouteReplace(toNetlink(r.Dst, r.Via, k.metric, k.table)); err != nil {
			errs = append(errs, fmt.Errorf("install route %v: %w", r, err))
			continue
		}
		k.log.Info("route installed", "route", r.String(), "metric", k.metric, "table", k.table)
	}
	for _, r := range p.Delete {
		if err := k.h.RouteDel(toNetlink(r.Dst, r.Via, r.Metric, k.table)); err != nil {
			errs = append(errs, fmt.Errorf("delete route %v: %w", r, err))
			continue
		}
		delete(k.adopted, r.Dst)
		k.log.Info("route deleted", "dst", r.Dst.String(), "metric", r.Metric, "table", k.table)
	}
	var conflicts []string
	for _, r := range p.Conflicts {
		conflicts = append(conflicts, r.String())
	}
	if c := strings.Join(conflicts, "; "); c != k.conflicts {
		k.conflicts = c
		if c != "" {
			k.log.Warn("routes not installed: the table has a route of another protocol with the same prefix and metric",
				"routes", c, "metric", k.metric, "table", k.table)
		}
	}
	// A prefix the RIB wants is no longer stale: if it is withdrawn
	// later, it goes even during the hold.
	for _, r := range want {
		delete(k.adopted, r.Dst)
	}
	return p, errors.Join(errs...)
}

// syncLoop is the Speaker's route sync goroutine: a full pass at start,
// after every GoBGP best-path, End-of-RIB or peer event (coalesced),
// every ResyncInterval, after a failed pass (1 s, doubling up to
// ResyncInterval), and when the restart hold ends. It returns when s.ctx is cancelled (Stop).
func (s *Speaker) syncLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.ResyncInterval)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff, lastErr := time.Duration(0), ""
	nextBackoff := func() time.Duration {
		backoff = min(max(2*backoff, time.Second), s.cfg.ResyncInterval)
		return backoff
	}
	var holdEnd <-chan time.Time
	if !s.restartUntil.IsZero() {
		t := time.NewTimer(time.Until(s.restartUntil))
		defer t.Stop()
		holdEnd = t.C
	}
	holdOver := s.restartUntil.IsZero()
	for {
		if !holdOver {
			holdOver = s.holdOver(s.ctx)
		}
		if err := s.syncOnce(s.ctx, !holdOver); err != nil {
			if s.ctx.Err() != nil {
				return
			}
			// A persistent failure (a gateway on a link that is down)
			// is retried with backoff up to ResyncInterval and logged
			// at warn only when it changes.
			level := slog.LevelWarn
			if err.Error() == lastErr {
				level = slog.LevelDebug
			}
			lastErr = err.Error()
			s.log.Log(s.ctx, level, "route sync incomplete", "err", err)
			retry.Reset(nextBackoff())
		} else {
			if lastErr != "" {
				s.log.Info("route sync complete again")
			}
			backoff, lastErr = 0, ""
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		case <-retry.C:
		case <-holdEnd:
			holdEnd = nil
		}
	}
}

func (s *Speaker) syncOnce(ctx context.Context, holding bool) error {
	dests, err := s.rib(ctx)
	if err != nil {
		return err
	}
	want, perrs := routesFromRIB(dests, s.cfg.ASN, s.excludedSet())
	_, err = s.kernel.sync(want, holding)
	return errors.Join(append(perrs, err)...)
}

// holdOver reports whether the restart hold has ended: the restart time
// passed, or an Apply went through and every tunnel neighbor is
// established and has sent its End-of-RIB (or, not speaking graceful
// restart, sends none). LAN peers do not count: their routes are never
// installed. It logs the end once.
func (s *Speaker) holdOver(ctx context.Context) bool {
	if !time.Now().Before(s.restartUntil) {
		s.log.Info("restart hold over: restart time passed")
		return true
	}
	peers, applied := s.neighbors()
	if !applied {
		return false
	}
	synced := map[netip.Addr]bool{}
	err := s.bgp.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil || p.Conf == nil || p.State.SessionState != api.PeerState_ESTABLISHED {
			return
		}
		a, err := netip.ParseAddr(p.Conf.NeighborAddress)
		if err != nil {
			return
		}
		done := true
		for _, af := range p.AfiSafis {
			if gr := af.GetMpGracefulRestart().GetState(); gr.GetReceived() && !gr.GetEndOfRibReceived() {
				done = false
			}
		}
		synced[a] = done
	})
	if err != nil {
		return false
	}
	for a, n := range peers {
		if !n.LAN && !synced[a] {
			return false
		}
	}
	s.log.Info("restart hold over: every tunnel neighbor sent its end-of-rib")
	return true
}

package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/meshwan/meshwan/edge/backoff"
	api "github.com/osrg/gobgp/v3/api"
)

// publishLoop is the Speaker's one goroutine of its own: it hands
// Config.OnRIB a fresh RIB at start, after every GoBGP best-path,
// End-of-RIB or peer event and every Apply (coalesced through kick: at
// most one pending), every ResyncInterval, when the restart hold ends,
// and after a failed ListPath (backoff from 1 s up to ResyncInterval).
// It returns when s.ctx is cancelled (Stop); Stop waits for it, so OnRIB
// is never called after Stop returned.
//
// Invariant: OnRIB is called without s.mu held (snapshot takes and
// releases it through neighbors), so a receiver may call Status or Apply.
func (s *Speaker) publishLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.ResyncInterval)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	bo := backoff.Policy{Min: time.Second, Max: s.cfg.ResyncInterval}.New()
	var holdEnd <-chan time.Time
	if !s.restartUntil.IsZero() {
		t := time.NewTimer(time.Until(s.restartUntil))
		defer t.Stop()
		holdEnd = t.C
	}
	holdOver := s.restartUntil.IsZero()
	lastBad := fmt.Sprint(error(nil)) // the last parse errors, logged when they change
	for {
		if !holdOver {
			holdOver = s.holdOver(s.ctx)
		}
		rib, bad, err := s.snapshot(s.ctx, !holdOver)
		switch {
		case s.ctx.Err() != nil:
			return
		case err != nil:
			// ListPath fails only when GoBGP is stopping; nothing is
			// published, the next pass tries again.
			s.log.Warn("rib not published", "err", err)
			retry.Reset(bo.Next())
		default:
			bo.Reset()
			if b := fmt.Sprint(errors.Join(bad...)); b != lastBad {
				lastBad = b
				if len(bad) > 0 {
					s.log.Warn("rib destinations left out: cannot parse", "err", b)
				}
			}
			s.cfg.OnRIB(rib)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.kicks:
		case <-tick.C:
		case <-retry.C:
		case <-holdEnd:
			holdEnd = nil
		}
	}
}

// kick asks the publish loop for a new RIB soon; requests coalesce and it
// never blocks (it runs on GoBGP's watch goroutine too).
func (s *Speaker) kick() {
	select {
	case s.kicks <- struct{}{}:
	default:
	}
}

// snapshot lists GoBGP's RIB and reduces it (ribFrom); bad lists the
// destinations left out.
func (s *Speaker) snapshot(ctx context.Context, holding bool) (RIB, []error, error) {
	dests, err := s.rib(ctx)
	if err != nil {
		return RIB{}, nil, err
	}
	r, bad := ribFrom(dests, s.cfg.ASN)
	r.Holding = holding
	return r, bad, nil
}

// ribFrom reduces GoBGP's global RIB (one api.Destination per prefix,
// paths best first) to a RIB. A destination that is not an IPv4 prefix or
// has a path that cannot be parsed is left out whole (half its paths
// could make a worse path look best) and reported. Pure.
func ribFrom(dests []*api.Destination, localASN uint32) (RIB, []error) {
	r := RIB{Dests: make(map[netip.Prefix][]Path, len(dests))}
	var errs []error
	for _, d := range dests {
		dst, err := netip.ParsePrefix(d.Prefix)
		if err != nil || !dst.Addr().Is4() {
			errs = append(errs, fmt.Errorf("destination %q: not an IPv4 prefix", d.Prefix))
			continue
		}
		paths := make([]Path, 0, len(d.Paths))
		for _, p := range d.Paths {
			c, err := candidateFrom(p, localASN)
			if err != nil {
				errs = append(errs, fmt.Errorf("destination %v: %w", dst, err))
				paths = nil
				break
			}
			paths = append(paths, c)
		}
		if paths != nil {
			r.Dests[dst.Masked()] = paths
		}
	}
	return r, errs
}

// holdOver reports whether the restart hold has ended: the restart time
// passed, or an Apply went through and every tunnel neighbor is
// established and has sent its End-of-RIB (or, not speaking graceful
// restart, sends none). LAN peers do not count: their routes are never
// used. It logs the end once.
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

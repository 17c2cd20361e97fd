package sim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// The steps below are shared by the benchmark scenarios and the
// correctness test: they change the network through the admin API and
// wait for the fleet to see it, returning what was measured.

// OnboardResult is what Onboard measured.
type OnboardResult struct {
	Start     time.Time       // the first CreateSite call
	SitesDone time.Time       // the last CreateSite returned
	AllFirst  time.Time       // every edge held its first state
	Create    []time.Duration // CreateSite latency per site index
	Created   int             // sites created (all n unless it failed)
}

// Onboard builds the hub-and-spoke network of n sites (the hubs, then the
// topology, then the spokes, one CreateSite at a time) and enrolls and
// starts each site's edge as soon as its site exists: workers take sites
// from a queue the site creator feeds, make a token, enroll, start the
// edge. It returns when every edge holds its first state.
func Onboard(ctx context.Context, admin *Admin, fleet *Fleet, n, workers int, mtu uint32) (OnboardResult, error) {
	res := OnboardResult{Create: make([]time.Duration, n)}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan int, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range queue {
				if ctx.Err() != nil {
					continue // drain
				}
				site := SiteName(i)
				tok, hash, err := admin.Token(ctx, site)
				if err == nil {
					err = fleet.Add(ctx, site, tok, hash)
				}
				if err != nil {
					cancel(err)
				}
			}
		})
	}
	create := func() error {
		defer close(queue)
		res.Start = time.Now()
		for i := range n {
			t := time.Now()
			if _, err := admin.CreateSite(ctx, &pb.CreateSiteRequest{Site: SiteSpec(i, 1)}); err != nil {
				return fmt.Errorf("CreateSite %s: %w", SiteName(i), err)
			}
			res.Create[i] = time.Since(t)
			res.Created = i + 1
			if (i+1)%max(1, n/10) == 0 {
				fleet.log.Info("onboarding", "sites_created", i+1, "edges_started", fleet.Len())
			}
			if i == Hubs-1 {
				if _, err := admin.SetTopology(ctx, &pb.SetTopologyRequest{Topology: HubAndSpoke(mtu)}); err != nil {
					return fmt.Errorf("SetTopology: %w", err)
				}
				for h := range Hubs {
					queue <- h
				}
			}
			if i >= Hubs {
				queue <- i
			}
		}
		res.SitesDone = time.Now()
		return nil
	}
	if err := create(); err != nil {
		cancel(err)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return res, err
	}
	if err := fleet.Wait(ctx, n, (*EdgeStats).HasState); err != nil {
		return res, fmt.Errorf("waiting for first states: %w", err)
	}
	for _, s := range fleet.Snapshot() {
		res.AllFirst = maxTime(res.AllFirst, s.FirstState)
	}
	return res, nil
}

// WaitConverged waits until every edge holds exactly the tunnels
// ListTunnels gives its site, with mtu (0: any).
func WaitConverged(ctx context.Context, admin *Admin, fleet *Fleet, mtu int) error {
	want, _, err := admin.TunnelsBySite(ctx)
	if err != nil {
		return err
	}
	for _, ids := range want {
		slices.Sort(ids)
	}
	n := fleet.Len()
	return fleet.Wait(ctx, n, func(s *EdgeStats) bool {
		ids := s.TunnelIDs()
		if s.State == nil || (mtu != 0 && s.MTU != mtu) || len(ids) != len(want[s.Site]) {
			return false
		}
		slices.Sort(ids)
		return slices.Equal(ids, want[s.Site])
	})
}

// MTUResult is what ChangeMTU measured.
type MTUResult struct {
	From, To int
	Call     time.Duration   // SetTopology latency
	Latency  []time.Duration // per edge, from the call's return (0 when before)
	Early    int             // edges that held the new MTU before the call returned
	Messages int
	Bytes    int64
}

// ChangeMTU sets the topology's MTU to `to` (a change of every edge's
// state) and waits for every edge to hold it.
func ChangeMTU(ctx context.Context, admin *Admin, fleet *Fleet, from, to int) (MTUResult, error) {
	res := MTUResult{From: from, To: to}
	before := fleet.Snapshot()
	t0 := time.Now()
	if _, err := admin.SetTopology(ctx, &pb.SetTopologyRequest{Topology: HubAndSpoke(uint32(to))}); err != nil {
		return res, fmt.Errorf("SetTopology mtu %d: %w", to, err)
	}
	t1 := time.Now()
	res.Call = t1.Sub(t0)
	if err := fleet.Wait(ctx, len(before), func(s *EdgeStats) bool { return s.MTU == to }); err != nil {
		return res, fmt.Errorf("waiting for mtu %d: %w", to, err)
	}
	after := fleet.Snapshot()
	for i, s := range after {
		d := s.MTUAt.Sub(t1)
		if d < 0 {
			d, res.Early = 0, res.Early+1
		}
		res.Latency = append(res.Latency, d)
		res.Messages += s.Messages - before[i].Messages
		res.Bytes += s.Bytes - before[i].Bytes
	}
	return res, nil
}

// OneTunnelResult is what ChangeOneTunnel measured.
type OneTunnelResult struct {
	Site     string
	Affected map[string]int64 // bytes received by the spoke and each hub
	Others   int              // other edges that received anything
	OtherB   int64            // and how much
	Took     time.Duration    // UpdateSite call until the affected edges held it
}

// ChangeOneTunnel moves spoke i's inet1 to its alternate address, which
// changes the spoke's tunnels to its hubs and nothing else, waits until
// the spoke and both hubs hold the change, then watches the whole fleet
// for quiet: that no other edge receives anything can only be seen over a
// window.
func ChangeOneTunnel(ctx context.Context, admin *Admin, fleet *Fleet, i int, quiet time.Duration) (OneTunnelResult, error) {
	site := SiteName(i)
	addr := Underlay(i, 0, true)
	res := OneTunnelResult{Site: site, Affected: map[string]int64{}}
	before := fleet.Snapshot()
	spec := SiteSpec(i, 1)
	spec.Transports[0].Address = addr.String()
	t0 := time.Now()
	if _, err := admin.UpdateSite(ctx, &pb.UpdateSiteRequest{Site: spec}); err != nil {
		return res, fmt.Errorf("UpdateSite %s: %w", site, err)
	}
	affected := map[string]bool{site: true}
	for h := range Hubs {
		affected[SiteName(h)] = true
	}
	err := fleet.Wait(ctx, len(before), func(s *EdgeStats) bool {
		if !affected[s.Site] {
			return true
		}
		if s.State == nil {
			return false
		}
		found := false
		for _, t := range s.State.Desired.Tunnels {
			switch {
			case s.Site == site:
				found = true
				if t.LocalUnderlay != addr {
					return false
				}
			case t.RemoteSite == site:
				found = true
				if t.RemoteUnderlay != addr {
					return false
				}
			}
		}
		return found
	})
	if err != nil {
		return res, fmt.Errorf("waiting for %s's new address: %w", site, err)
	}
	res.Took = time.Since(t0)
	select {
	case <-time.After(quiet):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	for j, s := range fleet.Snapshot() {
		d := s.Bytes - before[j].Bytes
		if affected[s.Site] {
			res.Affected[s.Site] = d
		} else if d != 0 {
			res.Others++
			res.OtherB += d
		}
	}
	return res, nil
}

// RestartResult is what Restart measured.
type RestartResult struct {
	Stopped, Ready time.Time // old controller gone; new one serving
	AllCurrent     time.Time // every edge holds the new controller's state
	Resets         int       // open streams lost (syncer events) across the fleet
	Retries        int       // failed attempts to reopen one
	Reconnects     int
}

// Restart restarts the controller with the whole fleet connected and
// waits until every edge is current again: it received a desired state
// after the old controller had stopped (so from the new one, which sends
// every (re)connecting edge the state it serves) and has taken it.
func Restart(ctx context.Context, ctl Controller, fleet *Fleet) (RestartResult, error) {
	var res RestartResult
	before := fleet.Snapshot()
	stopped, err := ctl.Restart(ctx)
	if err != nil {
		return res, fmt.Errorf("restart: %w", err)
	}
	res.Stopped, res.Ready = stopped, time.Now()
	if err := fleet.Wait(ctx, len(before), func(s *EdgeStats) bool { return s.CurrentSince(stopped) }); err != nil {
		return res, fmt.Errorf("waiting for edges after the restart: %w", err)
	}
	for j, s := range fleet.Snapshot() {
		res.AllCurrent = maxTime(res.AllCurrent, s.LastState)
		res.Resets += s.Losses - before[j].Losses
		res.Reconnects += s.Connects - before[j].Connects
		res.Retries += s.Retries - before[j].Retries
	}
	return res, nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

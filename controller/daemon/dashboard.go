package daemon

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
	"github.com/meshwan/meshwan/web"
)

// dashboardSource adapts the controller to web.Source: one network
// snapshot plus the edges' status make the state; store watches (intent,
// tunnels, observed addresses, edge reports written by any replica), the
// health registry's in-memory reports and the event feed say when it may
// have changed. The web server follows Changes only while a browser holds
// an event stream open, so with nobody watching none of this runs.
//
// As a web.Sampler it also gives the tunnels' view of the edges from the
// health registry alone (memory and its watched copy of etcd, no network
// snapshot, no JSON), which keeps the tunnels' history going while nobody
// watches.
type dashboardSource struct {
	d  *Daemon
	st *store.Store
	// ctx bounds the watches Changes starts (the daemon's run context).
	ctx context.Context
	// builds counts State calls (meshwan_dashboard_builds_total).
	builds atomic.Int64
}

var (
	_ web.Source  = (*dashboardSource)(nil)
	_ web.Sampler = (*dashboardSource)(nil)
)

// dashboardWatch lists the store prefixes whose changes the dashboard shows:
// what changes desired state, and what edges report.
var dashboardWatch = append(slices.Clone(network.WatchPrefixes), "health/", "enroll/edges/", "enroll/devices/")

// figuresEvery paces the refreshes for reports whose state did not change
// (only RTT, jitter, loss or counters moved): edges report every second, so
// the page shows figures at most this old without re-reading the network
// once per edge per second. State changes refresh at once.
const figuresEvery = time.Second

func (s *dashboardSource) Changes() (<-chan struct{}, func()) {
	ctx, cancel := context.WithCancel(s.ctx)
	out := make(chan struct{}, 1)
	poke := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	for _, prefix := range dashboardWatch {
		revs := s.st.Watch(ctx, prefix)
		if prefix != "health/" {
			wg.Go(func() {
				for range revs {
					poke()
				}
			})
			continue
		}
		// Every replica writes each connected edge's report once per
		// summary period (a write every 6 ms at 5,000 edges): paced like
		// the figures. This process's own state changes arrive at once
		// through the registry below.
		written := make(chan health.Change, 1)
		wg.Go(func() {
			for range revs {
				select {
				case written <- health.Change{}:
				default:
				}
			}
		})
		wg.Go(func() { throttle(ctx, written, figuresEvery, poke) })
	}
	events, unsubscribe := s.d.Events.Subscribe()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-events:
				poke()
			}
		}
	})
	// Reports this process holds in memory: most are never written to
	// etcd, so no watch sees them.
	reports, unsubscribeReports := s.d.Health.Subscribe()
	wg.Go(func() { throttle(ctx, reports, figuresEvery, poke) })
	return out, func() {
		cancel()
		unsubscribe()
		unsubscribeReports()
		wg.Wait()
	}
}

// throttle calls poke for every change until ctx ends: at once for a state
// change, otherwise at most once per every (a figures-only change arriving
// sooner is held back until then, never dropped).
func throttle(ctx context.Context, changes <-chan health.Change, every time.Duration, poke func()) {
	var last time.Time
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	pending := false
	fire := func() {
		timer.Stop()
		pending = false
		last = time.Now()
		poke()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-changes:
			wait := every - time.Since(last)
			switch {
			case c.StateChanged || wait <= 0:
				fire()
			case !pending:
				pending = true
				timer.Reset(wait)
			}
		case <-timer.C:
			if pending {
				fire()
			}
		}
	}
}

func (s *dashboardSource) State(ctx context.Context) (web.State, error) {
	s.builds.Add(1)
	snap, err := s.d.Net.Snapshot(ctx)
	if err != nil {
		return web.State{}, err
	}
	status, err := s.d.Health.All(ctx)
	if err != nil {
		return web.State{}, err
	}
	out := web.State{Topology: string(snap.Topology.Mode), Routing: string(snap.Topology.Routing)}
	if a, ok := s.d.GRPCAddr.(*net.TCPAddr); ok {
		out.GRPCPort = a.Port
	}
	certs, err := s.d.Enroll.Identities(ctx)
	if err != nil {
		return web.State{}, err
	}
	devices, err := s.d.Enroll.Devices(ctx)
	if err != nil {
		return web.State{}, err
	}
	now := time.Now()
	byName := map[string]*web.Cert{}
	for _, e := range certs {
		if e.NotAfter.IsZero() {
			continue // issued before expiry dates were recorded
		}
		start := e.EnrolledAt
		if !e.RenewedAt.IsZero() {
			start = e.RenewedAt
		}
		byName[e.Site] = &web.Cert{NotAfter: e.NotAfter, Revoked: e.Revoked, DeviceID: e.DeviceID, Expired: !now.Before(e.NotAfter),
			ExpiresSoon: e.NotAfter.Sub(now) < e.NotAfter.Sub(start)/4}
	}
	for _, site := range snap.SiteList() {
		ws := dashboardSite(snap, site, status[site.Name])
		ws.Cert = byName[site.Name]
		out.Sites = append(out.Sites, ws)
	}
	for _, d := range devices {
		wd := web.Device{ID: d.ID, State: d.State, Site: d.Site, KeySHA256: d.KeyHash, Hostname: d.Hostname, RemoteAddr: d.RemoteAddr}
		if !d.LastSeen.IsZero() {
			t := d.LastSeen
			wd.LastSeen = &t
		}
		if !d.ExpiresAt.IsZero() {
			t := d.ExpiresAt
			wd.ExpiresAt = &t
		}
		out.Devices = append(out.Devices, wd)
	}
	ids := make([]string, 0, len(snap.Tunnels))
	for id := range snap.Tunnels {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		out.Tunnels = append(out.Tunnels, dashboardTunnel(snap, snap.Tunnels[id], status))
	}
	for _, ev := range s.d.Events.Recent() {
		out.Events = append(out.Events, web.Event{Time: ev.Time, What: ev.What, Level: eventLevel(ev.What)})
	}
	return out, nil
}

func dashboardSite(snap *network.Snapshot, site intent.Site, st health.Status) web.Site {
	out := web.Site{Name: site.Name, Role: string(site.Role), ASN: site.ASN, State: string(st.State),
		AgentVersion: st.Agent, AppliedVersion: st.Report.AppliedVersion}
	if out.Role == "" {
		out.Role = string(intent.RoleSpoke)
	}
	for _, p := range st.Report.BGPPeers {
		out.BGPPeers = append(out.BGPPeers, web.BGPPeer{Neighbor: p.Neighbor, ASN: p.ASN, TunnelID: p.TunnelID, State: p.State,
			Received: p.Received, Advertised: p.Advertised})
	}
	if out.State == "" {
		out.State = web.SiteNeverSeen
	}
	if site.Unmanaged {
		out.State = web.SiteUnmanaged // no edge; its tunnels show the managed ends' reports
	}
	// An up edge shows as connected; the time of its last report (every
	// second) would only make every report a new state for the page.
	if !st.LastSeen.IsZero() && st.State != health.Up {
		t := st.LastSeen
		out.LastSeen = &t
	}
	for _, tr := range site.Transports {
		wt := web.Transport{Name: tr.Name, Address: intent.Dynamic}
		if !tr.Dynamic {
			wt.Address = tr.Addr.String()
		} else if a, ok := snap.Observed[site.Name][tr.Name]; ok && a.IsValid() {
			wt.Observed = a.String()
		}
		out.Transports = append(out.Transports, wt)
	}
	for _, p := range site.LANPrefixes {
		out.LANPrefixes = append(out.LANPrefixes, p.String())
	}
	return out
}

func dashboardTunnel(snap *network.Snapshot, t network.Tunnel, status map[string]health.Status) web.Tunnel {
	end := func(e topology.End, inner string) web.TunnelEnd {
		underlay := intent.Dynamic
		if a := snap.Underlay(e); a.IsValid() {
			underlay = a.String()
		}
		return web.TunnelEnd{Site: e.Site, Transport: e.Transport, Underlay: underlay, Inner: inner, ASN: snap.Sites[e.Site].ASN}
	}
	out := web.Tunnel{ID: t.ID, A: end(t.A, t.AInner().String()), B: end(t.B, t.BInner().String()),
		Prefix: t.Prefix.String(), CreatedAt: t.CreatedAt}
	var m probeFigures
	for _, site := range []string{t.A.Site, t.B.Site} {
		st, ok := status[site]
		if !ok || st.State != health.Up {
			continue
		}
		for _, ts := range st.Report.Tunnels {
			if ts.TunnelID == t.ID {
				out.Reports = append(out.Reports, endReport(site, ts))
				m.add(ts)
			}
		}
	}
	out.RTTMillis, out.JitterMillis, out.LossPercent = m.rtt, m.jitter, m.loss
	return out
}

func endReport(site string, ts health.TunnelStatus) web.EndReport {
	return web.EndReport{Site: site, State: ts.State, LinkUp: ts.LinkUp,
		IKEState: ts.IKEState, ChildState: ts.ChildState, Detail: ts.Detail, BytesIn: ts.BytesIn, BytesOut: ts.BytesOut}
}

// Sample implements web.Sampler: every site's state, and every tunnel a
// connected edge reports with both ends' reports and figures combined as
// State combines them.
func (s *dashboardSource) Sample(ctx context.Context) ([]web.Site, []web.Tunnel, error) {
	status, err := s.d.Health.All(ctx)
	if err != nil {
		return nil, nil, err
	}
	sites := make([]web.Site, 0, len(status))
	type acc struct {
		t web.Tunnel
		m probeFigures
	}
	byID := map[string]*acc{}
	for name, st := range status {
		sites = append(sites, web.Site{Name: name, State: string(st.State)})
		if st.State != health.Up {
			continue
		}
		for _, ts := range st.Report.Tunnels {
			a := byID[ts.TunnelID]
			if a == nil {
				a = &acc{t: web.Tunnel{ID: ts.TunnelID}}
				byID[ts.TunnelID] = a
			}
			a.t.Reports = append(a.t.Reports, endReport(name, ts))
			a.m.add(ts)
		}
	}
	tunnels := make([]web.Tunnel, 0, len(byID))
	for _, a := range byID {
		a.t.RTTMillis, a.t.JitterMillis, a.t.LossPercent = a.m.rtt, a.m.jitter, a.m.loss
		tunnels = append(tunnels, a.t)
	}
	return sites, tunnels, nil
}

// SampleChanges implements web.Sampler: the state changes of the reports
// this process holds. Other replicas' edges are sampled on the history
// period only.
func (s *dashboardSource) SampleChanges() (<-chan struct{}, func()) {
	ctx, cancel := context.WithCancel(s.ctx)
	out := make(chan struct{}, 1)
	reports, unsubscribe := s.d.Health.Subscribe()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case c := <-reports:
				if c.StateChanged {
					select {
					case out <- struct{}{}:
					default:
					}
				}
			}
		}
	})
	return out, func() {
		cancel()
		unsubscribe()
		wg.Wait()
	}
}

// probeFigures combines what both ends measure on a tunnel: the worse of
// the two, as the tunnel's state is the worse end's. Loss counts from any
// end that probes; RTT and jitter only from ends whose probes are up (a
// down or not yet answered tunnel has no current RTT). Nil: nobody
// measured it, and the page shows a dash.
type probeFigures struct {
	rtt, jitter, loss *float64
}

func (m *probeFigures) add(ts health.TunnelStatus) {
	if !ts.Probed {
		return
	}
	worse(&m.loss, ts.LossPct)
	if ts.ProbeState == "up" {
		worse(&m.rtt, ts.RTTMillis)
		worse(&m.jitter, ts.JitterMillis)
	}
}

func worse(p **float64, v float64) {
	if *p == nil || v > **p {
		*p = &v
	}
}

// eventLevel grades the daemon's free-text events for the page.
func eventLevel(what string) string {
	switch {
	case strings.HasSuffix(what, " disconnected"):
		return web.LevelWarn
	case strings.HasSuffix(what, " connected"), strings.HasSuffix(what, " enrolled"):
		return web.LevelOK
	}
	return web.LevelInfo
}

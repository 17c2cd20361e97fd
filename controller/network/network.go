// Package network is the controller's Go API over the network intent: the
// verbs the admin API exposes (sites, topology, tunnels) and the desired
// state of each edge. It validates every change against the whole intent
// before writing (so bad input leaves the store unchanged), commits it with
// a compare-and-swap on the intent revision, and then reconciles tunnels:
// each tunnel the topology asks for gets a /30 and a sealed PSK, each tunnel
// it no longer asks for is removed with its /30 released. Tunnels are keyed
// by their ends, so a change elsewhere never moves an existing tunnel's /30
// or PSK.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// ErrRetry is returned when an intent change kept losing races.
var ErrRetry = errors.New("too much concurrent change, try again")

// Config holds what a Network needs.
type Config struct {
	Store      *store.Store
	TunnelPool ipam.Pool30
	ASNs       ipam.ASNRange
	Sealer     *secrets.Sealer
	Logger     *slog.Logger
	// EdgeKey names the store key of a site's enrollment record, deleted
	// with the site so its certificate stops working.
	EdgeKey func(site string) string
	// Now is the clock (nil: time.Now); tests of schedules set it.
	Now func() time.Time
}

// Network is the intent API.
type Network struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	tuns  *ipam.Allocator
	asns  *ipam.Allocator
	v     *view
	wg    sync.WaitGroup
	recMu sync.Mutex // one reconcile at a time in this process
	now   func() time.Time
	// refusedAddrs counts edge-reported addresses refused (ObserveAddresses).
	refusedAddrs atomic.Uint64
}

// New returns a Network; Start loads its view of the store.
func New(cfg Config) *Network {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Network{
		cfg:  cfg,
		st:   cfg.Store,
		log:  log,
		tuns: ipam.NewAllocator(cfg.Store, tunnelIPAM, cfg.TunnelPool.Size()),
		asns: ipam.NewAllocator(cfg.Store, asnIPAM, cfg.ASNs.Size()),
		now:  time.Now,
	}
	if cfg.Now != nil {
		n.now = cfg.Now
	}
	n.v = newView(n)
	return n
}

// Snapshot returns a copy of the whole network at one revision.
func (n *Network) Snapshot(context.Context) (*Snapshot, error) { return n.v.copySnapshot(), nil }

// Read runs fn on the live view, under its read lock: fn must be quick and
// must not keep s or anything it holds past its return.
func (n *Network) Read(fn func(s *Snapshot)) {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	fn(&n.v.snap)
}

// TunnelCount is the number of tunnels with an end at site.
func (n *Network) TunnelCount(site string) int {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	return len(n.v.bySite[site])
}

// maxIntentAttempts bounds the optimistic-concurrency retries of one change.
const maxIntentAttempts = 20

// change runs one intent change: fn validates the proposed intent against
// the view and returns the writes; they commit only if no other intent
// change happened since the view's revision (the intent/rev guard). Then
// the sites the change touches are reconciled. A lost race waits for the
// view to catch up and runs fn again.
func (n *Network) change(ctx context.Context, fn func(s *Snapshot) (changeOps, error)) error {
	for range maxIntentAttempts {
		var c changeOps
		var err error
		var guardRev int64
		var asnFree []int
		n.v.mu.RLock()
		c, err = fn(&n.v.snap)
		guardRev = n.v.snap.intentRev
		if err == nil && c.allocASNFor != "" {
			asnFree = n.v.asnIdx.free(1, n.cfg.ASNs.Size(), n.asns.Seen)
		}
		n.v.mu.RUnlock()
		if err != nil {
			return err
		}
		guard := []store.Cmp{store.Unchanged(intentRev, guardRev)}
		ops := append(c.ops, store.Put(intentRev, nil))
		var ok bool
		var rev int64
		if c.allocASNFor == "" {
			ok, rev, err = n.st.Txn(ctx, guard, ops)
		} else {
			if len(asnFree) == 0 {
				return fmt.Errorf("%w: every ASN of the pool %d-%d is in use", ipam.ErrExhausted, n.cfg.ASNs.First, n.cfg.ASNs.First+uint32(n.cfg.ASNs.Size())-1)
			}
			var got map[string]int
			got, rev, err = n.asns.TakeFree(ctx, []string{c.allocASNFor}, asnFree, func(_ string, i int) ([]store.Cmp, []store.Op) {
				site := c.site
				site.ASN = n.cfg.ASNs.First + uint32(i)
				raw, _ := json.Marshal(site)
				return guard, append(slices.Clone(ops), store.Put(sitesDir+site.Name, raw))
			}, ipam.BatchOptions{PerTxn: 1, InFlight: 1})
			ok = len(got) == 1
			if errors.Is(err, ipam.ErrGuardFailed) {
				err = nil
			}
		}
		if err != nil {
			return err
		}
		if err := n.v.waitRev(ctx, rev); err != nil {
			return err
		}
		if !ok {
			continue
		}
		if c.all {
			return n.Reconcile(ctx)
		}
		return n.ReconcileSites(ctx, c.sites...)
	}
	return ErrRetry
}

type changeOps struct {
	ops []store.Op
	// allocASNFor names the site whose ASN must be taken from the pool in
	// the same transaction; site is then written by the allocation.
	allocASNFor string
	site        intent.Site
	// sites to reconcile after the change, or all of them.
	sites []string
	all   bool
}

// candidates lists the sites DeriveFor needs to look at for site: every
// site, or only the hubs for a spoke of a hub-and-spoke topology. Called
// with the view locked.
func (v *view) candidates(site intent.Site) []intent.Site {
	s := &v.snap
	if s.Topology.Mode == intent.ModeHubAndSpoke && !site.Hub() {
		out := make([]intent.Site, 0, len(v.hubs))
		for h := range v.hubs {
			out = append(out, s.Sites[h])
		}
		return out
	}
	out := make([]intent.Site, 0, len(s.Sites))
	for _, o := range s.Sites {
		out = append(out, o)
	}
	return out
}

// linksFor derives the tunnels site needs under topology t, against the
// view's sites with site in place of its stored version. Called with the
// view locked.
func (v *view) linksFor(site intent.Site, t intent.Topology) []topology.Link {
	if t.Mode == "" {
		return nil
	}
	return topology.DeriveFor(site, v.candidates(site), t.WithDefaults())
}

// checkSiteChange validates one site's creation or update against the
// view in O(n log k) in the number of sites n: clashes with the others,
// transit prefixes, the topology's needs, and the pool's capacity (the
// tunnels the network has minus the site's old ones plus its new ones).
// Called with the view locked.
func (n *Network) checkSiteChange(s *Snapshot, site intent.Site, old *intent.Site) error {
	others := make([]intent.Site, 0, len(s.Sites))
	hasHub := site.Hub()
	for _, o := range s.Sites {
		others = append(others, o)
		hasHub = hasHub || (o.Hub() && o.Name != site.Name)
	}
	// O(n log k): site's few prefixes and addresses are indexed and every
	// other site's looked up (BenchmarkBuildHub/5000/create); others holds
	// site's old version, which CheckSite skips by name.
	if err := intent.CheckSite(site, others, s.Observed, n.cfg.TunnelPool.Prefix()); err != nil {
		return err
	}
	if err := s.rawTopology.CheckTransit(site); err != nil {
		return err
	}
	// An address its edge reported earlier for a transport that is
	// dynamic (again) must not lie in a transit prefix either.
	if err := s.rawTopology.CheckUnderlays(intent.NewIndex([]intent.Site{site}, s.Observed)); err != nil {
		return err
	}
	if s.rawTopology.Mode == intent.ModeHubAndSpoke && !hasHub {
		return fmt.Errorf("%w: topology.mode: hub-and-spoke needs at least one site with role hub", intent.ErrPrecondition)
	}
	need := len(s.Tunnels) + len(n.v.linksFor(site, s.rawTopology))
	if old != nil {
		need -= len(n.v.bySite[old.Name])
	}
	return n.checkNeed(need)
}

func (n *Network) checkNeed(need int) error {
	if need > n.cfg.TunnelPool.Size() {
		return fmt.Errorf("%w: tunnel pool %s holds %d /30s but this change needs %d tunnels (use a larger --tunnel-pool)",
			ipam.ErrExhausted, n.cfg.TunnelPool.Prefix(), n.cfg.TunnelPool.Size(), need)
	}
	return nil
}

func asnKey(r ipam.ASNRange, asn uint32) string {
	return asnIPAM + strconv.Itoa(int(asn-r.First))
}

// CreateSite adds a site; its ASN is allocated from the pool unless given.
func (n *Network) CreateSite(ctx context.Context, site intent.Site) (intent.Site, error) {
	if err := site.Validate(); err != nil {
		return intent.Site{}, err
	}
	err := n.change(ctx, func(s *Snapshot) (changeOps, error) {
		if _, ok := s.Sites[site.Name]; ok {
			return changeOps{}, fmt.Errorf("%w: site.name: a site named %q already exists", intent.ErrExists, site.Name)
		}
		if err := n.checkSiteChange(s, site, nil); err != nil {
			return changeOps{}, err
		}
		if site.ASN == 0 {
			return changeOps{allocASNFor: site.Name, site: site, sites: []string{site.Name}}, nil
		}
		raw, _ := json.Marshal(site)
		ops := []store.Op{store.Put(sitesDir+site.Name, raw)}
		if n.cfg.ASNs.Contains(site.ASN) {
			ops = append(ops, store.Put(asnKey(n.cfg.ASNs, site.ASN), []byte(site.Name)))
		}
		return changeOps{ops: ops, sites: []string{site.Name}}, nil
	})
	if err != nil {
		return intent.Site{}, err
	}
	return n.GetSite(ctx, site.Name)
}

// UpdateSite replaces a site's definition. The ASN cannot change (BGP
// sessions are keyed on it); 0 keeps the current one.
func (n *Network) UpdateSite(ctx context.Context, site intent.Site) (intent.Site, error) {
	if err := site.Validate(); err != nil {
		return intent.Site{}, err
	}
	err := n.change(ctx, func(s *Snapshot) (changeOps, error) {
		old, ok := s.Sites[site.Name]
		if !ok {
			return changeOps{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, site.Name)
		}
		if site.ASN == 0 {
			site.ASN = old.ASN
		}
		if site.ASN != old.ASN {
			return changeOps{}, fmt.Errorf("%w: site.asn: cannot change from %d to %d; delete and re-create the site to renumber", intent.ErrPrecondition, old.ASN, site.ASN)
		}
		if err := n.checkSiteChange(s, site, &old); err != nil {
			return changeOps{}, err
		}
		raw, _ := json.Marshal(site)
		c := changeOps{ops: []store.Op{store.Put(sitesDir+site.Name, raw)}, sites: []string{site.Name}}
		// A role change moves the site's place in every spoke's links.
		c.all = old.Role != site.Role
		return c, nil
	})
	if err != nil {
		return intent.Site{}, err
	}
	return n.GetSite(ctx, site.Name)
}

// DeleteSite removes a site, its ASN reservation, its enrollment (its edge
// certificate stops working) and, through reconciliation, its tunnels.
func (n *Network) DeleteSite(ctx context.Context, name string) error {
	return n.change(ctx, func(s *Snapshot) (changeOps, error) {
		old, ok := s.Sites[name]
		if !ok {
			return changeOps{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, name)
		}
		if s.rawTopology.Mode == intent.ModeHubAndSpoke && old.Hub() && len(n.v.hubs) == 1 {
			return changeOps{}, fmt.Errorf("%w: site %q is the last hub of a hub-and-spoke topology; add another hub or change the topology first", intent.ErrPrecondition, name)
		}
		ops := []store.Op{store.Delete(sitesDir + name), store.Delete(observedDir + name)}
		if n.cfg.ASNs.Contains(old.ASN) {
			ops = append(ops, store.Delete(asnKey(n.cfg.ASNs, old.ASN)))
		}
		if n.cfg.EdgeKey != nil {
			ops = append(ops, store.Delete(n.cfg.EdgeKey(name)))
		}
		return changeOps{ops: ops, sites: []string{name}}, nil
	})
}

// GetSite returns one site.
func (n *Network) GetSite(ctx context.Context, name string) (intent.Site, error) {
	kv, ok, err := n.st.Get(ctx, sitesDir+name)
	if err != nil {
		return intent.Site{}, err
	}
	if !ok {
		return intent.Site{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, name)
	}
	var s intent.Site
	if err := json.Unmarshal(kv.Value, &s); err != nil {
		return intent.Site{}, fmt.Errorf("stored site %s: %w", name, err)
	}
	return s, nil
}

// SiteExists reports whether a site exists.
func (n *Network) SiteExists(ctx context.Context, name string) (bool, error) {
	_, err := n.GetSite(ctx, name)
	if errors.Is(err, intent.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ListSites returns every site, sorted by name.
func (n *Network) ListSites(ctx context.Context) ([]intent.Site, error) {
	var out []intent.Site
	n.Read(func(s *Snapshot) { out = s.SiteList() })
	return out, nil
}

// GetTopology returns the topology with defaults filled in.
func (n *Network) GetTopology(ctx context.Context) (intent.Topology, error) {
	kv, ok, err := n.st.Get(ctx, topologyKey)
	if err != nil || !ok {
		return intent.Topology{}.WithDefaults(), err
	}
	var t intent.Topology
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return intent.Topology{}, fmt.Errorf("stored topology: %w", err)
	}
	return t.WithDefaults(), nil
}

// SetTopology replaces the topology. It derives the whole network once
// (capacity); a topology change touches every site anyway.
func (n *Network) SetTopology(ctx context.Context, t intent.Topology) (intent.Topology, error) {
	err := n.change(ctx, func(s *Snapshot) (changeOps, error) {
		sites := s.SiteList()
		if err := t.Validate(sites); err != nil {
			return changeOps{}, err
		}
		if err := t.CheckUnderlays(intent.NewIndex(sites, s.Observed)); err != nil {
			return changeOps{}, err
		}
		for i, p := range t.TransitPrefixes {
			if p.Overlaps(n.cfg.TunnelPool.Prefix()) {
				return changeOps{}, fmt.Errorf("%w: topology.transit_prefixes[%d]: %s overlaps the tunnel pool %s", intent.ErrConflict, i, p, n.cfg.TunnelPool.Prefix())
			}
		}
		if err := n.checkNeed(len(topology.Derive(sites, t.WithDefaults()))); err != nil {
			return changeOps{}, err
		}
		raw, _ := json.Marshal(t)
		return changeOps{ops: []store.Op{store.Put(topologyKey, raw)}, all: true}, nil
	})
	if err != nil {
		return intent.Topology{}, err
	}
	return n.GetTopology(ctx)
}

// ListTunnels returns the tunnels (all, or those with an end at site),
// sorted by id.
func (n *Network) ListTunnels(ctx context.Context, site string) ([]TunnelView, error) {
	var out []TunnelView
	var err error
	n.Read(func(s *Snapshot) {
		if site == "" {
			out = make([]TunnelView, 0, len(s.Tunnels))
			for _, t := range s.Tunnels {
				out = append(out, s.view(t))
			}
			return
		}
		if _, ok := s.Sites[site]; !ok {
			err = fmt.Errorf("%w: site %q", intent.ErrNotFound, site)
			return
		}
		for id := range n.v.bySite[site] {
			out = append(out, s.view(s.Tunnels[id]))
		}
	})
	slices.SortFunc(out, func(a, b TunnelView) int { return strings.Compare(a.ID, b.ID) })
	return out, err
}

// GetTunnel returns one tunnel.
func (n *Network) GetTunnel(ctx context.Context, id string) (TunnelView, error) {
	var out TunnelView
	var ok bool
	n.Read(func(s *Snapshot) {
		var t Tunnel
		if t, ok = s.Tunnels[id]; ok {
			out = s.view(t)
		}
	})
	if !ok {
		return TunnelView{}, fmt.Errorf("%w: tunnel %q", intent.ErrNotFound, id)
	}
	return out, nil
}

// TunnelView is a tunnel with its ends resolved against the sites. It
// carries no PSK.
type TunnelView struct {
	Tunnel
	AEnd, BEnd EndView
}

// EndView is one resolved end.
type EndView struct {
	topology.End
	Underlay netip.Addr // invalid while a dynamic address is unknown
	Inner    netip.Prefix
	ASN      uint32
}

func (s *Snapshot) view(t Tunnel) TunnelView {
	return TunnelView{
		Tunnel: t,
		AEnd:   EndView{End: t.A, Underlay: s.Underlay(t.A), Inner: t.AInner(), ASN: s.Sites[t.A.Site].ASN},
		BEnd:   EndView{End: t.B, Underlay: s.Underlay(t.B), Inner: t.BInner(), ASN: s.Sites[t.B.Site].ASN},
	}
}

// SiteKey is the store key of a site's intent record (enrollment guards its
// transactions on it).
func SiteKey(name string) string { return sitesDir + name }

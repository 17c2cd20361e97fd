package network

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/topology"
)

// Audit checks the stored network as a whole against today's rules and
// returns every problem found (at most one per site, plus the topology's
// and the reported addresses'), sorted; nil when the network is valid.
//
// Every change is validated before it is committed, so a network written
// by this version passes. Audit is for what an older version stored under
// looser rules (the shared rules of edge/dataplane/validity refuse, e.g., a
// LAN in 127.0.0.0/8 or one containing a site's underlay): edges of this
// version refuse the desired states such an intent produces and keep their
// last good state, so the controller says so loudly at start instead of
// leaving it to the edges' logs. The fix is an UpdateSite (or a network
// file apply) that the controller then validates as usual.
//
// The answer is cached until a site, the topology or an observed address
// changes: Audit runs at every /metrics scrape (meshwan_intent_violations),
// and at 5,000 sites one run is an index build and a check of every site.
func (n *Network) Audit() []error {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	c := &n.v.audit
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs.get(n.v.auditGen, n.audit))
}

// Unjoined lists the pairs of sites the topology connects that get no
// tunnel because every transport pair the match rule would join is
// dynamic at both ends (topology.Unjoined: behind NAT neither end can
// reach the other first). Not an error: a declaration may mean it, and in
// hub-and-spoke such spokes still reach each other through a hub. It is
// shown with the topology (GetTopology, SetTopology) and counted in
// meshwan_unjoined_site_pairs. Cached like Audit, on the same changes.
func (n *Network) Unjoined() []topology.Pair {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	c := &n.v.audit
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.unjoined.get(n.v.auditGen, func() []topology.Pair {
		return topology.Unjoined(n.v.snap.SiteList(), n.v.snap.Topology)
	}))
}

// auditCache holds the answers of Audit and Unjoined, each with the
// view's auditGen it was computed at. Its mutex serializes computing them
// (readers of the view run concurrently under the view's read lock).
type auditCache struct {
	mu       sync.Mutex
	errs     genCached[[]error]
	unjoined genCached[[]topology.Pair]
}

// genCached is a value computed at one generation of the view.
type genCached[T any] struct {
	valid bool
	gen   uint64
	v     T
}

// get returns the value for gen, computing it if the one held is from
// another generation (or none is held).
func (c *genCached[T]) get(gen uint64, compute func() T) T {
	if !c.valid || c.gen != gen {
		c.v, c.gen, c.valid = compute(), gen, true
	}
	return c.v
}

// audit is Audit without the cache; the caller holds the view's read lock.
func (n *Network) audit() []error {
	s := &n.v.snap
	sites := s.SiteList()
	pool := n.cfg.TunnelPool.Prefix()
	idx := intent.NewIndex(sites, s.Observed)
	var errs []error
	for _, site := range sites {
		err := site.Validate()
		if err == nil {
			err = idx.CheckSite(site, pool)
		}
		if err != nil {
			errs = append(errs, siteErr(site.Name, err))
		}
	}
	if err := s.rawTopology.Validate(sites); err != nil {
		errs = append(errs, fmt.Errorf("topology: %w", err))
	} else if err := s.rawTopology.CheckUnderlays(idx); err != nil {
		errs = append(errs, fmt.Errorf("topology: %w", err))
	}
	for site, addrs := range s.Observed {
		for tr, a := range addrs {
			if !a.IsValid() {
				continue
			}
			if err := idx.CheckObserved(site, tr, a, pool, s.Topology); err != nil {
				errs = append(errs, err)
			}
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errs
}

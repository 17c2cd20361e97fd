package network

import (
	"fmt"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/controller/intent"
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
func (n *Network) Audit() []error {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
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

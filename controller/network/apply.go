package network

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// Plan is what ApplyNetwork changes (or, in a dry run, would change).
// Every list is sorted.
type Plan struct {
	Created []string
	Updated []SiteUpdate
	Deleted []string
	// NotInRequest lists the sites that exist, are not in the request and
	// stay because prune was not asked for.
	NotInRequest []string
	// Topology names the topology fields that change (mode, mtu, ...),
	// compared with the defaults filled in on both sides.
	Topology       []string
	TunnelsAdded   []string
	TunnelsRemoved []string
	// TunnelsKept counts the tunnels that stay with their /30 and PSK.
	TunnelsKept int
}

// SiteUpdate names a changed site and its changed fields.
type SiteUpdate struct {
	Name   string
	Fields []string
}

// Changed reports whether applying the plan changes anything.
func (p Plan) Changed() bool {
	return len(p.Created)+len(p.Updated)+len(p.Deleted)+len(p.Topology)+len(p.TunnelsAdded)+len(p.TunnelsRemoved) > 0
}

// ApplyNetwork makes the intent match a whole network declaration: the
// sites (created, updated, and with prune the others deleted) and the
// topology. It is all-or-nothing: the declaration is validated as a whole
// against the view (each changed site against the final set, the topology
// against it, the tunnel pool's capacity), then committed in ONE etcd
// transaction guarded on intent/rev, with the ASNs of new sites taken from
// the pool in the same transaction. A refused declaration writes nothing.
// Applying the same declaration again writes nothing and returns a plan
// whose Changed is false. dryRun returns the plan without writing.
//
// Errors name the site (`site "br2": ...`) or the topology field.
func (n *Network) ApplyNetwork(ctx context.Context, sites []intent.Site, t intent.Topology, prune, dryRun bool) (Plan, error) {
	for range maxIntentAttempts {
		n.v.mu.RLock()
		a, err := n.prepareApply(&n.v.snap, sites, t, prune)
		guardRev := n.v.snap.intentRev
		n.v.mu.RUnlock()
		if err != nil {
			return Plan{}, err
		}
		if dryRun {
			return a.plan, nil
		}
		if len(a.ops) == 0 && len(a.alloc) == 0 {
			if a.plan.Changed() {
				// The intent matches but its tunnels are not all
				// allocated yet (a reconcile is due): do it now.
				return a.plan, n.Reconcile(ctx)
			}
			return a.plan, nil
		}
		guard := []store.Cmp{store.Unchanged(intentRev, guardRev)}
		ops := append(a.ops, store.Put(intentRev, nil))
		nops := len(ops) + 2*len(a.alloc)
		var ok bool
		var rev int64
		if len(a.alloc) == 0 {
			ok, rev, err = n.st.Txn(ctx, guard, ops)
		} else {
			// One transaction for everything: the first new site carries
			// the guard and every other write (PerTxn covers all owners).
			names := make([]string, len(a.alloc))
			for i, s := range a.alloc {
				names[i] = s.Name
			}
			byName := map[string]intent.Site{}
			for _, s := range a.alloc {
				byName[s.Name] = s
			}
			var got map[string]int
			got, rev, err = n.asns.TakeBatch(ctx, names, a.asnUsed, func(name string, i int) ([]store.Cmp, []store.Op) {
				site := byName[name]
				site.ASN = n.cfg.ASNs.First + uint32(i)
				raw, _ := json.Marshal(site)
				w := []store.Op{store.Put(sitesDir+name, raw)}
				if name != names[0] {
					return nil, w
				}
				return guard, append(slices.Clone(ops), w...)
			}, ipam.BatchOptions{PerTxn: len(names), InFlight: 1})
			ok = len(got) == len(names)
			if errors.Is(err, ipam.ErrGuardFailed) {
				err = nil
			}
		}
		if err != nil {
			return Plan{}, txnError(err, nops)
		}
		if err := n.v.waitRev(ctx, rev); err != nil {
			return Plan{}, err
		}
		if !ok {
			continue // another intent change won: validate again
		}
		n.log.Info("network applied", "created", len(a.plan.Created), "updated", len(a.plan.Updated), "deleted", len(a.plan.Deleted),
			"topology_changes", len(a.plan.Topology), "store_ops", nops)
		return a.plan, n.Reconcile(ctx)
	}
	return Plan{}, ErrRetry
}

// txnError explains a transaction etcd refused for its size: the apply
// cannot be split without losing all-or-nothing, so the operator must
// raise the server's limits (the embedded etcd's are high already).
func txnError(err error, nops int) error {
	msg := err.Error()
	// store.Txn recognises the operation limit; the request size limits
	// (the server's --max-request-bytes, the client's send limit) surface
	// only as text from etcd and gRPC.
	if errors.Is(err, store.ErrTxnTooLarge) || strings.Contains(msg, "request is too large") || strings.Contains(msg, "larger than max") {
		return fmt.Errorf("%w: applying this network takes one etcd transaction of %d operations, which etcd refused as too large; "+
			"raise the etcd server's --max-txn-ops (default 128) and --max-request-bytes, or apply the network in smaller steps (%v)",
			intent.ErrPrecondition, nops, err)
	}
	return err
}

// applyOps is a validated declaration: its plan and its writes.
type applyOps struct {
	plan Plan
	ops  []store.Op
	// alloc are the new sites without an ASN, in name order: the
	// transaction writes them once their ASNs are taken.
	alloc   []intent.Site
	asnUsed map[int]bool
}

// prepareApply validates the declaration against the view and computes
// its plan and writes. Called with the view locked.
func (n *Network) prepareApply(s *Snapshot, sites []intent.Site, t intent.Topology, prune bool) (applyOps, error) {
	var a applyOps
	want := make([]intent.Site, 0, len(sites))
	seen := make(map[string]bool, len(sites))
	for _, site := range sites {
		if err := site.Validate(); err != nil {
			return a, siteErr(site.Name, err)
		}
		if seen[site.Name] {
			return a, fmt.Errorf("%w: site %q is declared twice", intent.ErrInvalid, site.Name)
		}
		seen[site.Name] = true
		if old, ok := s.Sites[site.Name]; ok {
			if site.ASN == 0 {
				site.ASN = old.ASN
			}
			if site.ASN != old.ASN {
				return a, fmt.Errorf("%w: site %q: site.asn: cannot change from %d to %d; delete and re-create the site to renumber", intent.ErrPrecondition, site.Name, old.ASN, site.ASN)
			}
		}
		want = append(want, site)
	}
	intent.SortSites(want)
	final := slices.Clone(want)
	for _, old := range s.Sites {
		if !seen[old.Name] && !prune {
			final = append(final, old)
		}
	}
	intent.SortSites(final)

	a.plan = planNetwork(s.Sites, s.rawTopology, s.Tunnels, want, t, prune)
	changed := map[string]bool{}
	for _, name := range a.plan.Created {
		changed[name] = true
	}
	for _, u := range a.plan.Updated {
		changed[u.Name] = true
	}
	// Conflicts are symmetric and the unchanged sites are consistent among
	// themselves, so checking each changed site against the final set
	// finds every clash. One index of the final set makes the whole check
	// O(n log n).
	pool := n.cfg.TunnelPool.Prefix()
	idx := intent.NewIndex(final, s.Observed)
	for _, site := range want {
		if !changed[site.Name] {
			continue
		}
		if err := idx.CheckSite(site, pool); err != nil {
			return a, siteErr(site.Name, err)
		}
	}
	if err := t.Validate(final); err != nil {
		return a, err
	}
	if err := t.CheckUnderlays(idx); err != nil {
		return a, err
	}
	for i, p := range t.TransitPrefixes {
		if p.Overlaps(pool) {
			return a, fmt.Errorf("%w: topology.transit_prefixes[%d]: %s overlaps the tunnel pool %s", intent.ErrConflict, i, p, pool)
		}
	}
	if err := n.checkNeed(len(a.plan.TunnelsAdded) + a.plan.TunnelsKept); err != nil {
		return a, err
	}

	// The writes. A key is written at most once per transaction (etcd
	// refuses duplicates): an ASN freed by a pruned site is not handed to
	// a new site in the same transaction, and an explicit ASN taking over
	// a pruned site's key overwrites instead of deleting.
	puts := map[string]bool{}
	a.asnUsed = map[int]bool{}
	for _, o := range s.Sites {
		if n.cfg.ASNs.Contains(o.ASN) {
			a.asnUsed[int(o.ASN-n.cfg.ASNs.First)] = true
		}
	}
	for _, site := range want {
		if !changed[site.Name] {
			continue
		}
		if site.ASN == 0 {
			a.alloc = append(a.alloc, site)
			continue
		}
		raw, _ := json.Marshal(site)
		a.ops = append(a.ops, store.Put(sitesDir+site.Name, raw))
		if _, existed := s.Sites[site.Name]; !existed && n.cfg.ASNs.Contains(site.ASN) {
			k := asnKey(n.cfg.ASNs, site.ASN)
			a.ops = append(a.ops, store.Put(k, []byte(site.Name)))
			puts[k] = true
			a.asnUsed[int(site.ASN-n.cfg.ASNs.First)] = true
		}
	}
	for _, name := range a.plan.Deleted {
		old := s.Sites[name]
		a.ops = append(a.ops, store.Delete(sitesDir+name), store.Delete(observedDir+name))
		if k := asnKey(n.cfg.ASNs, old.ASN); n.cfg.ASNs.Contains(old.ASN) && !puts[k] {
			a.ops = append(a.ops, store.Delete(k))
		}
		if n.cfg.EdgeKey != nil {
			a.ops = append(a.ops, store.Delete(n.cfg.EdgeKey(name)))
		}
	}
	if len(a.plan.Topology) > 0 {
		raw, _ := json.Marshal(t)
		a.ops = append(a.ops, store.Put(topologyKey, raw))
	}
	return a, nil
}

func siteErr(name string, err error) error { return fmt.Errorf("site %q: %w", name, err) }

// planNetwork compares the current intent (sites, raw topology, stored
// tunnels) with a declaration (want: every declared site, ASNs resolved)
// and returns the plan. Sites not declared are deleted with prune and
// otherwise kept; tunnels come from topology.Derive over the resulting
// sites, matched to the stored ones by their pair of ends (topology.Diff),
// so a role change keeps every tunnel that stays. It is pure.
func planNetwork[V topology.Ends](cur map[string]intent.Site, curTopo intent.Topology, tunnels map[string]V, want []intent.Site, t intent.Topology, prune bool) Plan {
	var p Plan
	final := make([]intent.Site, 0, len(want)+len(cur))
	declared := make(map[string]bool, len(want))
	for _, site := range want {
		declared[site.Name] = true
		final = append(final, site)
		old, ok := cur[site.Name]
		if !ok {
			p.Created = append(p.Created, site.Name)
			continue
		}
		if f := siteFields(old, site); len(f) > 0 {
			p.Updated = append(p.Updated, SiteUpdate{Name: site.Name, Fields: f})
		}
	}
	for name, old := range cur {
		if declared[name] {
			continue
		}
		if prune {
			p.Deleted = append(p.Deleted, name)
		} else {
			p.NotInRequest = append(p.NotInRequest, name)
			final = append(final, old)
		}
	}
	p.Topology = topologyFields(curTopo, t)
	links := topology.Derive(final, t.WithDefaults())
	add, remove := topology.Diff(links, tunnels)
	for _, l := range add {
		p.TunnelsAdded = append(p.TunnelsAdded, l.ID)
	}
	p.TunnelsRemoved = remove
	p.TunnelsKept = len(links) - len(add)
	slices.Sort(p.Created)
	slices.SortFunc(p.Updated, func(a, b SiteUpdate) int { return cmp.Compare(a.Name, b.Name) })
	slices.Sort(p.Deleted)
	slices.Sort(p.NotInRequest)
	return p
}

// siteFields names the fields in which b differs from a. Order matters
// for transports and LAN prefixes: it is what the edge is sent.
func siteFields(a, b intent.Site) []string {
	var out []string
	if a.Role != b.Role {
		out = append(out, "role")
	}
	if !slices.Equal(a.Transports, b.Transports) {
		out = append(out, "transports")
	}
	if !slices.Equal(a.LANPrefixes, b.LANPrefixes) {
		out = append(out, "lan_prefixes")
	}
	if a.ASN != b.ASN {
		out = append(out, "asn")
	}
	return out
}

// topologyFields names the topology fields (API names) in which b differs
// from a, both with defaults filled in: spelling out a default is not a
// change.
func topologyFields(a, b intent.Topology) []string {
	a, b = a.WithDefaults(), b.WithDefaults()
	fields := []struct {
		name string
		x, y any
	}{
		{"mode", a.Mode, b.Mode},
		{"transport_match", a.Match, b.Match},
		{"ipsec", a.IPsec, b.IPsec},
		{"mtu", a.MTU, b.MTU},
		{"routing", a.Routing, b.Routing},
		{"path_policy", a.PathPolicy, b.PathPolicy},
		{"transit_prefixes", a.TransitPrefixes, b.TransitPrefixes},
	}
	var out []string
	for _, f := range fields {
		x, _ := json.Marshal(f.x)
		y, _ := json.Marshal(f.y)
		// nil and empty lists are the same declaration.
		if string(x) != string(y) && !(isEmptyJSON(x) && isEmptyJSON(y)) {
			out = append(out, f.name)
		}
	}
	return out
}

func isEmptyJSON(b []byte) bool { s := string(b); return s == "null" || s == "[]" }

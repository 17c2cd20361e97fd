package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// releaseBatch keeps removal transactions under etcd's default limit of 128
// operations (each tunnel takes two deletes and one guard).
const releaseBatch = 40

// Reconcile makes the stored tunnels match what the intent derives, for
// the whole network: it removes the tunnels no longer wanted (releasing
// their /30s) and then creates the missing ones, each with a fresh /30 and
// PSK. Stored tunnels are matched to derived ones by their unordered pair
// of ends, so a tunnel that stays wanted is never rewritten: its id, /30,
// PSK and initiator survive any change of the sites' roles. It is safe to run concurrently in several replicas: every write is
// guarded, and a lost race only means somebody else did the work. Running
// it on an unchanged intent writes nothing.
func (n *Network) Reconcile(ctx context.Context) error { return n.reconcile(ctx, nil, true) }

// ReconcileSites is Reconcile for the tunnels with an end at the named
// sites only (existing or just deleted): the work of one site's change,
// proportional to that site's tunnels, not to the network.
func (n *Network) ReconcileSites(ctx context.Context, sites ...string) error {
	return n.reconcile(ctx, sites, false)
}

func (n *Network) reconcile(ctx context.Context, sites []string, all bool) error {
	n.recMu.Lock()
	defer n.recMu.Unlock()
	for attempt := 0; ; attempt++ {
		retry, err := n.reconcileOnce(ctx, sites, all)
		if err != nil || !retry {
			return err
		}
		if attempt >= maxIntentAttempts {
			return fmt.Errorf("reconcile: %w", ErrRetry)
		}
	}
}

// plan computes, from the view, the links to create and the tunnels to
// remove, and free /30 indexes for the links to create (lowest first).
func (n *Network) plan(sites []string, all bool) (add []topology.Link, remove []Tunnel, free []int) {
	n.v.mu.RLock()
	defer n.v.mu.RUnlock()
	s := &n.v.snap
	if all {
		var ids []string
		add, ids = topology.Diff(topology.Derive(s.SiteList(), s.Topology), s.Tunnels)
		for _, id := range ids {
			remove = append(remove, s.Tunnels[id])
		}
	} else {
		// A derived link's id is its key (the unordered pair of its
		// ends); a stored tunnel is matched by its key, never by its id,
		// which an older version may have written with the ends the other
		// way round (topology.Key).
		want := map[string]bool{}
		gone := map[string]bool{}
		for _, name := range sites {
			if site, ok := s.Sites[name]; ok {
				for _, l := range n.v.linksFor(site, s.Topology) {
					if want[l.ID] {
						continue
					}
					want[l.ID] = true
					if _, have := n.v.stored(l.ID); !have {
						add = append(add, l)
					}
				}
			}
			for id := range n.v.bySite[name] {
				t := s.Tunnels[id]
				keep, _ := n.v.stored(t.Key())
				if (!want[t.Key()] || keep != id) && !gone[id] {
					gone[id] = true
					remove = append(remove, t)
				}
			}
		}
		slices.SortFunc(add, func(a, b topology.Link) int { return strings.Compare(a.ID, b.ID) })
		slices.SortFunc(remove, func(a, b Tunnel) int { return strings.Compare(a.ID, b.ID) })
	}
	if len(add) > 0 {
		free = n.v.tunIdx.free(len(add), n.cfg.TunnelPool.Size(), n.tuns.Seen)
	}
	return add, remove, free
}

func (n *Network) reconcileOnce(ctx context.Context, sites []string, all bool) (retry bool, err error) {
	add, remove, free := n.plan(sites, all)
	if len(free) < len(add) {
		return false, fmt.Errorf("allocate tunnel /30s: %w: %d needed, %d free in %s", ipam.ErrExhausted, len(add), len(free), n.cfg.TunnelPool.Prefix())
	}
	var lastRev int64
	for start := 0; start < len(remove); start += releaseBatch {
		var cmps []store.Cmp
		var ops []store.Op
		for _, t := range remove[start:min(start+releaseBatch, len(remove))] {
			cmps = append(cmps, store.Unchanged(tunnelsDir+t.ID, t.modRev))
			ops = append(ops, store.Delete(tunnelsDir+t.ID), store.Delete(n.tuns.Key(t.Index)))
		}
		ok, rev, err := n.st.Txn(ctx, cmps, ops)
		if err != nil {
			return false, fmt.Errorf("remove tunnels: %w", err)
		}
		lastRev = max(lastRev, rev)
		if !ok {
			// Changed under us: start over from a view that has seen it.
			return true, n.v.waitRev(ctx, rev)
		}
	}
	if len(remove) > 0 {
		n.log.Info("tunnels removed", "count", len(remove))
	}
	if len(add) > 0 {
		ids := make([]string, len(add))
		byID := make(map[string]topology.Link, len(add))
		for i, l := range add {
			ids[i] = l.ID
			byID[l.ID] = l
		}
		now := n.now().UTC()
		got, rev, err := n.tuns.TakeFree(ctx, ids, free, func(id string, i int) ([]store.Cmp, []store.Op) {
			l := byID[id]
			// The initiator is chosen here, once (topology.Initiator), and
			// never rewritten: a role change re-keys nothing.
			t := Tunnel{ID: id, A: l.A, B: l.B, Initiator: l.Initiator, Index: i, Prefix: n.cfg.TunnelPool.At(i), CreatedAt: now,
				SealedPSK: n.cfg.Sealer.Seal(secrets.NewPSK(), pskContext(id))}
			raw, _ := json.Marshal(t)
			return []store.Cmp{store.Absent(tunnelsDir + id)}, []store.Op{store.Put(tunnelsDir+id, raw)}
		}, ipam.BatchOptions{})
		lastRev = max(lastRev, rev)
		if len(got) > 0 {
			n.log.Info("tunnels created", "count", len(got))
		}
		if errors.Is(err, ipam.ErrGuardFailed) {
			// Another replica took an index or created a tunnel first.
			return true, n.v.waitRev(ctx, lastRev)
		}
		if err != nil {
			return false, fmt.Errorf("allocate tunnel /30s: %w", err)
		}
		n.Read(func(*Snapshot) { n.tuns.Forget(n.v.tunIdx.has) })
	}
	// Return only once this process's view shows the result, so whoever
	// waits for the reconcile (an admin call, the push) reads it.
	return false, n.v.waitRev(ctx, lastRev)
}

// pskContext binds a sealed PSK to its tunnel.
func pskContext(id string) string { return tunnelsDir + id }

// PSK opens the tunnel's pre-shared key.
func (n *Network) PSK(t Tunnel) ([]byte, error) {
	return n.cfg.Sealer.Open(t.SealedPSK, pskContext(t.ID))
}

// RefusedAddress is an address an edge reported for a dynamic transport
// that the controller did not store, and why.
type RefusedAddress struct {
	Transport string
	Addr      netip.Addr
	Err       error
}

// ObserveAddresses records the public addresses an edge reports for its
// dynamic transports (addresses for other transports are ignored). Each
// changed address is validated like an admin-declared underlay
// (intent.Index.CheckObserved: usable on a WAN, outside the tunnel pool
// and the transit prefixes, no other transport's address, inside no
// site's LAN): the peers' edges would otherwise refuse their whole state.
// A refused address leaves the stored one unchanged and is returned, for
// the caller to make visible; the others are stored. It writes only on
// change, guarded on intent/rev (and bumping it), so an intent change
// racing it is validated again with the new address, and vice versa.
func (n *Network) ObserveAddresses(ctx context.Context, site string, addrs map[string]netip.Addr) ([]RefusedAddress, error) {
	for range maxIntentAttempts {
		var refused []RefusedAddress
		var next map[string]netip.Addr
		var guardRev int64
		n.Read(func(s *Snapshot) {
			guardRev = s.intentRev
			me, ok := s.Sites[site]
			if !ok {
				return
			}
			old := s.Observed[site]
			var idx *intent.Index
			for _, t := range me.Transports {
				a, reported := addrs[t.Name]
				if !t.Dynamic || !reported || old[t.Name] == a {
					continue
				}
				if idx == nil {
					idx = intent.NewIndex(s.SiteList(), s.Observed)
				}
				err := idx.CheckObserved(site, t.Name, a, n.cfg.TunnelPool.Prefix(), s.Topology)
				if err == nil {
					// Two dynamic transports of one site behind one
					// address: the peers could not tell them apart.
					for name, b := range next {
						if b == a && name != t.Name {
							err = fmt.Errorf("%w: site %q transport %q reported address: %s is also reported for transport %q", intent.ErrConflict, site, t.Name, a, name)
						}
					}
				}
				if err != nil {
					refused = append(refused, RefusedAddress{Transport: t.Name, Addr: a, Err: err})
					continue
				}
				if next == nil {
					next = maps.Clone(old)
					if next == nil {
						next = map[string]netip.Addr{}
					}
				}
				next[t.Name] = a
			}
		})
		if len(refused) > 0 {
			n.refusedAddrs.Add(uint64(len(refused)))
		}
		if next == nil {
			return refused, nil
		}
		raw, _ := json.Marshal(next)
		ok, rev, err := n.st.Txn(ctx, []store.Cmp{store.Unchanged(intentRev, guardRev)},
			[]store.Op{store.Put(observedDir+site, raw), store.Put(intentRev, nil)})
		if err != nil {
			return refused, err
		}
		if err := n.v.waitRev(ctx, rev); err != nil {
			return refused, err
		}
		if ok {
			return refused, nil
		}
	}
	return nil, ErrRetry
}

// RefusedAddresses counts the edge-reported addresses refused since start.
func (n *Network) RefusedAddresses() uint64 { return n.refusedAddrs.Load() }

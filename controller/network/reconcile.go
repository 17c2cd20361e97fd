package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// releaseBatch keeps removal transactions under etcd's default limit of 128
// operations (each tunnel takes two deletes and one guard).
const releaseBatch = 40

// Reconcile makes the stored tunnels match what the intent derives: it
// removes the tunnels no longer wanted (releasing their /30s) and then
// creates the missing ones, each with a fresh /30 and PSK. It is safe to run
// concurrently in several replicas: every write is guarded, and a lost race
// only means somebody else did the work. Running it on an unchanged intent
// writes nothing.
func (n *Network) Reconcile(ctx context.Context) error {
	n.recMu.Lock()
	defer n.recMu.Unlock()
	for attempt := 0; ; attempt++ {
		retry, err := n.reconcileOnce(ctx)
		if err != nil || !retry {
			return err
		}
		if attempt >= maxIntentAttempts {
			return fmt.Errorf("reconcile: %w", ErrRetry)
		}
	}
}

func (n *Network) reconcileOnce(ctx context.Context) (retry bool, err error) {
	snap, err := n.snapshot(ctx)
	if err != nil {
		return false, err
	}
	want := topology.Derive(snap.SiteList(), snap.Topology)
	add, remove := topology.Diff(want, snap.Tunnels)
	for start := 0; start < len(remove); start += releaseBatch {
		var cmps []store.Cmp
		var ops []store.Op
		for _, id := range remove[start:min(start+releaseBatch, len(remove))] {
			t := snap.Tunnels[id]
			cmps = append(cmps, store.Unchanged(tunnelsDir+id, t.modRev))
			ops = append(ops, store.Delete(tunnelsDir+id), store.Delete(n.tuns.Key(t.Index)))
		}
		ok, _, err := n.st.Txn(ctx, cmps, ops)
		if err != nil {
			return false, fmt.Errorf("remove tunnels: %w", err)
		}
		if !ok {
			return true, nil // changed under us: start over from a fresh snapshot
		}
	}
	if len(remove) > 0 {
		n.log.Info("tunnels removed", "count", len(remove))
	}
	if len(add) == 0 {
		return false, nil
	}
	ids := make([]string, len(add))
	byID := make(map[string]topology.Link, len(add))
	for i, l := range add {
		ids[i] = l.ID
		byID[l.ID] = l
	}
	now := n.now().UTC()
	got, err := n.tuns.AllocateMany(ctx, ids, func(id string) ipam.Guarded {
		return func(i int) ([]store.Cmp, []store.Op) {
			l := byID[id]
			t := Tunnel{ID: id, A: l.A, B: l.B, Index: i, Prefix: n.cfg.TunnelPool.At(i), CreatedAt: now,
				SealedPSK: n.cfg.Sealer.Seal(secrets.NewPSK(), pskContext(id))}
			raw, _ := json.Marshal(t)
			return []store.Cmp{store.Absent(tunnelsDir + id)}, []store.Op{store.Put(tunnelsDir+id, raw)}
		}
	})
	if len(got) > 0 {
		n.log.Info("tunnels created", "count", len(got))
	}
	if errors.Is(err, ipam.ErrGuardFailed) {
		return true, nil // another replica created one of them first
	}
	if err != nil {
		return false, fmt.Errorf("allocate tunnel /30s: %w", err)
	}
	return false, nil
}

// pskContext binds a sealed PSK to its tunnel.
func pskContext(id string) string { return tunnelsDir + id }

// PSK opens the tunnel's pre-shared key.
func (n *Network) PSK(t Tunnel) ([]byte, error) {
	return n.cfg.Sealer.Open(t.SealedPSK, pskContext(t.ID))
}

// ObserveAddresses records the public addresses an edge reports for its
// transports. Only dynamic transports use them; it writes only on change.
func (n *Network) ObserveAddresses(ctx context.Context, site string, addrs map[string]netip.Addr) error {
	kv, _, err := n.st.Get(ctx, observedDir+site)
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(addrs)
	if string(kv.Value) == string(raw) {
		return nil
	}
	_, _, err = n.st.Txn(ctx, nil, []store.Op{store.Put(observedDir+site, raw)})
	return err
}

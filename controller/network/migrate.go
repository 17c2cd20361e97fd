package network

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/store"
)

// schemaKey records which version of the defaults the stored intent was
// written under. It is absent in a store written before PFS became the
// default ESP proposal.
const (
	schemaKey = "intent/schema"
	// schemaPFS: the defaults include intent.DefaultESPProposal with a DH
	// group.
	schemaPFS = "2"
)

// PinPreviousDefaults keeps a network's effective ESP proposal across the
// upgrade that made PFS the default. charon 5.9 renegotiates every tunnel
// whose connection changes (docs/ipsec.md), so letting the new default
// reach a running network would re-key all its tunnels at once, with a
// gap at each, at the first start of the new controller. Instead, a
// topology stored by an older version that left the ESP proposal to the
// default gets the old default written explicitly, once (the operator
// enables PFS with a SetTopology in a maintenance window); a new network,
// or one that named its proposal, is unchanged. The first start of this
// version records schemaPFS, so a topology set later with an empty ESP
// proposal gets the PFS default as documented. Safe with several
// replicas: the write is guarded on the schema key's absence and on
// intent/rev. It reports whether it pinned.
func (n *Network) PinPreviousDefaults(ctx context.Context) (bool, error) {
	for range maxIntentAttempts {
		if _, ok, err := n.st.Get(ctx, schemaKey); err != nil || ok {
			return false, err
		}
		_, hadTopology, err := n.st.Get(ctx, topologyKey)
		if err != nil {
			return false, err
		}
		var raw intent.Topology
		var guardRev int64
		n.Read(func(s *Snapshot) { raw, guardRev = s.rawTopology, s.intentRev })
		ops := []store.Op{store.Put(schemaKey, []byte(schemaPFS))}
		pin := hadTopology && raw.IPsec.ESPProposal == ""
		if pin {
			raw.IPsec.ESPProposal = intent.PreviousESPProposal
			b, err := json.Marshal(raw)
			if err != nil {
				return false, fmt.Errorf("encode topology: %w", err)
			}
			ops = append(ops, store.Put(topologyKey, b), store.Put(intentRev, nil))
		}
		ok, rev, err := n.st.Txn(ctx, []store.Cmp{store.Absent(schemaKey), store.Unchanged(intentRev, guardRev)}, ops)
		if err != nil {
			return false, err
		}
		if err := n.v.waitRev(ctx, rev); err != nil {
			return false, err
		}
		if ok {
			return pin, nil
		}
	}
	return false, ErrRetry
}

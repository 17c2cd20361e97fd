package steer

import (
	"fmt"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
)

var table = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

// nftObserved is what the kernel holds in our table.
type nftObserved struct {
	exists bool
	chains []*obsChain
	sets   []*nftables.Set // named sets: not ours, removed
}

type obsChain struct {
	chain    *nftables.Chain
	rules    []*nftables.Rule
	comments []string
}

func observeNFT(c kernel.NFT) (nftObserved, error) {
	var o nftObserved
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return o, fmt.Errorf("list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
		return o, nil
	}
	o.exists = true
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return o, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != TableName {
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return o, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		oc := &obsChain{chain: ch, rules: rules}
		for _, r := range rules {
			oc.comments = append(oc.comments, kernel.RuleComment(r))
		}
		o.chains = append(o.chains, oc)
	}
	sets, err := c.GetSets(table)
	if err != nil {
		return o, fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		if !s.Anonymous {
			o.sets = append(o.sets, s)
		}
	}
	return o, nil
}

func wantShape(ch Chain) string {
	accept := nftables.ChainPolicyAccept
	return kernel.ChainShape(ch.Type, &ch.Hook, &ch.Priority, &accept)
}

// applyNFT makes our table hold want. It writes nothing when the table
// already does; otherwise ONE batch, which the kernel commits as one
// transaction, so packets meet the old rules or the new ones, never a mix:
//   - a chain with the right type, hook and priority is kept and edited:
//     rules whose comment is wanted and in the wanted order (the longest
//     such run) stay, with their handles and counters; the others are
//     deleted; missing rules are inserted before the next kept rule, or
//     appended;
//   - a chain of ours with another shape, any other chain and any named
//     set in our table are deleted (the table is ours);
//   - missing chains are created with their rules.
func (k *Kernel) applyNFT(want Ruleset) error {
	c, err := k.dial()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	o, err := observeNFT(c)
	if err != nil {
		return fmt.Errorf("nftables: read table %s: %w", TableName, err)
	}
	b := &batch{c: c}
	if !o.exists {
		b.n++
		c.AddTable(table)
	}
	wantByName := map[string]Chain{}
	for _, ch := range want.Chains {
		wantByName[ch.Name] = ch
	}
	kept := map[string]*obsChain{}
	var added, deleted int
	for _, oc := range o.chains {
		w, ok := wantByName[oc.chain.Name]
		if ok && kernel.ChainShape(oc.chain.Type, oc.chain.Hooknum, oc.chain.Priority, oc.chain.Policy) == wantShape(w) {
			kept[oc.chain.Name] = oc
			continue
		}
		b.n += 2
		c.FlushChain(oc.chain)
		c.DelChain(oc.chain)
		deleted += len(oc.rules)
	}
	// Edit kept chains: deletions first (they free nothing we need), then
	// inserts positioned on kept handles.
	type insert struct {
		ch     *nftables.Chain
		rule   Rule
		before uint64 // handle of the kept rule to insert before; 0: append
	}
	var inserts []insert
	for _, w := range want.Chains {
		oc, ok := kept[w.Name]
		if !ok {
			continue
		}
		wantComments := make([]string, len(w.Rules))
		for i, r := range w.Rules {
			wantComments[i] = r.Comment
		}
		keepHave, keepWant := keepInOrder(oc.comments, wantComments)
		for i, r := range oc.rules {
			if keepHave[i] < 0 {
				b.n++
				deleted++
				if err := c.DelRule(r); err != nil {
					return fmt.Errorf("nftables: chain %s: %w", w.Name, err)
				}
			}
		}
		for j, r := range w.Rules {
			if keepWant[j] >= 0 {
				continue
			}
			var before uint64
			for l := j + 1; l < len(w.Rules); l++ {
				if h := keepWant[l]; h >= 0 {
					before = oc.rules[h].Handle
					break
				}
			}
			inserts = append(inserts, insert{ch: oc.chain, rule: r, before: before})
		}
	}
	for _, s := range o.sets {
		b.n++
		c.DelSet(s)
	}
	for _, in := range inserts {
		added++
		if err := b.writeRule(in.ch, in.rule, in.before); err != nil {
			return fmt.Errorf("nftables: chain %s: %w", in.ch.Name, err)
		}
	}
	for _, w := range want.Chains {
		if _, ok := kept[w.Name]; ok {
			continue
		}
		hook, prio, accept := w.Hook, w.Priority, nftables.ChainPolicyAccept
		b.n++
		ch := c.AddChain(&nftables.Chain{Name: w.Name, Table: table, Type: w.Type, Hooknum: &hook, Priority: &prio, Policy: &accept})
		for _, r := range w.Rules {
			added++
			if err := b.writeRule(ch, r, 0); err != nil {
				return fmt.Errorf("nftables: chain %s: %w", w.Name, err)
			}
		}
	}
	if b.n == 0 {
		k.log.Debug("steering marks unchanged", "nft_table", TableName)
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: commit table %s: %w", TableName, err)
	}
	k.log.Info("steering marks changed", "nft_table", TableName, "rules_added", added, "rules_deleted", deleted)
	return nil
}

// deleteNFT deletes our table if it exists.
func (k *Kernel) deleteNFT() error {
	c, err := k.dial()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	o, err := observeNFT(c)
	if err != nil {
		return fmt.Errorf("nftables: read table %s: %w", TableName, err)
	}
	if !o.exists {
		return nil
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table %s: %w", TableName, err)
	}
	k.log.Info("steering nft table deleted", "nft_table", TableName)
	return nil
}

// batch queues writes on one connection and counts them; set IDs are
// allocated here, per batch (IDs only need to be unique within a
// transaction), so google/nftables' package-global set ID counter, which
// is not safe across connections, is never used.
type batch struct {
	c     kernel.NFT
	n     int
	setID uint32
}

// writeRule queues r (and its anonymous sets, before it) in ch: inserted
// before the rule with handle before, or appended when before is 0.
func (b *batch) writeRule(ch *nftables.Chain, r Rule, before uint64) error {
	var exprs []expr.Any
	for _, p := range r.parts {
		exprs = append(exprs, p.exprs...)
		if p.set == nil {
			continue
		}
		b.setID++
		s := &nftables.Set{Table: table, Name: "__set%d", ID: b.setID, Anonymous: true, Constant: true,
			Interval: p.set.interval, KeyType: p.set.keyType}
		b.n++
		if err := b.c.AddSet(s, p.set.elems); err != nil {
			return fmt.Errorf("rule %s: set: %w", r.Comment, err)
		}
		exprs = append(exprs, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	}
	nr := &nftables.Rule{Table: table, Chain: &nftables.Chain{Name: ch.Name, Table: table}, Exprs: exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)}
	b.n++
	if before != 0 {
		nr.Position = before
		b.c.InsertRule(nr)
	} else {
		b.c.AddRule(nr)
	}
	return nil
}

// keepInOrder picks the rules to keep when editing a chain from have to
// want (comments; those in want are distinct): the longest run of have
// entries that appear in want in want's order (a longest increasing
// subsequence of their positions in want, O(n log n)). keepHave[i] is the
// want index have[i] is kept as, keepWant[j] the have index kept as
// want[j]; -1 for neither.
func keepInOrder(have, want []string) (keepHave, keepWant []int) {
	pos := make(map[string]int, len(want))
	for j, w := range want {
		pos[w] = j
	}
	keepHave = make([]int, len(have))
	keepWant = make([]int, len(want))
	for i := range keepHave {
		keepHave[i] = -1
	}
	for j := range keepWant {
		keepWant[j] = -1
	}
	// Candidates: have indexes with a wanted comment. Copies of one
	// comment have equal positions, and the run below is strictly
	// increasing, so at most one copy is kept.
	var idx []int
	for i, h := range have {
		if _, ok := pos[h]; ok {
			idx = append(idx, i)
		}
	}
	// Patience sorting on pos[have[i]].
	var tails []int // tails[l] = index into idx of the smallest tail of an increasing run of length l+1
	prev := make([]int, len(idx))
	for n, i := range idx {
		v := pos[have[i]]
		l := sort.Search(len(tails), func(m int) bool { return pos[have[idx[tails[m]]]] >= v })
		if l > 0 {
			prev[n] = tails[l-1]
		} else {
			prev[n] = -1
		}
		if l == len(tails) {
			tails = append(tails, n)
		} else {
			tails[l] = n
		}
	}
	if len(tails) == 0 {
		return keepHave, keepWant
	}
	for n := tails[len(tails)-1]; n >= 0; n = prev[n] {
		i := idx[n]
		j := pos[have[i]]
		keepHave[i], keepWant[j] = j, i
	}
	return keepHave, keepWant
}

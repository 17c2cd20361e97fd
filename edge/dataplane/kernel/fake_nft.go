package kernel

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// FakeNFT is the one in-memory nftables, for unit tests only. Dial gives
// a connection (an NFT) that reads the current state and queues writes;
// Flush applies the queue as one transaction, in order, on a copy that
// replaces the state only if every operation succeeds, like the kernel.
// It models what the firewall and steering engines depend on:
//
//   - tables per family (AddTable of an existing one is a no-op; DelTable
//     takes everything in it; ENOENT when missing);
//   - base chains with type, hook, priority and policy (AddChain of an
//     existing name with another shape is EBUSY; DelChain of a chain with
//     rules is EBUSY, so a chain must be flushed first in the batch);
//   - rules with handles (allocated on commit, never reused), comments
//     (userdata) and expressions kept as given: a kept rule keeps its
//     handle and so its counters; AddRule and InsertRule honour Position
//     (after / before that handle; ENOENT if it is gone);
//   - named sets with elements (AddSet of a taken name is EEXIST, DelSet
//     of a set a rule still looks up is EBUSY) and anonymous sets, which
//     a rule binds through its lookup's SetID and which go with it;
//   - a lookup of a set that does not exist is ENOENT.
//
// It records every call in its CallLog (queued writes when queued, then
// "Flush"), fails chosen calls (Fail, FailOnce: a read fails at once, a
// queued write makes the Flush fail and apply nothing), and prints the
// state as sorted text.
type FakeNFT struct {
	// Log records the calls; it may be shared with a FakeNetlink.
	Log *CallLog

	fail failures

	mu sync.Mutex
	st nftState
}

// NewFakeNFT returns an empty nftables with its own CallLog.
func NewFakeNFT() *FakeNFT { return &FakeNFT{Log: &CallLog{}} }

// Fail makes every later call named callName ("AddRule", "Flush", "Dial",
// "GetRules", ...) whose logged arguments contain match fail with err.
// A nil err removes the failure.
func (f *FakeNFT) Fail(callName, match string, err error) { f.fail.set(callName, match, err, false) }

// FailOnce is Fail for the next matching call only.
func (f *FakeNFT) FailOnce(callName, match string, err error) { f.fail.set(callName, match, err, true) }

// Calls, Writes and ResetCalls are shorthands for f.Log's.
func (f *FakeNFT) Calls() []string  { return f.Log.Calls() }
func (f *FakeNFT) Writes() []string { return f.Log.Writes() }
func (f *FakeNFT) ResetCalls()      { f.Log.Reset() }

// Dial opens a connection, as NewNFT does; fails when "Dial" is made to.
func (f *FakeNFT) Dial() (NFT, error) {
	f.Log.add("Dial", true)
	if err := f.fail.check("Dial", ""); err != nil {
		return nil, err
	}
	return &fakeNFTConn{f: f}, nil
}

type nftState struct {
	tables []nftables.Table
	chains []*fakeChain
	sets   []*fakeSet
	handle uint64 // last handle given (rules, sets)
	anon   int    // anonymous sets named so far
}

type fakeChain struct {
	c     nftables.Chain
	rules []*nftables.Rule
}

type fakeSet struct {
	s     nftables.Set
	elems []nftables.SetElement
	rule  uint64 // anonymous: handle of the rule that binds it
}

func sameTable(a, b *nftables.Table) bool {
	return a != nil && b != nil && a.Name == b.Name && a.Family == b.Family
}

func (s *nftState) clone() *nftState {
	c := &nftState{tables: slices.Clone(s.tables), handle: s.handle, anon: s.anon}
	for _, ch := range s.chains {
		c.chains = append(c.chains, &fakeChain{c: ch.c, rules: slices.Clone(ch.rules)})
	}
	for _, x := range s.sets {
		y := *x
		c.sets = append(c.sets, &y)
	}
	return c
}

func (s *nftState) hasTable(t *nftables.Table) bool {
	return slices.ContainsFunc(s.tables, func(x nftables.Table) bool { return sameTable(&x, t) })
}

func (s *nftState) chain(t *nftables.Table, name string) *fakeChain {
	for _, ch := range s.chains {
		if sameTable(ch.c.Table, t) && ch.c.Name == name {
			return ch
		}
	}
	return nil
}

func (s *nftState) set(t *nftables.Table, name string) *fakeSet {
	for _, x := range s.sets {
		if sameTable(x.s.Table, t) && x.s.Name == name {
			return x
		}
	}
	return nil
}

// dropRules removes the anonymous sets bound to rules.
func (s *nftState) dropRules(rules []*nftables.Rule) {
	for _, r := range rules {
		s.sets = slices.DeleteFunc(s.sets, func(x *fakeSet) bool { return x.s.Anonymous && x.rule == r.Handle })
	}
}

// lookedUp reports whether a rule of t looks up the named set.
func (s *nftState) lookedUp(t *nftables.Table, name string) bool {
	for _, ch := range s.chains {
		if !sameTable(ch.c.Table, t) {
			continue
		}
		for _, r := range ch.rules {
			for _, e := range r.Exprs {
				if l, ok := e.(*expr.Lookup); ok && l.SetName == name {
					return true
				}
			}
		}
	}
	return false
}

func tableText(t *nftables.Table) string {
	if t == nil {
		return "?"
	}
	fam := map[nftables.TableFamily]string{nftables.TableFamilyINet: "inet", nftables.TableFamilyIPv4: "ip",
		nftables.TableFamilyIPv6: "ip6", nftables.TableFamilyBridge: "bridge", nftables.TableFamilyARP: "arp",
		nftables.TableFamilyNetdev: "netdev"}[t.Family]
	return fam + " " + t.Name
}

// ChainShape renders a chain's type, hook, priority and policy.
func ChainShape(typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority, policy *nftables.ChainPolicy) string {
	s := "type " + string(typ)
	if hook != nil {
		s += fmt.Sprintf(" hook %d", *hook)
	}
	if prio != nil {
		s += fmt.Sprintf(" priority %d", *prio)
	}
	if policy != nil {
		s += fmt.Sprintf(" policy %d", *policy)
	}
	return s
}

// RuleComment is the comment (userdata) a rule carries, "" if none.
func RuleComment(r *nftables.Rule) string {
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

// String prints the state: tables sorted, and in each its chains sorted
// by name with their shape and their rules' comments in order, then its
// named sets with their elements (anonymous sets are not shown):
//
//	table inet meshwan
//	chain input type filter hook 1 priority -10 policy 1
//	  <comment>
//	set peers type ipv4_addr interval true elements <n>
func (f *FakeNFT) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	tables := slices.Clone(f.st.tables)
	slices.SortFunc(tables, func(a, b nftables.Table) int { return strings.Compare(tableText(&a), tableText(&b)) })
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "table %s\n", tableText(&t))
		var chains []*fakeChain
		for _, ch := range f.st.chains {
			if sameTable(ch.c.Table, &t) {
				chains = append(chains, ch)
			}
		}
		slices.SortFunc(chains, func(a, b *fakeChain) int { return strings.Compare(a.c.Name, b.c.Name) })
		for _, ch := range chains {
			fmt.Fprintf(&b, "chain %s %s\n", ch.c.Name, ChainShape(ch.c.Type, ch.c.Hooknum, ch.c.Priority, ch.c.Policy))
			for _, r := range ch.rules {
				fmt.Fprintf(&b, "  %s\n", RuleComment(r))
			}
		}
		var sets []*fakeSet
		for _, s := range f.st.sets {
			if sameTable(s.s.Table, &t) && !s.s.Anonymous {
				sets = append(sets, s)
			}
		}
		slices.SortFunc(sets, func(a, b *fakeSet) int { return strings.Compare(a.s.Name, b.s.Name) })
		for _, s := range sets {
			fmt.Fprintf(&b, "set %s type %s interval %t elements %d\n", s.s.Name, s.s.KeyType.Name, s.s.Interval, len(s.elems))
		}
	}
	return b.String()
}

// RuleHandles returns "chain/handle" of every rule of table (any family)
// whose comment contains sub, chains in state order, rules in order.
func (f *FakeNFT) RuleHandles(table, sub string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ch := range f.st.chains {
		if ch.c.Table.Name != table {
			continue
		}
		for _, r := range ch.rules {
			if strings.Contains(RuleComment(r), sub) {
				out = append(out, fmt.Sprintf("%s/%d", ch.c.Name, r.Handle))
			}
		}
	}
	return out
}

// fakeNFTConn is one connection: reads see the committed state, writes
// are queued until Flush.
type fakeNFTConn struct {
	f   *FakeNFT
	ops []nftOp
}

type nftOp struct {
	name, args string
	apply      func(*nftApply) error
}

// nftApply is one transaction being applied: the new state and the
// anonymous sets of the batch by ID.
type nftApply struct {
	st  *nftState
	ids map[uint32]*fakeSet
}

func (c *fakeNFTConn) read(name, args string) error {
	if args == "" {
		c.f.Log.add(name, true)
	} else {
		c.f.Log.add(name+" "+args, true)
	}
	return c.f.fail.check(name, args)
}

func (c *fakeNFTConn) queue(name, args string, apply func(*nftApply) error) {
	c.f.Log.add(name+" "+args, false)
	c.ops = append(c.ops, nftOp{name: name, args: args, apply: apply})
}

// ListTablesOfFamily implements NFT.
func (c *fakeNFTConn) ListTablesOfFamily(fam nftables.TableFamily) ([]*nftables.Table, error) {
	if err := c.read("ListTablesOfFamily", ""); err != nil {
		return nil, err
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []*nftables.Table
	for _, t := range c.f.st.tables {
		if t.Family == fam {
			x := t
			out = append(out, &x)
		}
	}
	return out, nil
}

// ListChainsOfTableFamily implements NFT.
func (c *fakeNFTConn) ListChainsOfTableFamily(fam nftables.TableFamily) ([]*nftables.Chain, error) {
	if err := c.read("ListChainsOfTableFamily", ""); err != nil {
		return nil, err
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []*nftables.Chain
	for _, ch := range c.f.st.chains {
		if ch.c.Table.Family == fam {
			x := ch.c
			t := *x.Table
			x.Table = &t
			out = append(out, &x)
		}
	}
	return out, nil
}

// GetRules implements NFT.
func (c *fakeNFTConn) GetRules(t *nftables.Table, ch *nftables.Chain) ([]*nftables.Rule, error) {
	if err := c.read("GetRules", tableText(t)+" "+ch.Name); err != nil {
		return nil, err
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	fc := c.f.st.chain(t, ch.Name)
	if fc == nil {
		return nil, unix.ENOENT
	}
	out := make([]*nftables.Rule, 0, len(fc.rules))
	for _, r := range fc.rules {
		x := *r
		out = append(out, &x)
	}
	return out, nil
}

// GetSets implements NFT (anonymous sets included, as the kernel lists
// them).
func (c *fakeNFTConn) GetSets(t *nftables.Table) ([]*nftables.Set, error) {
	if err := c.read("GetSets", tableText(t)); err != nil {
		return nil, err
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []*nftables.Set
	for _, s := range c.f.st.sets {
		if sameTable(s.s.Table, t) {
			x := s.s
			out = append(out, &x)
		}
	}
	return out, nil
}

// GetSetElements implements NFT.
func (c *fakeNFTConn) GetSetElements(s *nftables.Set) ([]nftables.SetElement, error) {
	if err := c.read("GetSetElements", tableText(s.Table)+" "+s.Name); err != nil {
		return nil, err
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	x := c.f.st.set(s.Table, s.Name)
	if x == nil {
		return nil, unix.ENOENT
	}
	return slices.Clone(x.elems), nil
}

// AddTable implements NFT.
func (c *fakeNFTConn) AddTable(t *nftables.Table) *nftables.Table {
	x := nftables.Table{Name: t.Name, Family: t.Family}
	c.queue("AddTable", tableText(t), func(a *nftApply) error {
		if !a.st.hasTable(&x) {
			a.st.tables = append(a.st.tables, x)
		}
		return nil
	})
	return t
}

// DelTable implements NFT.
func (c *fakeNFTConn) DelTable(t *nftables.Table) {
	x := nftables.Table{Name: t.Name, Family: t.Family}
	c.queue("DelTable", tableText(t), func(a *nftApply) error {
		if !a.st.hasTable(&x) {
			return unix.ENOENT
		}
		a.st.tables = slices.DeleteFunc(a.st.tables, func(y nftables.Table) bool { return sameTable(&x, &y) })
		a.st.chains = slices.DeleteFunc(a.st.chains, func(ch *fakeChain) bool { return sameTable(ch.c.Table, &x) })
		a.st.sets = slices.DeleteFunc(a.st.sets, func(s *fakeSet) bool { return sameTable(s.s.Table, &x) })
		return nil
	})
}

// AddChain implements NFT.
func (c *fakeNFTConn) AddChain(ch *nftables.Chain) *nftables.Chain {
	x := *ch
	x.Table = &nftables.Table{Name: ch.Table.Name, Family: ch.Table.Family}
	c.queue("AddChain", tableText(ch.Table)+" "+ch.Name, func(a *nftApply) error {
		if !a.st.hasTable(x.Table) {
			return unix.ENOENT
		}
		if old := a.st.chain(x.Table, x.Name); old != nil {
			if ChainShape(old.c.Type, old.c.Hooknum, old.c.Priority, old.c.Policy) != ChainShape(x.Type, x.Hooknum, x.Priority, x.Policy) {
				return unix.EBUSY
			}
			return nil
		}
		a.st.chains = append(a.st.chains, &fakeChain{c: x})
		return nil
	})
	return ch
}

// FlushChain implements NFT.
func (c *fakeNFTConn) FlushChain(ch *nftables.Chain) {
	t, name := ch.Table, ch.Name
	c.queue("FlushChain", tableText(t)+" "+name, func(a *nftApply) error {
		fc := a.st.chain(t, name)
		if fc == nil {
			return unix.ENOENT
		}
		a.st.dropRules(fc.rules)
		fc.rules = nil
		return nil
	})
}

// DelChain implements NFT.
func (c *fakeNFTConn) DelChain(ch *nftables.Chain) {
	t, name := ch.Table, ch.Name
	c.queue("DelChain", tableText(t)+" "+name, func(a *nftApply) error {
		fc := a.st.chain(t, name)
		switch {
		case fc == nil:
			return unix.ENOENT
		case len(fc.rules) > 0:
			return unix.EBUSY
		}
		a.st.chains = slices.DeleteFunc(a.st.chains, func(y *fakeChain) bool { return y == fc })
		return nil
	})
}

// AddSet implements NFT.
func (c *fakeNFTConn) AddSet(s *nftables.Set, vals []nftables.SetElement) error {
	x := fakeSet{s: *s, elems: slices.Clone(vals)}
	x.s.Table = &nftables.Table{Name: s.Table.Name, Family: s.Table.Family}
	c.queue("AddSet", tableText(s.Table)+" "+s.Name, func(a *nftApply) error {
		if !a.st.hasTable(x.s.Table) {
			return unix.ENOENT
		}
		y := x
		if y.s.Anonymous {
			y.s.Name = fmt.Sprintf("__set%d", a.st.anon)
			a.st.anon++
			a.ids[y.s.ID] = &y
		} else if a.st.set(y.s.Table, y.s.Name) != nil {
			return unix.EEXIST
		}
		a.st.handle++
		a.st.sets = append(a.st.sets, &y)
		return nil
	})
	return nil
}

// FlushSet implements NFT.
func (c *fakeNFTConn) FlushSet(s *nftables.Set) {
	t, name := s.Table, s.Name
	c.queue("FlushSet", tableText(t)+" "+name, func(a *nftApply) error {
		x := a.st.set(t, name)
		if x == nil {
			return unix.ENOENT
		}
		x.elems = nil
		return nil
	})
}

// SetAddElements implements NFT.
func (c *fakeNFTConn) SetAddElements(s *nftables.Set, vals []nftables.SetElement) error {
	t, name, vals := s.Table, s.Name, slices.Clone(vals)
	c.queue("SetAddElements", tableText(t)+" "+name, func(a *nftApply) error {
		x := a.st.set(t, name)
		if x == nil {
			return unix.ENOENT
		}
		x.elems = slices.Concat(x.elems, vals)
		return nil
	})
	return nil
}

// DelSet implements NFT.
func (c *fakeNFTConn) DelSet(s *nftables.Set) {
	t, name := s.Table, s.Name
	c.queue("DelSet", tableText(t)+" "+name, func(a *nftApply) error {
		x := a.st.set(t, name)
		switch {
		case x == nil:
			return unix.ENOENT
		case a.st.lookedUp(t, name):
			return unix.EBUSY
		}
		a.st.sets = slices.DeleteFunc(a.st.sets, func(y *fakeSet) bool { return y == x })
		return nil
	})
}

func (c *fakeNFTConn) addRule(name string, r *nftables.Rule, after bool) *nftables.Rule {
	x := *r
	x.Exprs = slices.Clone(r.Exprs)
	t := &nftables.Table{Name: r.Table.Name, Family: r.Table.Family}
	chain, pos := r.Chain.Name, r.Position
	c.queue(name, tableText(t)+" "+chain+" "+RuleComment(r), func(a *nftApply) error {
		fc := a.st.chain(t, chain)
		if fc == nil {
			return unix.ENOENT
		}
		a.st.handle++
		x.Handle, x.Position = a.st.handle, 0
		x.Table = t
		x.Chain = &nftables.Chain{Name: chain, Table: t}
		for i, e := range x.Exprs {
			l, ok := e.(*expr.Lookup)
			if !ok {
				continue
			}
			if s := a.ids[l.SetID]; l.SetID != 0 && s != nil {
				s.rule = x.Handle
				y := *l
				y.SetName = s.s.Name
				x.Exprs[i] = &y
				continue
			}
			if a.st.set(t, l.SetName) == nil {
				return unix.ENOENT
			}
		}
		at := 0
		if after {
			at = len(fc.rules)
		}
		if pos != 0 {
			i := slices.IndexFunc(fc.rules, func(y *nftables.Rule) bool { return y.Handle == pos })
			if i < 0 {
				return unix.ENOENT
			}
			at = i
			if after {
				at = i + 1
			}
		}
		fc.rules = slices.Insert(fc.rules, at, &x)
		return nil
	})
	return r
}

// AddRule implements NFT.
func (c *fakeNFTConn) AddRule(r *nftables.Rule) *nftables.Rule { return c.addRule("AddRule", r, true) }

// InsertRule implements NFT.
func (c *fakeNFTConn) InsertRule(r *nftables.Rule) *nftables.Rule {
	return c.addRule("InsertRule", r, false)
}

// DelRule implements NFT.
func (c *fakeNFTConn) DelRule(r *nftables.Rule) error {
	t, chain, h := r.Table, r.Chain.Name, r.Handle
	c.queue("DelRule", fmt.Sprintf("%s %s %d %s", tableText(t), chain, h, RuleComment(r)), func(a *nftApply) error {
		fc := a.st.chain(t, chain)
		if fc == nil {
			return unix.ENOENT
		}
		i := slices.IndexFunc(fc.rules, func(y *nftables.Rule) bool { return y.Handle == h })
		if i < 0 {
			return unix.ENOENT
		}
		a.st.dropRules(fc.rules[i : i+1])
		fc.rules = slices.Delete(fc.rules, i, i+1)
		return nil
	})
	return nil
}

// Flush implements NFT: all queued writes or none.
func (c *fakeNFTConn) Flush() error {
	c.f.Log.add("Flush", false)
	ops := c.ops
	c.ops = nil
	if err := c.f.fail.check("Flush", ""); err != nil {
		return err
	}
	for _, op := range ops {
		if err := c.f.fail.check(op.name, op.args); err != nil {
			return fmt.Errorf("%s %s: %w", op.name, op.args, err)
		}
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	a := &nftApply{st: c.f.st.clone(), ids: map[uint32]*fakeSet{}}
	for _, op := range ops {
		if err := op.apply(a); err != nil {
			return fmt.Errorf("%s %s: %w", op.name, op.args, err)
		}
	}
	c.f.st = *a.st
	return nil
}

package steer

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// writeLog records write calls, in order, across the fakes (and the
// recording wrappers of the privileged tests).
type writeLog struct {
	mu sync.Mutex
	w  []string
}

func (l *writeLog) note(s string) { l.mu.Lock(); l.w = append(l.w, s); l.mu.Unlock() }
func (l *writeLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.w
	l.w = nil
	return w
}

// count counts entries equal to s or starting with s + " ".
func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s || strings.HasPrefix(x, s+" ") {
			n++
		}
	}
	return n
}

// fakeNL is an in-memory Netlink: links, IPv4 ip rules and routes, with
// the kernel's keys (a route per table, destination and metric; EEXIST on
// a duplicate rule). fail makes the call whose log line equals the key
// fail once.
type fakeNL struct {
	mu     sync.Mutex
	log    *writeLog
	links  []netlink.Link
	rules  []netlink.Rule
	routes []netlink.Route
	fail   map[string]error
}

func newFakeNL(log *writeLog, links ...string) *fakeNL {
	f := &fakeNL{log: log, fail: map[string]error{}}
	for i, name := range append([]string{"lo"}, links...) {
		a := netlink.NewLinkAttrs()
		a.Name, a.Index = name, i+1
		f.links = append(f.links, &netlink.Dummy{LinkAttrs: a})
	}
	return f
}

func (f *fakeNL) write(s string) error {
	f.log.note(s)
	if err, ok := f.fail[s]; ok {
		delete(f.fail, s)
		return err
	}
	return nil
}

func (f *fakeNL) LinkList() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.links), nil
}

func (f *fakeNL) RuleListFiltered(family int, _ *netlink.Rule, _ uint64) ([]netlink.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Rule
	for _, r := range f.rules {
		if family == netlink.FAMILY_ALL || r.Family == family {
			out = append(out, copyRule(r))
		}
	}
	return out, nil
}

func copyRule(r netlink.Rule) netlink.Rule {
	if r.Mask != nil {
		m := *r.Mask
		r.Mask = &m
	}
	return r
}

func (f *fakeNL) RuleAdd(r *netlink.Rule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write(fmt.Sprintf("RuleAdd %d", r.Priority)); err != nil {
		return err
	}
	for _, x := range f.rules {
		if ruleKey(x) == ruleKey(*r) && x.Protocol == r.Protocol {
			return syscall.EEXIST
		}
	}
	c := copyRule(*r)
	if c.Family == 0 {
		c.Family = netlink.FAMILY_V4
	}
	f.rules = append(f.rules, c)
	return nil
}

func (f *fakeNL) RuleDel(r *netlink.Rule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write(fmt.Sprintf("RuleDel %d", r.Priority)); err != nil {
		return err
	}
	for i, x := range f.rules {
		if ruleKey(x) == ruleKey(*r) && x.Protocol == r.Protocol {
			f.rules = slices.Delete(f.rules, i, i+1)
			return nil
		}
	}
	return syscall.ENOENT
}

func fakeTable(t int) int {
	if t == 0 {
		return unix.RT_TABLE_MAIN
	}
	return t
}

func (f *fakeNL) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Route
	for _, r := range f.routes {
		switch {
		case mask&netlink.RT_FILTER_TABLE == 0 && r.Table != unix.RT_TABLE_MAIN:
		case mask&netlink.RT_FILTER_TABLE != 0 && filter.Table != unix.RT_TABLE_UNSPEC && r.Table != filter.Table:
		case mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol:
		default:
			out = append(out, r)
		}
	}
	return out, nil
}

func sameRouteKey(a, b netlink.Route) bool {
	ka, _ := routeKeyOf(a)
	kb, _ := routeKeyOf(b)
	return ka == kb
}

func (f *fakeNL) RouteReplace(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write(fmt.Sprintf("RouteReplace %d %v", r.Table, r.Dst)); err != nil {
		return err
	}
	c := *r
	c.Table = fakeTable(c.Table)
	for i, x := range f.routes {
		if sameRouteKey(x, c) {
			f.routes[i] = c
			return nil
		}
	}
	f.routes = append(f.routes, c)
	return nil
}

func (f *fakeNL) RouteDel(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write(fmt.Sprintf("RouteDel %d %v", r.Table, r.Dst)); err != nil {
		return err
	}
	c := *r
	c.Table = fakeTable(c.Table)
	for i, x := range f.routes {
		if sameRouteKey(x, c) {
			f.routes = slices.Delete(f.routes, i, i+1)
			return nil
		}
	}
	return syscall.ESRCH
}

// addForeignRoute adds a route the way another program would (no write
// logged).
func (f *fakeNL) addForeignRoute(table int, dst, gw string, link int, proto netlink.RouteProtocol) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := netip.MustParsePrefix(dst)
	f.routes = append(f.routes, netlink.Route{Table: table, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		Gw: net.ParseIP(gw).To4(), LinkIndex: link, Protocol: proto})
}

// String prints rules and routes, sorted.
func (f *fakeNL) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := map[int]string{}
	for _, l := range f.links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var lines []string
	for _, r := range f.rules {
		lines = append(lines, fmt.Sprintf("rule %s proto %d", ruleKey(r), r.Protocol))
	}
	for _, r := range f.routes {
		k, _ := routeKeyOf(r)
		lines = append(lines, fmt.Sprintf("route table %d %v via %v dev %s proto %d", k.table, k.dst, r.Gw, names[r.LinkIndex], r.Protocol))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// fakeNFT is an in-memory nftables holding inet tables, chains, named
// sets and rules. Each dial gives a fakeNFTConn that queues writes and
// applies them atomically on Flush, like a kernel transaction: if one
// fails, none is applied. Anonymous sets are accepted and not kept.
type fakeNFT struct {
	mu        sync.Mutex
	log       *writeLog
	st        nftState
	failFlush error
}

type nftState struct {
	tables []string
	chains []*fakeChain
	sets   []*nftables.Set
	handle uint64
}

type fakeChain struct {
	c     nftables.Chain
	rules []*nftables.Rule
}

func (s nftState) clone() nftState {
	c := nftState{tables: slices.Clone(s.tables), sets: slices.Clone(s.sets), handle: s.handle}
	for _, ch := range s.chains {
		c.chains = append(c.chains, &fakeChain{c: ch.c, rules: slices.Clone(ch.rules)})
	}
	return c
}

func (s *nftState) chain(table, name string) *fakeChain {
	for _, ch := range s.chains {
		if ch.c.Table.Name == table && ch.c.Name == name {
			return ch
		}
	}
	return nil
}

func newFakeNFT(log *writeLog) *fakeNFT { return &fakeNFT{log: log} }

func (f *fakeNFT) dial() (NFTConn, error) { return &fakeNFTConn{f: f}, nil }

type fakeNFTConn struct {
	f   *fakeNFT
	ops []func(*nftState) error
}

func (c *fakeNFTConn) queue(note string, op func(*nftState) error) {
	c.f.log.note(note)
	c.ops = append(c.ops, op)
}

func (c *fakeNFTConn) ListTablesOfFamily(fam nftables.TableFamily) ([]*nftables.Table, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []*nftables.Table
	if fam == nftables.TableFamilyINet {
		for _, t := range c.f.st.tables {
			out = append(out, &nftables.Table{Name: t, Family: fam})
		}
	}
	return out, nil
}

func (c *fakeNFTConn) ListChainsOfTableFamily(fam nftables.TableFamily) ([]*nftables.Chain, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []*nftables.Chain
	for _, ch := range c.f.st.chains {
		x := ch.c
		out = append(out, &x)
	}
	return out, nil
}

func (c *fakeNFTConn) GetRules(t *nftables.Table, ch *nftables.Chain) ([]*nftables.Rule, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	fc := c.f.st.chain(t.Name, ch.Name)
	if fc == nil {
		return nil, syscall.ENOENT
	}
	var out []*nftables.Rule
	for _, r := range fc.rules {
		x := *r
		out = append(out, &x)
	}
	return out, nil
}

func (c *fakeNFTConn) GetSets(t *nftables.Table) ([]*nftables.Set, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []*nftables.Set
	for _, s := range c.f.st.sets {
		if s.Table.Name == t.Name {
			x := *s
			out = append(out, &x)
		}
	}
	return out, nil
}

func (c *fakeNFTConn) AddTable(t *nftables.Table) *nftables.Table {
	name := t.Name
	c.queue("AddTable", func(s *nftState) error {
		if !slices.Contains(s.tables, name) {
			s.tables = append(s.tables, name)
		}
		return nil
	})
	return t
}

func (c *fakeNFTConn) DelTable(t *nftables.Table) {
	name := t.Name
	c.queue("DelTable", func(s *nftState) error {
		i := slices.Index(s.tables, name)
		if i < 0 {
			return syscall.ENOENT
		}
		s.tables = slices.Delete(s.tables, i, i+1)
		s.chains = slices.DeleteFunc(s.chains, func(ch *fakeChain) bool { return ch.c.Table.Name == name })
		s.sets = slices.DeleteFunc(s.sets, func(x *nftables.Set) bool { return x.Table.Name == name })
		return nil
	})
}

func (c *fakeNFTConn) AddChain(ch *nftables.Chain) *nftables.Chain {
	x := *ch
	x.Table = &nftables.Table{Name: ch.Table.Name, Family: ch.Table.Family}
	c.queue("AddChain "+ch.Name, func(s *nftState) error {
		if !slices.Contains(s.tables, x.Table.Name) {
			return syscall.ENOENT
		}
		if s.chain(x.Table.Name, x.Name) == nil {
			s.chains = append(s.chains, &fakeChain{c: x})
		}
		return nil
	})
	return ch
}

func (c *fakeNFTConn) FlushChain(ch *nftables.Chain) {
	table, name := ch.Table.Name, ch.Name
	c.queue("FlushChain "+name, func(s *nftState) error {
		fc := s.chain(table, name)
		if fc == nil {
			return syscall.ENOENT
		}
		fc.rules = nil
		return nil
	})
}

func (c *fakeNFTConn) DelChain(ch *nftables.Chain) {
	table, name := ch.Table.Name, ch.Name
	c.queue("DelChain "+name, func(s *nftState) error {
		fc := s.chain(table, name)
		switch {
		case fc == nil:
			return syscall.ENOENT
		case len(fc.rules) > 0:
			return syscall.EBUSY
		}
		s.chains = slices.DeleteFunc(s.chains, func(x *fakeChain) bool { return x == fc })
		return nil
	})
}

func (c *fakeNFTConn) AddSet(set *nftables.Set, _ []nftables.SetElement) error {
	x := *set
	c.queue("AddSet", func(s *nftState) error {
		if !x.Anonymous {
			s.sets = append(s.sets, &x)
		}
		return nil
	})
	return nil
}

func (c *fakeNFTConn) DelSet(set *nftables.Set) {
	table, name := set.Table.Name, set.Name
	c.queue("DelSet "+name, func(s *nftState) error {
		n := len(s.sets)
		s.sets = slices.DeleteFunc(s.sets, func(x *nftables.Set) bool { return x.Table.Name == table && x.Name == name })
		if len(s.sets) == n {
			return syscall.ENOENT
		}
		return nil
	})
}

func (c *fakeNFTConn) addRule(note string, r *nftables.Rule, after bool) *nftables.Rule {
	x := *r
	table, chain := r.Table.Name, r.Chain.Name
	c.queue(note+" "+chain, func(s *nftState) error {
		fc := s.chain(table, chain)
		if fc == nil {
			return syscall.ENOENT
		}
		s.handle++
		x.Handle = s.handle
		x.Table = &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
		x.Chain = &nftables.Chain{Name: chain, Table: x.Table}
		x.Position = 0
		at := len(fc.rules)
		if !after {
			at = 0
		}
		if r.Position != 0 {
			i := slices.IndexFunc(fc.rules, func(y *nftables.Rule) bool { return y.Handle == r.Position })
			if i < 0 {
				return syscall.ENOENT
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

func (c *fakeNFTConn) AddRule(r *nftables.Rule) *nftables.Rule { return c.addRule("AddRule", r, true) }
func (c *fakeNFTConn) InsertRule(r *nftables.Rule) *nftables.Rule {
	return c.addRule("InsertRule", r, false)
}

func (c *fakeNFTConn) DelRule(r *nftables.Rule) error {
	table, chain, h := r.Table.Name, r.Chain.Name, r.Handle
	c.queue("DelRule "+chain, func(s *nftState) error {
		fc := s.chain(table, chain)
		if fc == nil {
			return syscall.ENOENT
		}
		n := len(fc.rules)
		fc.rules = slices.DeleteFunc(fc.rules, func(y *nftables.Rule) bool { return y.Handle == h })
		if len(fc.rules) == n {
			return syscall.ENOENT
		}
		return nil
	})
	return nil
}

func (c *fakeNFTConn) Flush() error {
	c.f.log.note("Flush")
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	ops := c.ops
	c.ops = nil
	if err := c.f.failFlush; err != nil {
		c.f.failFlush = nil
		return err
	}
	st := c.f.st.clone()
	for _, op := range ops {
		if err := op(&st); err != nil {
			return err
		}
	}
	c.f.st = st
	return nil
}

// String prints our table: chains sorted by name with their shape, rules
// in order by comment.
func (f *fakeNFT) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, t := range f.st.tables {
		fmt.Fprintf(&b, "table inet %s\n", t)
	}
	chains := slices.Clone(f.st.chains)
	slices.SortFunc(chains, func(a, b *fakeChain) int { return strings.Compare(a.c.Name, b.c.Name) })
	for _, ch := range chains {
		fmt.Fprintf(&b, "chain %s %s\n", ch.c.Name, chainShape(ch.c.Type, ch.c.Hooknum, ch.c.Priority, ch.c.Policy))
		for _, r := range ch.rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			fmt.Fprintf(&b, "  %s\n", comment)
		}
	}
	for _, s := range f.st.sets {
		fmt.Fprintf(&b, "set %s\n", s.Name)
	}
	return b.String()
}

// handles returns "chain/handle" of every rule, in order, whose comment
// contains sub.
func (f *fakeNFT) handles(sub string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ch := range f.st.chains {
		for _, r := range ch.rules {
			if comment, _ := userdata.GetString(r.UserData, userdata.TypeComment); strings.Contains(comment, sub) {
				out = append(out, fmt.Sprintf("%s/%d", ch.c.Name, r.Handle))
			}
		}
	}
	return out
}

// Package firewall owns meshwan's nftables rules: the SNAT exemption for
// tunnel traffic, permits for the underlay protocols and the tunnel links,
// and a TCP MSS clamp on the tunnel links. Everything lives in ONE table,
// "inet meshwan" (TableName); no other table is ever read or written.
//
// # What the agent guarantees, and what the operator must do
//
// nftables runs every base chain registered on a hook, in priority order,
// and a packet passes the hook only if no chain drops it: accept ends the
// current chain, nothing more. Two consequences shape this package.
//
// Filter. Our chains (input and, with a permit mark, forward; priority
// filter-10 = -10) have policy accept and hold only accepts: they never
// block anything, so installing meshwan cannot break a host's firewall.
// An accept no drop follows changes no verdict, so without a permit mark
// only the accepts that precede the listener drops are installed (the
// rest would cost every tunnelled packet set lookups and, on forward, a
// base chain, for nothing); the
// untracked chains' counters show the tunnel's traffic. Besides the
// listener drops, the one exception is rule mw:gre-needs-ipsec, first in
// chain untracked_out (output, raw priority): it drops GRE to a peer that
// would leave without IPsec, so a tunnel fails closed instead of crossing
// the WAN in clear. Equally, our accepts
// cannot override an operator's drop: on a host whose own chains drop by
// default, the operator must let meshwan traffic through there, either
//   - by copying the permits: from the peers (udp dport 500 and 4500, esp,
//     gre) on input, and iifname/oifname "mw-*" on forward; or
//   - by setting Options.PermitMark: every packet our chains accept then
//     carries that mark bit, and one rule in the operator's chains,
//     `meta mark & M == M accept`, lets it through (ours run first, at -10).
//
// NAT. The kernel runs the nat chains of a hook until one of them creates
// a NAT binding. "accept" in a nat chain only ends that chain, so an accept
// at srcnat-10 does NOT stop an operator's masquerade at srcnat (the
// privileged test proves this on the kernel). The exemption therefore
// creates an identity binding, `snat ip to ip saddr`: the source is kept,
// the connection counts as source-NATed, and every later nat chain
// (nft, iptables-nft or iptables-legacy) is skipped for it. Exempted, in
// chain postrouting at srcnat-10 (90), on a connection's first packet:
//   - anything leaving through a tunnel link (oifname "mw-*");
//   - local LAN -> remote LAN traffic wherever it is routed;
//   - traffic from a tunnel /30 address;
//   - GRE, ESP and UDP to port 500/4500 sent to a peer's underlay address
//     (seed note 5: a masquerade to another WAN address breaks GRE/IKE).
//
// Caveats: a connection NATed by a rule at a priority below 90 is not ours
// to exempt; and as with any SNAT, a clash with an existing connection's
// tuple can still remap the source port.
//
// MSS. SYNs forwarded into or out of a tunnel link have their MSS option
// lowered to the link MTU - 40 (chain mss, forward hook, mangle priority).
//
// # Declarative apply
//
// Apply builds the whole desired table (Build), reads ours back (chains
// with type/hook/priority/policy, each rule's comment, each set's
// elements) and compares canonical renderings. A rule's comment carries a
// hash of its text, so comparing comments compares content. Equal: no
// write at all. Different: ONE netlink batch, which the kernel commits as
// one transaction, flushes our chains and sets and re-adds everything, so
// packets meet the old rules or the new ones, never none; the base chains
// stay registered throughout, so no new connection can slip past the NAT
// exemption during an update. Anything else found in our table (a chain or
// set an operator added) is removed: the table is ours.
//
// Pitfalls met: google/nftables' Conn keeps a serialization error and
// queued messages until a Flush, so every Apply opens a fresh kernel.NFT
// (the one nftables shim, shared with steering); in an
// inet table, matches on the IPv4 header need `meta nfproto ipv4` first;
// interval sets reject overlapping elements (see Ranges).
package firewall

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
)

// TableName is meshwan's table, in the inet family.
const TableName = "meshwan"

// Options configure a Manager.
type Options struct {
	// Logger gets one line per change; nil discards.
	Logger *slog.Logger
	// PermitMark, if non-zero, is OR-ed into the packet mark of every
	// packet the filter chains accept (see the package comment). Pick a
	// bit no other software on the host uses for routing.
	PermitMark uint32
	// ProbePort is the probe reflector's UDP port (0: DefaultProbePort)
	// and BGPLANPeers the configured LAN BGP peers: see Params.
	ProbePort   uint16
	BGPLANPeers []netip.Addr
}

// Manager applies the firewall part of a Desired. Its methods are
// serialized.
type Manager struct {
	dial func() (kernel.NFT, error)
	log  *slog.Logger
	par  Params
	mu   sync.Mutex
}

// NewManager returns a Manager that opens a fresh kernel.NFT with dial for
// every call, e.g. func() (kernel.NFT, error) { return kernel.NewNFT(nsFD) }.
func NewManager(dial func() (kernel.NFT, error), opts Options) *Manager {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Manager{dial: dial, log: log, par: Params{Mark: opts.PermitMark, ProbePort: opts.ProbePort, BGPLANPeers: opts.BGPLANPeers}}
}

var table = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

// Apply makes table inet meshwan hold exactly Build(d): no write if it
// already does, else one atomic batch.
func (m *Manager) Apply(ctx context.Context, d dataplane.Desired) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("firewall apply: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	want := Build(d, m.par)
	c, err := m.dial()
	if err != nil {
		return fmt.Errorf("firewall apply: %w", err)
	}
	cur, err := observe(c)
	if err != nil {
		return fmt.Errorf("firewall apply: read table %s: %w", TableName, err)
	}
	wantShape := shapeOf(want)
	if cur.shape == wantShape {
		m.log.Debug("firewall unchanged", "table", TableName)
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := program(c, cur, want); err != nil {
		return fmt.Errorf("firewall apply: %w", err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall apply: commit table %s: %w", TableName, err)
	}
	m.log.Info("firewall rules replaced", "table", TableName, "changed", diffSummary(cur.shape, wantShape))
	return nil
}

// Cleanup deletes table inet meshwan if it exists.
func (m *Manager) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.dial()
	if err != nil {
		return fmt.Errorf("firewall cleanup: %w", err)
	}
	cur, err := observe(c)
	if err != nil {
		return fmt.Errorf("firewall cleanup: %w", err)
	}
	if !cur.exists {
		return nil
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall cleanup: delete table %s: %w", TableName, err)
	}
	m.log.Info("firewall table deleted", "table", TableName)
	return nil
}

// observed is what the kernel holds in our table.
type observed struct {
	exists bool
	chains []*nftables.Chain
	sets   []*nftables.Set
	shape  string
}

func observe(c kernel.NFT) (observed, error) {
	var o observed
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
	var lines []string
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != TableName {
			continue
		}
		o.chains = append(o.chains, ch)
		lines = append(lines, chainLine(ch.Name, ch.Type, ch.Hooknum, ch.Priority, ch.Policy))
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return o, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for i, r := range rules {
			lines = append(lines, fmt.Sprintf("rule %s %03d %s", ch.Name, i, kernel.RuleComment(r)))
		}
	}
	sets, err := c.GetSets(table)
	if err != nil {
		return o, fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		o.sets = append(o.sets, s)
		es, err := c.GetSetElements(s)
		if err != nil {
			return o, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		lines = append(lines, setLine(s.Name, s.KeyType.Name, s.Interval, fromElements(es)))
	}
	slices.Sort(lines)
	o.shape = strings.Join(lines, "\n")
	return o, nil
}

// shapeOf renders rs exactly as observe renders the kernel's table.
func shapeOf(rs Ruleset) string {
	var lines []string
	accept := nftables.ChainPolicyAccept
	for _, ch := range rs.Chains {
		lines = append(lines, chainLine(ch.Name, ch.Type, &ch.Hook, &ch.Priority, &accept))
		for i, r := range ch.Rules {
			lines = append(lines, fmt.Sprintf("rule %s %03d %s", ch.Name, i, r.Comment))
		}
	}
	for _, s := range rs.Sets {
		lines = append(lines, setLine(s.Name, nftables.TypeIPAddr.Name, true, s.Ranges))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func chainLine(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority, policy *nftables.ChainPolicy) string {
	return "chain " + name + " " + kernel.ChainShape(typ, hook, prio, policy)
}

func setLine(name, keyType string, interval bool, rs []Range) string {
	return fmt.Sprintf("set %s type %s interval %t elements %s", name, keyType, interval, joinRanges(rs))
}

// program queues, on c, the one batch that turns cur into want.
// Order inside the batch matters to the kernel: rules go before the sets
// they reference can be deleted, chains are flushed before deletion.
func program(c kernel.NFT, cur observed, want Ruleset) error {
	if !cur.exists {
		c.AddTable(table)
	}
	wantChains := map[string]Chain{}
	for _, ch := range want.Chains {
		wantChains[ch.Name] = ch
	}
	keepChain := map[string]bool{}
	for _, ch := range cur.chains {
		c.FlushChain(ch)
		w, ok := wantChains[ch.Name]
		accept := nftables.ChainPolicyAccept
		if ok && chainLine(ch.Name, ch.Type, ch.Hooknum, ch.Priority, ch.Policy) == chainLine(w.Name, w.Type, &w.Hook, &w.Priority, &accept) {
			keepChain[ch.Name] = true
			continue
		}
		c.DelChain(ch)
	}

	keepSet := map[string]*nftables.Set{}
	for _, s := range cur.sets {
		if slices.ContainsFunc(want.Sets, func(w Set) bool { return w.Name == s.Name }) && s.Interval && s.KeyType.Name == nftables.TypeIPAddr.Name {
			c.FlushSet(s)
			keepSet[s.Name] = s
			continue
		}
		c.DelSet(s)
	}
	for _, w := range want.Sets {
		if s, ok := keepSet[w.Name]; ok {
			if err := c.SetAddElements(s, elements(w.Ranges)); err != nil {
				return fmt.Errorf("set %s: %w", w.Name, err)
			}
			continue
		}
		s := &nftables.Set{Table: table, Name: w.Name, KeyType: nftables.TypeIPAddr, Interval: true}
		if err := c.AddSet(s, elements(w.Ranges)); err != nil {
			return fmt.Errorf("set %s: %w", w.Name, err)
		}
	}

	for _, w := range want.Chains {
		ch := &nftables.Chain{Name: w.Name, Table: table}
		if !keepChain[w.Name] {
			hook, prio, accept := w.Hook, w.Priority, nftables.ChainPolicyAccept
			ch = c.AddChain(&nftables.Chain{Name: w.Name, Table: table, Type: w.Type, Hooknum: &hook, Priority: &prio, Policy: &accept})
		}
		for _, r := range w.Rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: r.Exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
		}
	}
	return nil
}

// diffSummary names the chains and sets whose lines differ, for the log.
func diffSummary(cur, want string) string {
	a := strings.Split(cur, "\n")
	b := strings.Split(want, "\n")
	seen := map[string]bool{}
	var names []string
	note := func(line string) {
		f := strings.Fields(line)
		if len(f) < 2 {
			return
		}
		if n := f[0] + " " + f[1]; !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for _, l := range a {
		if !slices.Contains(b, l) {
			note(l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			note(l)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "order"
	}
	return strings.Join(names, ", ")
}

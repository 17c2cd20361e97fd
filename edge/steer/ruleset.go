package steer

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/meshwan/meshwan/edge/dataplane"
	"golang.org/x/sys/unix"
)

// TableName is steering's nftables table, in the inet family. It is
// separate from the firewall's "inet meshwan" so that each package owns
// (and may rewrite or delete) exactly one table.
const TableName = "meshwan_steer"

// Chains. Both hold the same rules. prerouting (type filter, mangle
// priority -150) marks forwarded traffic before the routing decision;
// output (type route, -150) marks traffic the edge itself sends, and
// being a route chain it makes the kernel route a packet again when a rule
// changed its mark.
const (
	ChainPrerouting = "prerouting"
	ChainOutput     = "output"
	PriorityMangle  = -150
)

// Ruleset is the whole desired content of table inet meshwan_steer, built
// by BuildRuleset (pure) and rendered by String in nft-like syntax.
type Ruleset struct {
	Chains []Chain
}

// Chain is a base chain; every chain has policy accept: steering only
// marks, it never filters.
type Chain struct {
	Name     string
	Type     nftables.ChainType
	Hook     nftables.ChainHook
	Priority nftables.ChainPriority
	Rules    []Rule
}

// Rule is one rule. Text renders it; Comment, stored as the rule's comment
// (visible in `nft list`), is "steer:<class> #<hash of Text>", so comparing
// comments compares content.
type Rule struct {
	Class   string
	Text    string
	Comment string
	parts   []part
}

// part is a run of expressions; when set is non-nil the run ends with a
// lookup in an anonymous set, created and bound when the rule is written.
type part struct {
	exprs []expr.Any
	set   *anonSet
}

// anonSet is a constant anonymous set: it lives and dies with its rule.
type anonSet struct {
	keyType  nftables.SetDatatype
	interval bool
	elems    []nftables.SetElement
}

// BuildRuleset returns the marking rules for classes: in class order, one
// rule per class (one per DSCP value when the class lists several, since a
// DSCP set would need a shift google/nftables cannot express), each
//
//	meta nfproto ipv4 meta mark & MASK == 0 [l4proto, dport set] [ip dscp] [ip daddr set]
//	  counter meta mark set meta mark & ~MASK | CLASSMARK
//
// The mark test makes the first matching class win: a packet a rule has
// marked matches no later rule. Bits outside MASK are kept.
func BuildRuleset(classes []dataplane.TrafficClass, n Numbering) Ruleset {
	return buildRuleset(classes, n, func(int) bool { return true })
}

// buildRuleset is BuildRuleset for the classes i with active(i); the
// others get no rule but keep their numbers.
func buildRuleset(classes []dataplane.TrafficClass, n Numbering, active func(i int) bool) Ruleset {
	var rules []Rule
	for i, c := range classes {
		if i >= dataplane.MaxClasses {
			break
		}
		if !active(i) {
			continue
		}
		dscps := []int{-1}
		if len(c.DSCP) > 0 {
			dscps = nil
			for _, d := range c.DSCP {
				dscps = append(dscps, int(d))
			}
			slices.Sort(dscps)
			dscps = slices.Compact(dscps)
		}
		for _, d := range dscps {
			b := newRule(c.Name).ipv4().markIs(n.MarkMask, 0)
			switch c.Protocol {
			case "tcp", "udp":
				proto := byte(unix.IPPROTO_TCP)
				if c.Protocol == "udp" {
					proto = unix.IPPROTO_UDP
				}
				b.l4(c.Protocol, proto)
				if len(c.Ports) > 0 {
					b.dports(c.Protocol, c.Ports)
				}
			case "icmp":
				b.l4("icmp", unix.IPPROTO_ICMP)
			}
			if d >= 0 {
				b.dscp(uint8(d))
			}
			if len(c.Destinations) > 0 {
				b.daddrs(c.Destinations)
			}
			rules = append(rules, b.counter().setMark(n.MarkMask, n.Mark(i)).rule())
		}
	}
	return Ruleset{Chains: []Chain{
		{Name: ChainPrerouting, Type: nftables.ChainTypeFilter, Hook: *nftables.ChainHookPrerouting, Priority: PriorityMangle, Rules: rules},
		{Name: ChainOutput, Type: nftables.ChainTypeRoute, Hook: *nftables.ChainHookOutput, Priority: PriorityMangle, Rules: slices.Clone(rules)},
	}}
}

var hookNames = map[nftables.ChainHook]string{
	*nftables.ChainHookPrerouting:  "prerouting",
	*nftables.ChainHookInput:       "input",
	*nftables.ChainHookForward:     "forward",
	*nftables.ChainHookOutput:      "output",
	*nftables.ChainHookPostrouting: "postrouting",
}

// String renders the ruleset in nft-like syntax, one item per line.
func (rs Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\n", TableName)
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "chain %s { type %s hook %s priority %d; policy accept; }\n", c.Name, c.Type, hookNames[c.Hook], c.Priority)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "  %s comment %q\n", r.Text, r.Comment)
		}
	}
	return b.String()
}

// ruleBuilder appends expressions and their text together, so Text is
// faithful to the expressions by construction. All matches use register 1.
type ruleBuilder struct {
	class string
	text  []string
	parts []part
}

func newRule(class string) *ruleBuilder { return &ruleBuilder{class: class} }

func (b *ruleBuilder) add(text string, e ...expr.Any) *ruleBuilder {
	b.text = append(b.text, text)
	b.parts = append(b.parts, part{exprs: e})
	return b
}

func (b *ruleBuilder) addSet(text string, s *anonSet, load ...expr.Any) *ruleBuilder {
	b.text = append(b.text, text)
	b.parts = append(b.parts, part{exprs: load, set: s})
	return b
}

// maxCommentClass bounds the class name inside a comment (the kernel
// limits rule userdata; the hash keeps comments distinct anyway).
const maxCommentClass = 64

func (b *ruleBuilder) rule() Rule {
	text := strings.Join(b.text, " ")
	sum := sha256.Sum256([]byte(text))
	name := b.class
	if len(name) > maxCommentClass {
		name = name[:maxCommentClass]
	}
	return Rule{Class: b.class, Text: text, Comment: "steer:" + name + " #" + hex.EncodeToString(sum[:6]), parts: b.parts}
}

// ipv4 is "meta nfproto ipv4": needed before any ip header match in an
// inet table, where IPv6 packets traverse the same chains.
func (b *ruleBuilder) ipv4() *ruleBuilder {
	return b.add("meta nfproto ipv4",
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}})
}

// markIs is "meta mark & mask == v" (the mark is in host byte order).
func (b *ruleBuilder) markIs(mask, v uint32) *ruleBuilder {
	return b.add(fmt.Sprintf("meta mark & 0x%08x == 0x%08x", mask, v),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(v)})
}

func (b *ruleBuilder) l4(name string, proto byte) *ruleBuilder {
	return b.add("meta l4proto "+name,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}})
}

// dports must follow l4(tcp|udp): the destination port, at offset 2 of
// both headers, in an interval set.
func (b *ruleBuilder) dports(proto string, prs []dataplane.PortRange) *ruleBuilder {
	rs := portRanges(prs)
	var es []nftables.SetElement
	var txt []string
	for _, r := range rs {
		txt = append(txt, r.String())
		es = append(es, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(r.From)})
		if r.To < 65535 {
			es = append(es, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(r.To + 1), IntervalEnd: true})
		}
	}
	return b.addSet(fmt.Sprintf("%s dport { %s }", proto, strings.Join(txt, ", ")),
		&anonSet{keyType: nftables.TypeInetService, interval: true, elems: es},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
}

// dscp is "ip dscp d": the upper six bits of the TOS byte.
func (b *ruleBuilder) dscp(d uint8) *ruleBuilder {
	return b.add(fmt.Sprintf("ip dscp %d", d),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 1, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0xfc}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{d << 2}})
}

// daddrs is "ip daddr { prefixes }" through an interval set of the merged
// ranges.
func (b *ruleBuilder) daddrs(ps []netip.Prefix) *ruleBuilder {
	rs := addrRanges(ps)
	var es []nftables.SetElement
	var txt []string
	for _, r := range rs {
		txt = append(txt, r.String())
		es = append(es, nftables.SetElement{Key: r.First.AsSlice()})
		if n := r.Last.Next(); n.IsValid() {
			es = append(es, nftables.SetElement{Key: n.AsSlice(), IntervalEnd: true})
		}
	}
	return b.addSet(fmt.Sprintf("ip daddr { %s }", strings.Join(txt, ", ")),
		&anonSet{keyType: nftables.TypeIPAddr, interval: true, elems: es},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
}

func (b *ruleBuilder) counter() *ruleBuilder { return b.add("counter", &expr.Counter{}) }

// setMark is "meta mark set meta mark & ~mask | v": only the bits in mask
// change.
func (b *ruleBuilder) setMark(mask, v uint32) *ruleBuilder {
	return b.add(fmt.Sprintf("meta mark set meta mark & 0x%08x | 0x%08x", ^mask, v),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^mask), Xor: binaryutil.NativeEndian.PutUint32(v & mask)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
}

// addrRange is an inclusive IPv4 range.
type addrRange struct{ First, Last netip.Addr }

func (r addrRange) String() string {
	if p, ok := rangePrefix(r); ok {
		return p.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// rangePrefix returns the prefix covering exactly r, if there is one.
func rangePrefix(r addrRange) (netip.Prefix, bool) {
	for bits := 0; bits <= 32; bits++ {
		p := netip.PrefixFrom(r.First, bits)
		if p.Masked().Addr() == r.First && dataplane.LastAddr(p) == r.Last {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// addrRanges turns IPv4 prefixes into sorted, disjoint, non-adjacent
// ranges covering their union (dataplane.AddrRanges): an interval set
// refuses overlapping elements, and an end element sharing a key with a
// start element.
func addrRanges(ps []netip.Prefix) []addrRange {
	var out []addrRange
	for _, r := range dataplane.AddrRanges(ps) {
		out = append(out, addrRange{First: r[0], Last: r[1]})
	}
	return out
}

// portRanges merges port ranges into sorted, disjoint, non-adjacent ones;
// empty ranges (From 0 or To < From) are dropped.
func portRanges(prs []dataplane.PortRange) []dataplane.PortRange {
	var rs []dataplane.PortRange
	for _, r := range prs {
		if r.From != 0 && r.To >= r.From {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b dataplane.PortRange) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	var out []dataplane.PortRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			prev := &out[n-1]
			if int(r.From) <= int(prev.To)+1 {
				prev.To = max(prev.To, r.To)
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

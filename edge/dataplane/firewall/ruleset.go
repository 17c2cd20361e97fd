package firewall

import (
	"crypto/sha256"
	"encoding/binary"
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

// Ruleset is the whole desired content of the meshwan table: named
// interval sets and base chains with their rules, in order. It is built by
// Build (pure) and rendered by String in nft-like syntax for tests and
// logs.
type Ruleset struct {
	Sets   []Set
	Chains []Chain
}

// Set is a named set of IPv4 ranges (flags interval).
type Set struct {
	Name   string
	Ranges []Range
}

// Chain is a base chain. Every chain has policy accept (see the package
// comment for why).
type Chain struct {
	Name     string
	Type     nftables.ChainType
	Hook     nftables.ChainHook
	Priority nftables.ChainPriority
	Rules    []Rule
}

// Rule is one rule: Text renders it, Exprs are what the kernel gets, and
// Comment (stored as the rule's comment userdata, visible in `nft list`)
// is "mw:<label> #<hash of Text>", so comparing comments compares content.
type Rule struct {
	Label   string
	Text    string
	Comment string
	Exprs   []expr.Any
}

// Chain names, hooks and priorities. Priorities are chosen relative to the
// standard ones so an operator can reason about order:
//   - input/forward filter at filter-10 (-10): before typical operator
//     chains (0), so the permit mark (if enabled) is set when theirs run;
//   - mss at mangle (-150) on forward;
//   - postrouting nat at srcnat-10 (90): before typical masquerade (100);
//   - untracked_in (prerouting) and untracked_out (output) at raw (-300):
//     notrack must run before connection tracking (-200).
const (
	ChainInput        = "input"
	ChainForward      = "forward"
	ChainMSS          = "mss"
	ChainPostrouting  = "postrouting"
	ChainUntrackedIn  = "untracked_in"
	ChainUntrackedOut = "untracked_out"

	PriorityFilter = -10
	PriorityMangle = -150
	PriorityNAT    = 90
	PriorityRaw    = -300
)

// Set names.
const (
	SetPeers      = "peers"       // remote underlay addresses
	SetTunnelNets = "tunnel_nets" // tunnel /30s
	SetLocalLANs  = "local_lans"  // this site's LAN prefixes
	SetRemoteLANs = "remote_lans" // every tunnel's RemoteLANs
	SetPeerInner  = "peer_inner"  // every tunnel's RemoteInner
	SetBGPLAN     = "bgp_lan_peers"
)

// Ports of the edge's own listeners, filtered on input.
const (
	DefaultProbePort = 7402 // edge/probe.DefaultPort
	BGPPort          = 179
)

// Params are the local settings a ruleset depends on besides the desired
// state.
type Params struct {
	// Mark, when non-zero, is OR-ed into the packet mark of every packet
	// the filter chains accept.
	Mark uint32
	// ProbePort is the probe reflector's UDP port (0: DefaultProbePort).
	ProbePort uint16
	// BGPLANPeers are the routers on the site's LAN that peer with the
	// edge over BGP (--bgp-lan-peer): they may reach TCP 179.
	BGPLANPeers []netip.Addr
}

// Build returns the ruleset for d.
func Build(d dataplane.Desired, p Params) Ruleset {
	mark := p.Mark
	probePort := p.ProbePort
	if probePort == 0 {
		probePort = DefaultProbePort
	}
	var peers, nets, remote, inner, lanPeers []netip.Prefix
	for _, t := range d.Tunnels {
		peers = append(peers, netip.PrefixFrom(t.RemoteUnderlay, 32))
		nets = append(nets, t.LocalInner.Masked())
		remote = append(remote, t.RemoteLANs...)
		if t.RemoteInner.Is4() {
			inner = append(inner, netip.PrefixFrom(t.RemoteInner, 32))
		}
	}
	for _, a := range p.BGPLANPeers {
		if a.Is4() {
			lanPeers = append(lanPeers, netip.PrefixFrom(a, 32))
		}
	}
	rs := Ruleset{Sets: []Set{
		{Name: SetBGPLAN, Ranges: Ranges(lanPeers)},
		{Name: SetLocalLANs, Ranges: Ranges(d.LANPrefixes)},
		{Name: SetPeerInner, Ranges: Ranges(inner)},
		{Name: SetPeers, Ranges: Ranges(peers)},
		{Name: SetRemoteLANs, Ranges: Ranges(remote)},
		{Name: SetTunnelNets, Ranges: Ranges(nets)},
	}}

	permit := func(r *ruleBuilder) *ruleBuilder {
		r.counter()
		if mark != 0 {
			r.orMark(mark)
		}
		return r.accept()
	}
	tun := dataplane.LinkPrefix + "*"

	// Every chain has policy accept, so an accept that no drop follows
	// changes no verdict: its one effect is the permit mark. Without a
	// mark those rules would be per-packet work for nothing (set lookups
	// on every tunnelled packet, and on forward a whole base chain, which
	// is what costs most: docs/benchmarks.md) and are not installed; the
	// untracked chains count the tunnel's packets instead. The accepts that precede the listener drops are
	// always installed: they decide what the drops leave alone.
	marking := mark != 0

	// Input: the underlay protocols from peers, and control traffic (BGP,
	// probes) from the peers' inner addresses over the tunnels. GRE
	// appears twice on input in transport mode: as ESP, then decrypted
	// with the same input interface; both are permitted.
	var input []Rule
	var wans []string
	if marking {
		wans = d.WANInterfaces
		if len(wans) == 0 {
			wans = []string{""}
		}
	}
	for _, w := range wans {
		// The protocol before the set lookup (see untrackedIn).
		in := func(label string, proto byte) *ruleBuilder {
			return newRule(label).iif(w).l4(proto).ipv4().saddrIn(SetPeers)
		}
		// ESP and the decrypted GRE first: every tunnelled packet is
		// checked against these (twice), IKE is rare.
		input = append(input,
			permit(in("esp", unix.IPPROTO_ESP)).rule(),
			permit(in("gre", unix.IPPROTO_GRE)).rule(),
			permit(in("ike", unix.IPPROTO_UDP).udpDport(500)).rule(),
			permit(in("ike-natt", unix.IPPROTO_UDP).udpDport(4500)).rule(),
		)
	}
	// Then the edge's own listeners: the probe reflector and BGP answer
	// only the tunnels' far ends (their /30 address, arriving over a
	// tunnel link: GRE inside IPsec, so only an authenticated peer edge
	// can send from there), the configured LAN BGP peers and the host
	// itself; from anywhere else (the WAN above all) they are dropped.
	// Drops match IPv6 too. These are the only drops on input.
	input = append(input,
		permit(newRule("probe-from-peer").iif(tun).ipv4().saddrIn(SetPeerInner).l4(unix.IPPROTO_UDP).udpDport(probePort)).rule(),
		permit(newRule("bgp-from-peer").iif(tun).ipv4().saddrIn(SetPeerInner).l4(unix.IPPROTO_TCP).tcpDport(BGPPort)).rule(),
		permit(newRule("bgp-from-lan-peer").l4(unix.IPPROTO_TCP).tcpDport(BGPPort).ipv4().saddrIn(SetBGPLAN)).rule(),
		newRule("probe-local").iif("lo").l4(unix.IPPROTO_UDP).udpDport(probePort).counter().accept().rule(),
		newRule("bgp-local").iif("lo").l4(unix.IPPROTO_TCP).tcpDport(BGPPort).counter().accept().rule(),
		newRule("probe-other").l4(unix.IPPROTO_UDP).udpDport(probePort).counter().drop().rule(),
		newRule("bgp-other").l4(unix.IPPROTO_TCP).tcpDport(BGPPort).counter().drop().rule(),
	)
	var forward []Rule
	if marking {
		input = append(input, permit(newRule("tunnel-peer").iif(tun).ipv4().saddrIn(SetTunnelNets)).rule())
		forward = []Rule{
			permit(newRule("lan-from-tunnel").iif(tun).ipv4().daddrIn(SetLocalLANs)).rule(),
			permit(newRule("lan-to-tunnel").oif(tun).ipv4().saddrIn(SetLocalLANs)).rule(),
			permit(newRule("tunnel-transit").iif(tun).oif(tun)).rule(),
		}
	}

	// MSS clamp, both directions, to each link's MTU - 40 (see mssClamps).
	var mss []Rule
	for _, c := range mssClamps(d.Tunnels, tun) {
		mss = append(mss,
			newRule("mss-out").oif(c.link).l4(unix.IPPROTO_TCP).tcpSyn().clampMSS(c.mss).rule(),
			newRule("mss-in").iif(c.link).l4(unix.IPPROTO_TCP).tcpSyn().clampMSS(c.mss).rule(),
		)
	}

	// SNAT exemption: an identity SNAT binding ("snat to ip saddr"), not an
	// accept; see the package comment.
	keep := func(label string) *ruleBuilder { return newRule(label).ipv4() }
	post := []Rule{
		keep("keep-src-tunnel-out").oif(tun).counter().keepSource().rule(),
		keep("keep-src-lan-to-remote").saddrIn(SetLocalLANs).daddrIn(SetRemoteLANs).counter().keepSource().rule(),
		keep("keep-src-tunnel-net").saddrIn(SetTunnelNets).counter().keepSource().rule(),
		keep("keep-src-gre").daddrIn(SetPeers).l4(unix.IPPROTO_GRE).counter().keepSource().rule(),
		keep("keep-src-esp").daddrIn(SetPeers).l4(unix.IPPROTO_ESP).counter().keepSource().rule(),
		keep("keep-src-ike").daddrIn(SetPeers).l4(unix.IPPROTO_UDP).udpDport(500).counter().keepSource().rule(),
		keep("keep-src-ike-natt").daddrIn(SetPeers).l4(unix.IPPROTO_UDP).udpDport(4500).counter().keepSource().rule(),
	}

	// Fail closed: GRE to a peer leaves only inside ESP. Without this, GRE
	// sent in the moment between a link coming up and its IPsec policy
	// being installed (or after a policy was removed, or while charon is
	// restarting) would cross the WAN in clear; the VM lab caught exactly
	// that. "rt ipsec missing" is true when the route lookup did not pick
	// an IPsec transformation for the packet. This is the one drop rule
	// meshwan installs, and it only ever matches meshwan's own GRE. The
	// route check comes before the set lookup: a tunnel's GRE has its
	// IPsec transformation, so it fails the rule on a comparison. It is
	// the first rule of the raw output chain rather than a chain of its
	// own: the route (and its IPsec bundle) is chosen before the output
	// hook runs, at any priority, and every base chain a packet crosses
	// costs a hook call and a header parse (docs/benchmarks.md: the
	// chains, not the rules, are what the tunnel pays for).
	guard := newRule("gre-needs-ipsec").l4(unix.IPPROTO_GRE).ipsecMissing().ipv4().daddrIn(SetPeers).counter().drop().rule()

	// Untracked: the tunnel's own packets skip connection tracking. Our
	// nat chain makes the kernel track every connection in the namespace,
	// and each tunnelled packet crosses the hooks three times on each end
	// (the LAN packet, its GRE, its ESP; in transport mode the decrypted
	// GRE comes through prerouting again), three conntrack lookups and
	// state updates per packet each way that none of our rules reads: the
	// permits, the listener filter, the MSS clamp and the GRE guard are
	// stateless. Measured in the VM lab (docs/benchmarks.md,
	// make bench-dataplane). Guarantees kept: an untracked packet never
	// enters a nat chain (NAT needs a connection), so no operator
	// masquerade can rewrite it: the SNAT exemption holds, more strictly
	// than the identity binding below, which still covers the tracked rest
	// (the edge's own tunnel traffic such as BGP and probes, IKE, and flows
	// the sets do not name). The GRE guard is a route lookup, not state.
	// Left tracked on purpose: IKE (UDP 500/4500, low rate), and traffic to
	// or from the edge itself over a tunnel, so an operator's
	// `ct state established` rules keep working for it. Not matched here:
	// IPv6 (our sets are IPv4). Each notrack rule ends the chain (accept:
	// a packet leaves this raw-priority chain for the next hook's chains,
	// nothing is permitted by it): the rules after it cannot match a
	// packet already untracked, and every rule evaluated costs per packet.
	// The protocol is matched before the peers set: a comparison fails a
	// LAN packet where a set lookup would be wasted on it (cheap next to
	// a base chain, measured: docs/benchmarks.md, but not free).
	// Their counters are where `nft list table inet meshwan` shows the
	// tunnel's traffic (ESP and GRE each way, the overlay's classes).
	untrackedIn := []Rule{
		newRule("untracked-esp-in").l4(unix.IPPROTO_ESP).ipv4().saddrIn(SetPeers).counter().notrack().accept().rule(),
		newRule("untracked-gre-in").l4(unix.IPPROTO_GRE).ipv4().saddrIn(SetPeers).counter().notrack().accept().rule(),
		newRule("untracked-lan-from-tunnel").iif(tun).ipv4().daddrIn(SetLocalLANs).counter().notrack().accept().rule(),
		newRule("untracked-transit").iif(tun).ipv4().daddrIn(SetRemoteLANs).counter().notrack().accept().rule(),
		newRule("untracked-lan-to-remote").ipv4().saddrIn(SetLocalLANs).daddrIn(SetRemoteLANs).counter().notrack().accept().rule(),
	}
	untrackedOut := []Rule{
		guard,
		newRule("untracked-gre-out").l4(unix.IPPROTO_GRE).ipv4().daddrIn(SetPeers).counter().notrack().accept().rule(),
		newRule("untracked-esp-out").l4(unix.IPPROTO_ESP).ipv4().daddrIn(SetPeers).counter().notrack().accept().rule(),
	}

	rs.Chains = []Chain{
		{Name: ChainInput, Type: nftables.ChainTypeFilter, Hook: *nftables.ChainHookInput, Priority: PriorityFilter, Rules: input},
		{Name: ChainMSS, Type: nftables.ChainTypeFilter, Hook: *nftables.ChainHookForward, Priority: PriorityMangle, Rules: mss},
		{Name: ChainPostrouting, Type: nftables.ChainTypeNAT, Hook: *nftables.ChainHookPostrouting, Priority: PriorityNAT, Rules: post},
		{Name: ChainUntrackedIn, Type: nftables.ChainTypeFilter, Hook: *nftables.ChainHookPrerouting, Priority: PriorityRaw, Rules: untrackedIn},
		{Name: ChainUntrackedOut, Type: nftables.ChainTypeFilter, Hook: *nftables.ChainHookOutput, Priority: PriorityRaw, Rules: untrackedOut},
	}
	if marking {
		// A base chain costs a hook traversal even when empty.
		rs.Chains = append([]Chain{{Name: ChainForward, Type: nftables.ChainTypeFilter, Hook: *nftables.ChainHookForward, Priority: PriorityFilter, Rules: forward}}, rs.Chains...)
	}
	return rs
}

// mssClamp is one MSS clamp: SYNs through link (a name, or the "mw-*"
// wildcard) get at most mss.
type mssClamp struct {
	link string
	mss  int
}

// mssClamps returns the clamps that give every tunnel's link its MSS
// (MTU - 40): one wildcard clamp at the largest MSS, then one per link
// whose MSS is smaller. The kernel only ever lowers the option (nft_exthdr
// refuses to raise an MSS) and a set statement does not end the chain, so
// a SYN gets the smallest value among the clamps matching its link: the
// link's own. Every forwarded packet walks the chain, so its length must
// not grow with the tunnels: with one MTU (the usual case, a hub's
// thousands of spokes included) it is one wildcard rule per direction.
// Sorted by link name after the wildcard.
func mssClamps(ts []dataplane.Tunnel, wildcard string) []mssClamp {
	if len(ts) == 0 {
		return nil
	}
	var top int
	for _, t := range ts {
		top = max(top, t.MSS())
	}
	out := []mssClamp{{link: wildcard, mss: top}}
	sorted := slices.Clone(ts)
	slices.SortFunc(sorted, func(a, b dataplane.Tunnel) int { return strings.Compare(a.LinkName, b.LinkName) })
	for _, t := range sorted {
		if t.MSS() < top {
			out = append(out, mssClamp{link: t.LinkName, mss: t.MSS()})
		}
	}
	return out
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
	for _, s := range rs.Sets {
		fmt.Fprintf(&b, "set %s { type ipv4_addr; flags interval; elements = { %s } }\n", s.Name, joinRanges(s.Ranges))
	}
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "chain %s { type %s hook %s priority %d; policy accept; }\n", c.Name, c.Type, hookNames[c.Hook], c.Priority)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "  %s comment %q\n", r.Text, r.Comment)
		}
	}
	return b.String()
}

func joinRanges(rs []Range) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// ruleBuilder appends an expression and its text together, so Text is
// faithful to Exprs by construction. All matches load into register 1.
type ruleBuilder struct {
	label string
	text  []string
	exprs []expr.Any
}

func newRule(label string) *ruleBuilder { return &ruleBuilder{label: label} }

func (b *ruleBuilder) add(text string, e ...expr.Any) *ruleBuilder {
	b.text = append(b.text, text)
	b.exprs = append(b.exprs, e...)
	return b
}

func (b *ruleBuilder) rule() Rule {
	text := strings.Join(b.text, " ")
	sum := sha256.Sum256([]byte(text))
	return Rule{Label: b.label, Text: text, Comment: "mw:" + b.label + " #" + hex.EncodeToString(sum[:6]), Exprs: b.exprs}
}

// ipv4 is "meta nfproto ipv4": needed before any ip header match in an
// inet table, where IPv6 packets traverse the same chains.
func (b *ruleBuilder) ipv4() *ruleBuilder {
	return b.add("meta nfproto ipv4",
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}})
}

// iif and oif match an interface name; a trailing '*' matches a prefix,
// as nft does for `iifname "mw-*"` (compare only the prefix bytes). An
// empty name adds nothing.
func (b *ruleBuilder) iif(name string) *ruleBuilder {
	return b.ifname("iifname", expr.MetaKeyIIFNAME, name)
}
func (b *ruleBuilder) oif(name string) *ruleBuilder {
	return b.ifname("oifname", expr.MetaKeyOIFNAME, name)
}

func (b *ruleBuilder) ifname(kw string, key expr.MetaKey, name string) *ruleBuilder {
	if name == "" {
		return b
	}
	var data []byte
	if p, ok := strings.CutSuffix(name, "*"); ok {
		data = []byte(p)
	} else {
		data = make([]byte, unix.IFNAMSIZ)
		copy(data, name)
	}
	return b.add(fmt.Sprintf("%s %q", kw, name),
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data})
}

func (b *ruleBuilder) saddrIn(set string) *ruleBuilder { return b.addrIn("saddr", 12, set) }
func (b *ruleBuilder) daddrIn(set string) *ruleBuilder { return b.addrIn("daddr", 16, set) }

func (b *ruleBuilder) addrIn(kw string, offset uint32, set string) *ruleBuilder {
	return b.add(fmt.Sprintf("ip %s @%s", kw, set),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set})
}

var protoNames = map[byte]string{unix.IPPROTO_UDP: "udp", unix.IPPROTO_TCP: "tcp", unix.IPPROTO_ESP: "esp", unix.IPPROTO_GRE: "gre"}

func (b *ruleBuilder) l4(proto byte) *ruleBuilder {
	return b.add("meta l4proto "+protoNames[proto],
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}})
}

// udpDport must follow l4(udp).
func (b *ruleBuilder) udpDport(port uint16) *ruleBuilder {
	return b.add(fmt.Sprintf("udp dport %d", port),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)})
}

// tcpDport must follow l4(tcp).
func (b *ruleBuilder) tcpDport(port uint16) *ruleBuilder {
	return b.add(fmt.Sprintf("tcp dport %d", port),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)})
}

// tcpSyn must follow l4(tcp): SYN set, RST clear (SYN and SYN-ACK).
func (b *ruleBuilder) tcpSyn() *ruleBuilder {
	const syn, rst = 0x02, 0x04
	return b.add("tcp flags & (syn|rst) == syn",
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | rst}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{syn}})
}

// clampMSS rewrites the TCP MSS option (kind 2, value at offset 2, 2
// bytes, network order) down to mss.
func (b *ruleBuilder) clampMSS(mss int) *ruleBuilder {
	v := make([]byte, 2)
	binary.BigEndian.PutUint16(v, uint16(mss))
	return b.add(fmt.Sprintf("tcp option maxseg size set %d", mss),
		&expr.Immediate{Register: 1, Data: v},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 2, Offset: 2, Len: 2, SourceRegister: 1})
}

func (b *ruleBuilder) counter() *ruleBuilder { return b.add("counter", &expr.Counter{}) }

// orMark is "meta mark set meta mark | m" (the mark is host byte order).
func (b *ruleBuilder) orMark(m uint32) *ruleBuilder {
	return b.add(fmt.Sprintf("meta mark set meta mark | 0x%08x", m),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^m), Xor: binaryutil.NativeEndian.PutUint32(m)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
}

// ipsecMissing is "rt ipsec missing": the route chosen for the packet
// performs no IPsec transformation (NFT_RT_XFRM, which google/nftables
// does not name).
func (b *ruleBuilder) ipsecMissing() *ruleBuilder {
	const rtXFRM expr.RtKey = 4 // NFT_RT_XFRM in linux/netfilter/nf_tables.h
	return b.add("rt ipsec missing",
		&expr.Rt{Register: 1, Key: rtXFRM},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}})
}

// notrack exempts the packet from connection tracking (only effective in
// a chain that runs before conntrack, priority < -200).
func (b *ruleBuilder) notrack() *ruleBuilder { return b.add("notrack", &expr.Notrack{}) }

func (b *ruleBuilder) drop() *ruleBuilder {
	return b.add("drop", &expr.Verdict{Kind: expr.VerdictDrop})
}

func (b *ruleBuilder) accept() *ruleBuilder {
	return b.add("accept", &expr.Verdict{Kind: expr.VerdictAccept})
}

// keepSource is "snat ip to ip saddr": a NAT binding to the packet's own
// source address. It changes nothing on the wire but marks the connection
// as source-NATed, which makes the kernel skip every later nat chain on
// the hook, including the operator's masquerade.
func (b *ruleBuilder) keepSource() *ruleBuilder {
	return b.add("snat ip to ip saddr",
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1})
}

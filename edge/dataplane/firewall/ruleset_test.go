package firewall

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/meshwan/meshwan/edge/dataplane"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// stripHashes removes the " #<hash>" part of comments so the want text
// stays readable; TestCommentHashTracksText covers the hashes.
func stripHashes(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, ` #`); i >= 0 && strings.Contains(l, `comment "mw:`) {
			l = l[:i] + `"`
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func TestBuild(t *testing.T) {
	d := dataplane.Desired{
		Site:          "a",
		LANPrefixes:   []netip.Prefix{pfx("10.2.1.0/24"), pfx("10.2.2.0/24")},
		WANInterfaces: []string{"eth0"},
		Tunnels: []dataplane.Tunnel{
			{ID: "t1", LinkName: "mw-b-inet-inet", LocalUnderlay: addr("110.19.112.126"), RemoteUnderlay: addr("96.3.36.10"),
				LocalInner: pfx("11.11.11.2/30"), RemoteInner: addr("11.11.11.1"),
				RemoteLANs: []netip.Prefix{pfx("10.1.1.0/24")}},
			{ID: "t2", LinkName: "mw-b-lte-lte", LocalUnderlay: addr("100.64.0.2"), RemoteUnderlay: addr("100.64.9.9"), MTU: 1380,
				LocalInner: pfx("11.11.11.6/30"), RemoteInner: addr("11.11.11.5"),
				RemoteLANs: []netip.Prefix{pfx("10.1.1.0/24"), pfx("10.1.0.0/23")}},
		},
	}
	want := `set bgp_lan_peers { type ipv4_addr; flags interval; elements = { 10.2.1.9 } }
set local_lans { type ipv4_addr; flags interval; elements = { 10.2.1.0-10.2.2.255 } }
set peer_inner { type ipv4_addr; flags interval; elements = { 11.11.11.1, 11.11.11.5 } }
set peers { type ipv4_addr; flags interval; elements = { 96.3.36.10, 100.64.9.9 } }
set remote_lans { type ipv4_addr; flags interval; elements = { 10.1.0.0-10.1.1.255 } }
set tunnel_nets { type ipv4_addr; flags interval; elements = { 11.11.11.0-11.11.11.7 } }
chain forward { type filter hook forward priority -10; policy accept; }
  iifname "mw-*" meta nfproto ipv4 ip daddr @local_lans counter meta mark set meta mark | 0x00100000 accept comment "mw:lan-from-tunnel"
  oifname "mw-*" meta nfproto ipv4 ip saddr @local_lans counter meta mark set meta mark | 0x00100000 accept comment "mw:lan-to-tunnel"
  iifname "mw-*" oifname "mw-*" counter meta mark set meta mark | 0x00100000 accept comment "mw:tunnel-transit"
chain input { type filter hook input priority -10; policy accept; }
  iifname "eth0" meta l4proto esp meta nfproto ipv4 ip saddr @peers counter meta mark set meta mark | 0x00100000 accept comment "mw:esp"
  iifname "eth0" meta l4proto gre meta nfproto ipv4 ip saddr @peers counter meta mark set meta mark | 0x00100000 accept comment "mw:gre"
  iifname "eth0" meta l4proto udp meta nfproto ipv4 ip saddr @peers udp dport 500 counter meta mark set meta mark | 0x00100000 accept comment "mw:ike"
  iifname "eth0" meta l4proto udp meta nfproto ipv4 ip saddr @peers udp dport 4500 counter meta mark set meta mark | 0x00100000 accept comment "mw:ike-natt"
  iifname "mw-*" meta nfproto ipv4 ip saddr @peer_inner meta l4proto udp udp dport 7402 counter meta mark set meta mark | 0x00100000 accept comment "mw:probe-from-peer"
  iifname "mw-*" meta nfproto ipv4 ip saddr @peer_inner meta l4proto tcp tcp dport 179 counter meta mark set meta mark | 0x00100000 accept comment "mw:bgp-from-peer"
  meta l4proto tcp tcp dport 179 meta nfproto ipv4 ip saddr @bgp_lan_peers counter meta mark set meta mark | 0x00100000 accept comment "mw:bgp-from-lan-peer"
  iifname "lo" meta l4proto udp udp dport 7402 counter accept comment "mw:probe-local"
  iifname "lo" meta l4proto tcp tcp dport 179 counter accept comment "mw:bgp-local"
  meta l4proto udp udp dport 7402 counter drop comment "mw:probe-other"
  meta l4proto tcp tcp dport 179 counter drop comment "mw:bgp-other"
  iifname "mw-*" meta nfproto ipv4 ip saddr @tunnel_nets counter meta mark set meta mark | 0x00100000 accept comment "mw:tunnel-peer"
chain mss { type filter hook forward priority -150; policy accept; }
  oifname "mw-*" meta l4proto tcp tcp flags & (syn|rst) == syn tcp option maxseg size set 1360 comment "mw:mss-out"
  iifname "mw-*" meta l4proto tcp tcp flags & (syn|rst) == syn tcp option maxseg size set 1360 comment "mw:mss-in"
  oifname "mw-b-lte-lte" meta l4proto tcp tcp flags & (syn|rst) == syn tcp option maxseg size set 1340 comment "mw:mss-out"
  iifname "mw-b-lte-lte" meta l4proto tcp tcp flags & (syn|rst) == syn tcp option maxseg size set 1340 comment "mw:mss-in"
chain postrouting { type nat hook postrouting priority 90; policy accept; }
  meta nfproto ipv4 oifname "mw-*" counter snat ip to ip saddr comment "mw:keep-src-tunnel-out"
  meta nfproto ipv4 ip saddr @local_lans ip daddr @remote_lans counter snat ip to ip saddr comment "mw:keep-src-lan-to-remote"
  meta nfproto ipv4 ip saddr @tunnel_nets counter snat ip to ip saddr comment "mw:keep-src-tunnel-net"
  meta nfproto ipv4 ip daddr @peers meta l4proto gre counter snat ip to ip saddr comment "mw:keep-src-gre"
  meta nfproto ipv4 ip daddr @peers meta l4proto esp counter snat ip to ip saddr comment "mw:keep-src-esp"
  meta nfproto ipv4 ip daddr @peers meta l4proto udp udp dport 500 counter snat ip to ip saddr comment "mw:keep-src-ike"
  meta nfproto ipv4 ip daddr @peers meta l4proto udp udp dport 4500 counter snat ip to ip saddr comment "mw:keep-src-ike-natt"
chain untracked_in { type filter hook prerouting priority -300; policy accept; }
  meta l4proto esp meta nfproto ipv4 ip saddr @peers counter notrack accept comment "mw:untracked-esp-in"
  meta l4proto gre meta nfproto ipv4 ip saddr @peers counter notrack accept comment "mw:untracked-gre-in"
  iifname "mw-*" meta nfproto ipv4 ip daddr @local_lans counter notrack accept comment "mw:untracked-lan-from-tunnel"
  iifname "mw-*" meta nfproto ipv4 ip daddr @remote_lans counter notrack accept comment "mw:untracked-transit"
  meta nfproto ipv4 ip saddr @local_lans ip daddr @remote_lans counter notrack accept comment "mw:untracked-lan-to-remote"
chain untracked_out { type filter hook output priority -300; policy accept; }
  meta l4proto gre rt ipsec missing meta nfproto ipv4 ip daddr @peers counter drop comment "mw:gre-needs-ipsec"
  meta l4proto gre meta nfproto ipv4 ip daddr @peers counter notrack accept comment "mw:untracked-gre-out"
  meta l4proto esp meta nfproto ipv4 ip daddr @peers counter notrack accept comment "mw:untracked-esp-out"
`
	if got := stripHashes(Build(d, Params{Mark: 0x100000, BGPLANPeers: []netip.Addr{addr("10.2.1.9")}}).String()); got != want {
		t.Errorf("ruleset:\n%s\nwant:\n%s", got, want)
	}

	// Without WAN interfaces the underlay permits match any input
	// interface.
	s := Build(dataplane.Desired{Site: "a", Tunnels: d.Tunnels}, Params{Mark: 1}).String()
	if strings.Contains(s, `iifname "eth0"`) || !strings.Contains(s, `meta l4proto esp meta nfproto ipv4 ip saddr @peers counter meta mark set meta mark | 0x00000001 accept`) {
		t.Errorf("want an esp permit on any interface:\n%s", s)
	}
}

// TestBuildWithoutMarkHasNoIdleAccepts: in a policy-accept chain an
// accept that no drop follows changes no verdict; without a permit mark it
// would be per-packet work for nothing, so none is installed (the forward
// chain goes), nothing is marked, and the listener filter is unchanged.
func TestBuildWithoutMarkHasNoIdleAccepts(t *testing.T) {
	d := dataplane.Desired{Site: "a", LANPrefixes: []netip.Prefix{pfx("10.2.1.0/24")}, WANInterfaces: []string{"eth0"}, Tunnels: []dataplane.Tunnel{
		{ID: "t1", LinkName: "mw-b", LocalUnderlay: addr("192.0.2.1"), RemoteUnderlay: addr("192.0.2.9"),
			LocalInner: pfx("11.11.11.2/30"), RemoteInner: addr("11.11.11.1"), RemoteLANs: []netip.Prefix{pfx("10.1.1.0/24")}}}}
	rs := Build(d, Params{})
	if s := rs.String(); strings.Contains(s, "meta mark") || strings.Contains(s, "chain forward") {
		t.Errorf("no mark: want no marking and no forward chain:\n%s", s)
	}
	for _, c := range rs.Chains {
		if c.Type != nftables.ChainTypeFilter || c.Priority == PriorityRaw {
			continue // nat bindings and notrack rules do work of their own
		}
		lastDrop := -1
		for i, r := range c.Rules {
			if strings.HasSuffix(r.Text, " drop") {
				lastDrop = i
			}
		}
		for i, r := range c.Rules {
			if strings.HasSuffix(r.Text, " accept") && i > lastDrop {
				t.Errorf("chain %s: idle accept %s (no drop after it)", c.Name, r.Label)
			}
		}
	}
	with := stripHashes(Build(d, Params{Mark: 1}).String())
	for _, label := range []string{"probe-from-peer", "bgp-from-peer", "bgp-from-lan-peer", "probe-local", "bgp-local", "probe-other", "bgp-other"} {
		if !strings.Contains(stripHashes(rs.String()), `"mw:`+label+`"`) || !strings.Contains(with, `"mw:`+label+`"`) {
			t.Errorf("listener rule %s missing with or without a mark", label)
		}
	}
}

func TestCommentHashTracksText(t *testing.T) {
	a := newRule("x").l4(6).tcpSyn().clampMSS(1360).rule()
	b := newRule("x").l4(6).tcpSyn().clampMSS(1340).rule()
	c := newRule("x").l4(6).tcpSyn().clampMSS(1360).rule()
	if a.Comment == b.Comment {
		t.Errorf("different rules share comment %q", a.Comment)
	}
	if a.Comment != c.Comment {
		t.Errorf("same rule, different comments %q %q", a.Comment, c.Comment)
	}
	if len(a.Comment) > 128 {
		t.Errorf("comment %d bytes: nft limits comments to 128", len(a.Comment))
	}
}

func TestShapeIgnoresNothingThatMatters(t *testing.T) {
	d := dataplane.Desired{Site: "a", LANPrefixes: []netip.Prefix{pfx("10.2.1.0/24")}, Tunnels: []dataplane.Tunnel{
		{ID: "t1", LinkName: "mw-x", LocalUnderlay: addr("192.0.2.1"), RemoteUnderlay: addr("198.51.100.1"),
			LocalInner: pfx("10.255.0.1/30"), RemoteInner: addr("10.255.0.2"), RemoteLANs: []netip.Prefix{pfx("10.1.0.0/16")}}}}
	base := shapeOf(Build(d, Params{}))
	if base != shapeOf(Build(d, Params{})) {
		t.Fatal("shape not deterministic")
	}
	changes := map[string]func(*dataplane.Desired){
		"mtu":        func(d *dataplane.Desired) { d.Tunnels[0].MTU = 1300 },
		"remote lan": func(d *dataplane.Desired) { d.Tunnels[0].RemoteLANs[0] = pfx("10.1.0.0/17") },
		"peer":       func(d *dataplane.Desired) { d.Tunnels[0].RemoteUnderlay = addr("198.51.100.2") },
		"lan":        func(d *dataplane.Desired) { d.LANPrefixes[0] = pfx("10.2.0.0/24") },
		"wan":        func(d *dataplane.Desired) { d.WANInterfaces = []string{"eth1"} },
		// A link name is in the rules only when its MTU is below the
		// others' (mssClamps): a rename of the only link changes nothing.
	}
	for _, par := range []Params{{}, {Mark: 1}} {
		for name, f := range changes {
			if name == "wan" && par.Mark == 0 {
				continue // only the marking permits name the WAN interfaces
			}
			dd := d
			dd.Tunnels = slices.Clone(d.Tunnels)
			dd.Tunnels[0].RemoteLANs = slices.Clone(d.Tunnels[0].RemoteLANs)
			dd.LANPrefixes = slices.Clone(d.LANPrefixes)
			f(&dd)
			if shapeOf(Build(dd, par)) == shapeOf(Build(d, par)) {
				t.Errorf("%s (mark %d): change not visible in the shape", name, par.Mark)
			}
		}
	}
	if shapeOf(Build(d, Params{Mark: 1})) == base {
		t.Error("permit mark not visible in the shape")
	}
}

func TestRanges(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"10.0.0.0/24"}, "10.0.0.0-10.0.0.255"},
		{[]string{"10.0.0.1/32"}, "10.0.0.1"},
		{[]string{"10.0.0.0/24", "10.0.0.0/24"}, "10.0.0.0-10.0.0.255"},
		{[]string{"10.0.0.0/8", "10.1.0.0/16"}, "10.0.0.0-10.255.255.255"},
		{[]string{"10.0.1.0/24", "10.0.0.0/24"}, "10.0.0.0-10.0.1.255"},                      // adjacent
		{[]string{"10.0.0.0/24", "10.0.2.0/24"}, "10.0.0.0-10.0.0.255, 10.0.2.0-10.0.2.255"}, // gap
		{[]string{"0.0.0.0/0"}, "0.0.0.0-255.255.255.255"},
		{[]string{"255.255.255.0/24", "1.2.3.4/32"}, "1.2.3.4, 255.255.255.0-255.255.255.255"},
	}
	for _, tc := range tests {
		var ps []netip.Prefix
		for _, s := range tc.in {
			ps = append(ps, pfx(s))
		}
		got := Ranges(ps)
		if s := joinRanges(got); s != tc.want {
			t.Errorf("Ranges(%v) = %s, want %s", tc.in, s, tc.want)
		}
		// Elements encode and decode back to the same ranges.
		if back := fromElements(elements(got)); !slices.Equal(back, got) {
			t.Errorf("round trip of %v: %v", got, back)
		}
	}
}

// TestRangesAgainstReference: random prefixes in a small space; an address
// is in the union of the prefixes iff it is in exactly one range, ranges
// are sorted and neither overlap nor touch, and elements round-trip.
func TestRangesAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 300; iter++ {
		var ps []netip.Prefix
		for n := r.IntN(8); n >= 0; n-- {
			bits := 24 + r.IntN(9)
			a := netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(4)), byte(r.IntN(256))})
			ps = append(ps, netip.PrefixFrom(a, bits).Masked())
		}
		rs := Ranges(ps)
		for i := 1; i < len(rs); i++ {
			if rs[i-1].Last.Next().Compare(rs[i].First) >= 0 {
				t.Fatalf("%v: ranges %v and %v overlap or touch", ps, rs[i-1], rs[i])
			}
		}
		for c := 0; c < 4; c++ {
			for d := 0; d < 256; d++ {
				a := netip.AddrFrom4([4]byte{10, 0, byte(c), byte(d)})
				in := slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
				n := 0
				for _, x := range rs {
					if x.First.Compare(a) <= 0 && a.Compare(x.Last) <= 0 {
						n++
					}
				}
				if (n == 1) != in || n > 1 {
					t.Fatalf("%v: %v in prefixes %v, in %d ranges of %v", ps, a, in, n, rs)
				}
			}
		}
		if back := fromElements(elements(rs)); !slices.Equal(back, rs) {
			t.Fatalf("round trip %v -> %v", rs, back)
		}
	}
}

func TestDiffSummary(t *testing.T) {
	cur := "chain forward type filter\nrule forward 000 mw:a #1\nset peers type ipv4_addr interval true elements 1.2.3.4"
	want := "chain forward type filter\nrule forward 000 mw:a #2\nset peers type ipv4_addr interval true elements 1.2.3.5"
	if got := diffSummary(cur, want); got != "rule forward, set peers" {
		t.Errorf("diffSummary = %q", got)
	}
}

// The listeners' filter follows the probe port setting and stays in place
// without tunnels (nobody may reach them then, except the host itself).
func TestBuildListenerFilter(t *testing.T) {
	s := stripHashes(Build(dataplane.Desired{Site: "a"}, Params{ProbePort: 9000}).String())
	for _, want := range []string{
		`iifname "mw-*" meta nfproto ipv4 ip saddr @peer_inner meta l4proto udp udp dport 9000 counter accept comment "mw:probe-from-peer"`,
		`meta l4proto udp udp dport 9000 counter drop comment "mw:probe-other"`,
		`meta l4proto tcp tcp dport 179 counter drop comment "mw:bgp-other"`,
		`set peer_inner { type ipv4_addr; flags interval; elements = {  } }`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "7402") {
		t.Errorf("ruleset still filters the default probe port:\n%s", s)
	}
}

// Untracking the tunnel's packets must not change any verdict of ours:
// no rule reads connection-tracking state, and the untracked chains run
// before conntrack (priority -200), or notrack would do nothing.
func TestUntrackedChainsPrecedeConntrackAndNoRuleReadsIt(t *testing.T) {
	d := dataplane.Desired{Site: "a", LANPrefixes: []netip.Prefix{pfx("10.2.1.0/24")}, Tunnels: []dataplane.Tunnel{
		{ID: "t1", LinkName: "mw-b", LocalUnderlay: addr("192.0.2.1"), RemoteUnderlay: addr("192.0.2.9"),
			LocalInner: pfx("11.11.11.2/30"), RemoteInner: addr("11.11.11.1"), RemoteLANs: []netip.Prefix{pfx("10.1.1.0/24")}}}}
	rs := Build(d, Params{Mark: 1})
	untracked := 0
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, e := range r.Exprs {
				switch e.(type) {
				case *expr.Ct:
					t.Errorf("chain %s rule %s reads conntrack: %s", c.Name, r.Label, r.Text)
				case *expr.Notrack:
					untracked++
					if c.Priority >= -200 {
						t.Errorf("chain %s (priority %d) untracks after conntrack ran: %s", c.Name, c.Priority, r.Text)
					}
					if c.Type != nftables.ChainTypeFilter {
						t.Errorf("chain %s: notrack in a %s chain", c.Name, c.Type)
					}
				}
			}
		}
	}
	if untracked != 7 {
		t.Errorf("%d notrack rules, want 7 (ESP and GRE each way, three overlay classes)", untracked)
	}
}

// TestMSSClamps: every tunnel's link gets exactly its MSS (the smallest
// value among the clamps that match it, as the kernel applies them), and
// the chain does not grow with tunnels of one MTU: 2,000 spokes of a hub
// cost one clamp, plus one per link of a smaller MTU.
func TestMSSClamps(t *testing.T) {
	mk := func(n int, mtu func(i int) int) []dataplane.Tunnel {
		var ts []dataplane.Tunnel
		for i := range n {
			ts = append(ts, dataplane.Tunnel{LinkName: fmt.Sprintf("mw-%05d", i), MTU: mtu(i)})
		}
		return ts
	}
	for _, tc := range []struct {
		name   string
		ts     []dataplane.Tunnel
		clamps int
	}{
		{"none", nil, 0},
		{"one MTU, 2000 links", mk(2000, func(int) int { return 1400 }), 1},
		{"every tenth link smaller", mk(2000, func(i int) int { return 1400 - 20*min(i%10, 1) }), 1 + 1800},
		{"three MTUs", mk(30, func(i int) int { return 1300 + 50*(i%3) }), 1 + 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := mssClamps(tc.ts, "mw-*")
			if len(cs) != tc.clamps {
				t.Errorf("%d clamps, want %d", len(cs), tc.clamps)
			}
			for _, tu := range tc.ts {
				got := -1
				for _, c := range cs {
					if c.link == tu.LinkName || (c.link == "mw-*" && strings.HasPrefix(tu.LinkName, "mw-")) {
						if got == -1 || c.mss < got {
							got = c.mss
						}
					}
				}
				if got != tu.MSS() {
					t.Fatalf("link %s (MTU %d): clamped to %d, want %d", tu.LinkName, tu.MTU, got, tu.MSS())
				}
			}
		})
	}
}

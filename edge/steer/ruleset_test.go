package steer

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/meshwan/meshwan/edge/dataplane"
)

func testClasses() []dataplane.TrafficClass {
	return []dataplane.TrafficClass{
		{Name: "voice", SLA: "realtime", DSCP: []uint8{46}, Protocol: "udp",
			Ports: []dataplane.PortRange{{From: 16384, To: 32767}, {From: 5060, To: 5061}, {From: 5061, To: 5062}}},
		{Name: "video", SLA: "realtime", DSCP: []uint8{36, 34, 34}, Protocol: "tcp", Ports: []dataplane.PortRange{{From: 443, To: 443}}},
		{Name: "ping", SLA: "realtime", Protocol: "icmp",
			Destinations: []netip.Prefix{pfx("10.1.2.0/24"), pfx("10.1.3.0/24"), pfx("10.1.0.0/23"), pfx("192.168.7.9/32")}},
		{Name: "rest", SLA: "bulk", Ports: nil},
	}
}

// TestBuildRuleset renders the ruleset for a class list covering every
// match; the output is what `nft list` shows, modulo nft's own spelling.
func TestBuildRuleset(t *testing.T) {
	got := BuildRuleset(testClasses(), DefaultNumbering()).String()
	want := `table inet meshwan_steer
chain prerouting { type filter hook prerouting priority -150; policy accept; }
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto udp udp dport { 5060-5062, 16384-32767 } ip dscp 46 counter meta mark set meta mark & 0x80ffffff | 0x01000000 comment "steer:voice #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto tcp tcp dport { 443 } ip dscp 34 counter meta mark set meta mark & 0x80ffffff | 0x02000000 comment "steer:video #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto tcp tcp dport { 443 } ip dscp 36 counter meta mark set meta mark & 0x80ffffff | 0x02000000 comment "steer:video #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto icmp ip daddr { 10.1.0.0/22, 192.168.7.9/32 } counter meta mark set meta mark & 0x80ffffff | 0x03000000 comment "steer:ping #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 counter meta mark set meta mark & 0x80ffffff | 0x04000000 comment "steer:rest #HASH"
chain output { type route hook output priority -150; policy accept; }
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto udp udp dport { 5060-5062, 16384-32767 } ip dscp 46 counter meta mark set meta mark & 0x80ffffff | 0x01000000 comment "steer:voice #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto tcp tcp dport { 443 } ip dscp 34 counter meta mark set meta mark & 0x80ffffff | 0x02000000 comment "steer:video #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto tcp tcp dport { 443 } ip dscp 36 counter meta mark set meta mark & 0x80ffffff | 0x02000000 comment "steer:video #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 meta l4proto icmp ip daddr { 10.1.0.0/22, 192.168.7.9/32 } counter meta mark set meta mark & 0x80ffffff | 0x03000000 comment "steer:ping #HASH"
  meta nfproto ipv4 meta mark & 0x7f000000 == 0x00000000 counter meta mark set meta mark & 0x80ffffff | 0x04000000 comment "steer:rest #HASH"
`
	if masked := maskHashes(got); masked != want {
		t.Errorf("ruleset:\n%s\nwant:\n%s", masked, want)
	}
}

func maskHashes(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.LastIndex(l, " #"); i >= 0 && strings.HasSuffix(l, `"`) {
			l = l[:i] + ` #HASH"`
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// TestRuleComments: comments are deterministic, distinct within a chain,
// and change with the rule's content (marks included) and only then.
func TestRuleComments(t *testing.T) {
	a := BuildRuleset(testClasses(), DefaultNumbering())
	b := BuildRuleset(testClasses(), DefaultNumbering())
	if a.String() != b.String() {
		t.Fatal("BuildRuleset is not deterministic")
	}
	seen := map[string]bool{}
	for _, r := range a.Chains[0].Rules {
		if seen[r.Comment] {
			t.Errorf("comment %q twice in one chain", r.Comment)
		}
		seen[r.Comment] = true
	}
	// Another port for video: video's comments change, the others' not.
	cs := testClasses()
	cs[1].Ports = []dataplane.PortRange{{From: 8443, To: 8443}}
	c := BuildRuleset(cs, DefaultNumbering())
	for i, r := range c.Chains[0].Rules {
		changed := r.Comment != a.Chains[0].Rules[i].Comment
		if changed != (r.Class == "video") {
			t.Errorf("rule %d (%s): comment changed = %v", i, r.Class, changed)
		}
	}
	// Another mask: every comment changes.
	d := BuildRuleset(testClasses(), Numbering{MarkMask: 0xff, TableBase: 7400, RulePriorityBase: 7400})
	for i, r := range d.Chains[0].Rules {
		if r.Comment == a.Chains[0].Rules[i].Comment {
			t.Errorf("rule %d: comment unchanged under another mark mask", i)
		}
	}
	long := BuildRuleset([]dataplane.TrafficClass{{Name: strings.Repeat("x", 200)}}, DefaultNumbering())
	if n := len(long.Chains[0].Rules[0].Comment); n > 100 {
		t.Errorf("comment of %d bytes for a long class name", n)
	}
}

// TestMarkExprsKeepOtherBits checks the expressions, not just the text:
// the guard masks with MarkMask, and the set keeps every bit outside it.
func TestMarkExprsKeepOtherBits(t *testing.T) {
	for _, mask := range []uint32{0x7f000000, 0x0000ff00, 0xffffffff} {
		n := Numbering{MarkMask: mask, TableBase: 7400, RulePriorityBase: 7400}
		rs := BuildRuleset([]dataplane.TrafficClass{{Name: "a"}, {Name: "b"}}, n)
		r := rs.Chains[0].Rules[1]
		var bitwise []*expr.Bitwise
		for _, p := range r.parts {
			for _, e := range p.exprs {
				if b, ok := e.(*expr.Bitwise); ok {
					bitwise = append(bitwise, b)
				}
			}
		}
		if len(bitwise) != 2 {
			t.Fatalf("mask %#x: %d bitwise expressions", mask, len(bitwise))
		}
		guard, set := bitwise[0], bitwise[1]
		if got := ne32(guard.Mask); got != mask {
			t.Errorf("mask %#x: guard masks with %#x", mask, got)
		}
		// mark' = (mark & M) ^ X: bits outside the mask pass through iff
		// M has them and X does not.
		m, x := ne32(set.Mask), ne32(set.Xor)
		if m&^mask != ^mask || x&^mask != 0 || x != n.Mark(1) {
			t.Errorf("mask %#x: set mask %#x xor %#x", mask, m, x)
		}
		for _, mark := range []uint32{0, 0x00100000, 0xdeadbeef} {
			mark &^= mask // a packet reaching the set has no class bits (the guard)
			if got := (mark & m) ^ x; got != mark|n.Mark(1) {
				t.Errorf("mask %#x: mark %#x becomes %#x, want %#x", mask, mark, got, mark|n.Mark(1))
			}
		}
	}
}

func ne32(b []byte) uint32 { return binaryutil.NativeEndian.Uint32(b) }

func TestRanges(t *testing.T) {
	got := fmt.Sprint(portRanges([]dataplane.PortRange{{From: 5, To: 9}, {From: 1, To: 3}, {From: 4, To: 4}, {From: 20, To: 30}, {From: 25, To: 26}, {From: 0, To: 7}, {From: 9, To: 8}, {From: 65535, To: 65535}}))
	if want := "[1-9 20-30 65535]"; got != want {
		t.Errorf("portRanges = %s, want %s", got, want)
	}
	got = fmt.Sprint(addrRanges([]netip.Prefix{pfx("10.0.1.0/24"), pfx("10.0.0.0/24"), pfx("10.0.0.128/25"), pfx("10.0.3.0/24"),
		pfx("fd00::/8"), pfx("255.255.255.255/32"), pfx("0.0.0.0/32")}))
	if want := "[0.0.0.0/32 10.0.0.0/23 10.0.3.0/24 255.255.255.255/32]"; got != want {
		t.Errorf("addrRanges = %s, want %s", got, want)
	}
	if got := (addrRange{First: netip.MustParseAddr("10.0.0.1"), Last: netip.MustParseAddr("10.0.0.2")}).String(); got != "10.0.0.1-10.0.0.2" {
		t.Errorf("range string %s", got)
	}
}

package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func TestLinkName(t *testing.T) {
	tests := []struct {
		inner string
		want  string
	}{
		{"10.255.0.1/30", "mw-02bfc000"},
		{"10.255.0.2/30", "mw-02bfc000"}, // the other host of the same /30
		{"10.255.0.5/30", "mw-02bfc001"},
		{"10.255.0.6/30", "mw-02bfc001"},
		{"255.0.0.5/30", "mw-3fc00001"},
		{"0.0.0.1/30", "mw-00000000"},
		{"255.255.255.254/30", "mw-3fffffff"},
		{"100.64.12.9/30", "mw-19100302"},
		// Not IPv4: no name; Validate refuses the state.
		{"2001:db8::1/126", ""},
	}
	for _, tc := range tests {
		got := LinkName(netip.MustParsePrefix(tc.inner))
		if got != tc.want {
			t.Errorf("LinkName(%s) = %q, want %q", tc.inner, got, tc.want)
		}
		if got == "" {
			continue
		}
		if err := ValidLinkName(got); err != nil || !strings.HasPrefix(got, LinkPrefix) || len(got) != len(LinkPrefix)+8 {
			t.Errorf("LinkName(%s) = %q: %v", tc.inner, got, err)
		}
	}
	if n := LinkName(netip.Prefix{}); n != "" {
		t.Errorf("LinkName(invalid) = %q", n)
	}
}

// TestLinkNameFleet is the "Fleet scale" property: one hub with 10,000
// tunnels, their /30s drawn consecutively and at random from a /8 pool,
// gets 10,000 distinct names, each a valid kernel name carrying the
// prefix, and the state passes Validate (no duplicate link name). The
// old site-hash scheme failed this with ~1,000 spokes sharing a prefix.
func TestLinkNameFleet(t *testing.T) {
	const n = 10000
	pool := netip.MustParsePrefix("10.0.0.0/8")
	base := ipv4(pool.Addr())
	r := rand.New(rand.NewPCG(1, 2))
	for _, draw := range []struct {
		name string
		net  func(i int) uint32 // index of the i-th /30 within the pool
	}{
		{"consecutive", func(i int) uint32 { return uint32(i) }},
		{"random", nil},
	} {
		t.Run(draw.name, func(t *testing.T) {
			used := map[uint32]bool{}
			next := draw.net
			if next == nil {
				next = func(int) uint32 {
					for {
						k := r.Uint32N(1 << 22) // /30s in a /8
						if !used[k] {
							return k
						}
					}
				}
			}
			d := Desired{Site: "hub"}
			seen := map[string]int{}
			for i := range n {
				k := next(i)
				used[k] = true
				netAddr := base + k<<2
				li := netip.PrefixFrom(addr4(netAddr+1), 30)
				name := LinkName(li)
				if j, dup := seen[name]; dup {
					t.Fatalf("tunnel %d (%v) and tunnel %d share the name %q", i, li, j, name)
				}
				seen[name] = i
				if err := ValidLinkName(name); err != nil || len(name) > MaxLinkNameLen || !strings.HasPrefix(name, LinkPrefix) {
					t.Fatalf("%v: name %q: %v", li, name, err)
				}
				// The far end's name for the same /30 is the same.
				if far := LinkName(netip.PrefixFrom(addr4(netAddr+2), 30)); far != name {
					t.Fatalf("%v: far end named %q, this end %q", li, far, name)
				}
				site := fmt.Sprintf("spoke-%05d", i)
				d.Tunnels = append(d.Tunnels, Tunnel{
					ID: "hub.inet~" + site + ".inet", LinkName: name,
					LocalUnderlay: netip.MustParseAddr("192.0.2.1"), RemoteUnderlay: addr4(0xc6120000 + uint32(i) + 1), // 198.18/15
					LocalInner: li, RemoteInner: addr4(netAddr + 2), RemoteSite: site,
					LocalTransport: "inet", RemoteTransport: "inet",
					PSK: []byte("0123456789abcdef0123456789abcdef"),
				})
			}
			if len(seen) != n {
				t.Fatalf("%d names for %d tunnels", len(seen), n)
			}
			if err := d.Validate(); err != nil {
				t.Fatalf("a 10,000-tunnel hub is refused: %.500v", err)
			}
		})
	}
}

func TestLinkAltName(t *testing.T) {
	for _, tc := range []struct{ site, lt, rt, want string }{
		{"par", "inet", "lte", "mw-par-inet-lte"}, // = the old readable name
		{"spoke-00370", "inet", "inet", "mw-spoke-00370-inet-inet"},
		{strings.Repeat("s", 32), strings.Repeat("l", 12), strings.Repeat("r", 12), "mw-" + strings.Repeat("s", 32) + "-" + strings.Repeat("l", 12) + "-" + strings.Repeat("r", 12)},
		{"", "inet", "lte", ""},
		{"par", "", "lte", ""},
		{"a b", "inet", "lte", ""},
		{"a/b", "inet", "lte", ""},
		{strings.Repeat("s", 124), "i", "l", ""}, // 131 bytes
	} {
		got := LinkAltName(tc.site, tc.lt, tc.rt)
		if got != tc.want {
			t.Errorf("LinkAltName(%q, %q, %q) = %q, want %q", tc.site, tc.lt, tc.rt, got, tc.want)
		}
		// Never mistaken for a link name: those have one dash and 8 hex.
		if got != "" && strings.Count(got, "-") < 3 {
			t.Errorf("altname %q could collide with a LinkName", got)
		}
	}
}

func TestValidateRefusesSharedSlash30(t *testing.T) {
	a := goodTunnel()
	a.LinkName = LinkName(a.LocalInner)
	b := goodTunnel()
	b.ID, b.RemoteUnderlay = "t2", netip.MustParseAddr("96.3.36.11")
	b.LinkName = "mw-other" // even under another name
	d := Desired{Site: "a", Tunnels: []Tunnel{a, b}}
	err := d.Validate()
	if err == nil || !strings.Contains(err.Error(), "Tunnels[1](id=t2).LocalInner") || !strings.Contains(err.Error(), "of Tunnels[0]") {
		t.Fatalf("two tunnels in one /30 accepted or misreported: %v", err)
	}
	b.LocalInner, b.RemoteInner = netip.MustParsePrefix("11.11.11.6/30"), netip.MustParseAddr("11.11.11.5")
	b.LinkName = LinkName(b.LocalInner)
	d.Tunnels[1] = b
	if err := d.Validate(); err != nil {
		t.Fatalf("adjacent /30s refused: %v", err)
	}
}

func ipv4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

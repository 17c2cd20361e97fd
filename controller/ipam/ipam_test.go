package ipam

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestPool30(t *testing.T) {
	p, err := ParsePool30("10.255.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != 16384 {
		t.Errorf("Size = %d, want 16384", p.Size())
	}
	for _, tc := range []struct {
		i          int
		want, a, b string
	}{
		{0, "10.255.0.0/30", "10.255.0.1/30", "10.255.0.2/30"},
		{1, "10.255.0.4/30", "10.255.0.5/30", "10.255.0.6/30"},
		{64, "10.255.1.0/30", "10.255.1.1/30", "10.255.1.2/30"},
		{16383, "10.255.255.252/30", "10.255.255.253/30", "10.255.255.254/30"},
	} {
		got := p.At(tc.i)
		a, b := Ends(got)
		if got.String() != tc.want || a.String() != tc.a || b.String() != tc.b {
			t.Errorf("At(%d) = %s (%s, %s), want %s (%s, %s)", tc.i, got, a, b, tc.want, tc.a, tc.b)
		}
	}
}

// TestPool30MatchesReference walks every /30 of random pools with the
// obvious method (add 4 to the address each step) and compares.
func TestPool30MatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		bits := 20 + r.IntN(11)
		raw := netip.AddrFrom4([4]byte{byte(1 + r.IntN(126)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		pfx := netip.PrefixFrom(raw, bits).Masked()
		p, err := ParsePool30(pfx.String())
		if err != nil {
			t.Fatal(err)
		}
		addr := pfx.Addr()
		for i := range p.Size() {
			if got := p.At(i); got != netip.PrefixFrom(addr, 30) {
				t.Fatalf("pool %s: At(%d) = %s, want %s/30", pfx, i, got, addr)
			}
			if !pfx.Contains(addr) {
				t.Fatalf("pool %s: /30 %d at %s is outside the pool", pfx, i, addr)
			}
			for range 4 {
				addr = addr.Next()
			}
		}
	}
}

func TestParsePool30Errors(t *testing.T) {
	for _, s := range []string{"", "10.0.0.0", "10.0.0.1/16", "10.0.0.0/31", "10.0.0.0/7", "fd00::/64", "nonsense/8",
		"127.0.0.0/16", "169.254.0.0/24", "224.0.0.0/16", "0.0.0.0/8"} {
		if _, err := ParsePool30(s); !errors.Is(err, ErrBadPool) {
			t.Errorf("ParsePool30(%q) = %v, want ErrBadPool", s, err)
		}
	}
}

func TestASNRange(t *testing.T) {
	for _, s := range []string{"64512-65534", "4200000000-4294967294"} { // the private ranges
		if _, err := ParseASNRange(s); err != nil {
			t.Errorf("ParseASNRange(%q) = %v, want ok", s, err)
		}
	}
	r, err := ParseASNRange("4200000000-4200099999")
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != 100000 || !r.Contains(4200000000) || !r.Contains(4200099999) || r.Contains(4200100000) {
		t.Errorf("range %+v: wrong size or bounds", r)
	}
	for _, s := range []string{"", "5", "10-5", "0-5", "a-b", "1-4294967296",
		"64500-64600", "65000-65535", "4294967000-4294967295", "23000-24000"} {
		if _, err := ParseASNRange(s); !errors.Is(err, ErrBadPool) {
			t.Errorf("ParseASNRange(%q) = %v, want ErrBadPool", s, err)
		}
	}
}

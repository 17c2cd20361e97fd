package validity

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestUnderlay(t *testing.T) {
	good := []string{"198.51.100.7", "10.0.0.1", "100.64.1.1", "172.16.0.1", "192.168.1.1", "1.1.1.1", "223.255.255.254", "169.253.255.255", "126.255.255.255"}
	bad := []string{"0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.255.255", "169.254.1.1", "224.0.0.1", "239.255.255.255",
		"240.0.0.1", "255.255.255.255", "2001:db8::1", "::ffff:10.0.0.1"}
	for _, s := range good {
		if err := Underlay(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Underlay(%s) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		if err := Underlay(netip.MustParseAddr(s)); err == nil {
			t.Errorf("Underlay(%s) accepted", s)
		}
	}
	if Underlay(netip.Addr{}) == nil {
		t.Error("Underlay(invalid) accepted")
	}
}

func TestLANPrefix(t *testing.T) {
	good := []string{"10.0.0.0/8", "192.168.1.0/24", "100.64.0.0/10", "1.0.0.0/8", "10.1.2.3/32", "128.0.0.0/3", "64.0.0.0/3", "169.0.0.0/9"}
	bad := []string{"0.0.0.0/0", "0.0.0.0/1", "0.0.0.0/8", "0.1.0.0/16", "127.0.0.0/8", "127.0.0.1/32", "169.254.0.0/16", "169.254.3.0/24",
		"169.0.0.0/8", "224.0.0.0/4", "224.0.0.0/24", "239.0.0.0/8", "240.0.0.0/4", "255.255.255.255/32", "192.0.0.0/2",
		"10.0.0.1/24", "2001:db8::/64"}
	for _, s := range good {
		if err := LANPrefix(netip.MustParsePrefix(s)); err != nil {
			t.Errorf("LANPrefix(%s) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		if err := LANPrefix(netip.MustParsePrefix(s)); err == nil {
			t.Errorf("LANPrefix(%s) accepted", s)
		}
	}
	if LANPrefix(netip.Prefix{}) == nil {
		t.Error("LANPrefix(invalid) accepted")
	}
}

func TestASN(t *testing.T) {
	for _, a := range []uint32{1, 100, 23455, 23457, 64495, 64512, 65000, 65534, 131072, 4200000000, 4294967294} {
		if err := ASN(a); err != nil {
			t.Errorf("ASN(%d) = %v, want nil", a, err)
		}
	}
	for _, a := range []uint32{0, 23456, 64496, 64500, 64511, 65535, 65536, 65551, 65552, 100000, 131071, 4294967295} {
		if err := ASN(a); err == nil {
			t.Errorf("ASN(%d) accepted", a)
		}
	}
}

func TestProposal(t *testing.T) {
	tests := []struct {
		k    Kind
		s    string
		want string // "" = accepted, else a substring of the error
	}{
		{IKE, "aes256-sha256-modp2048", ""},
		{IKE, "aes256-sha256-modp2048,aes128-sha256-modp2048", ""},
		{IKE, "aes256gcm16-prfsha256-x25519", ""},
		{IKE, "aes256gcm16-aes128gcm16-prfsha384-prfsha256-ecp384-modp3072", ""},
		{IKE, "chacha20poly1305-prfsha256-curve25519", ""},
		{IKE, "aes256-sha2_256-sha1-aesxcbc-ecp521-curve448", ""},
		{IKE, "aes128ctr-sha512-prfsha512-ecp256bp", ""},
		{IKE, "camellia256-sha384-modp4096", ""},
		{ESP, "aes256gcm16", ""},
		{ESP, "aes256gcm16-ecp256-esn", ""},
		{ESP, "aes256-sha256", ""},
		{ESP, "aes128-sha1-modp2048-noesn", ""},
		{ESP, "chacha20poly1305-none", ""},
		{ESP, "aes256gcm16,aes256-sha256", ""},
		{IKE, "", "empty"},
		{IKE, "zzz-yyy", "not a strongSwan algorithm"},
		{IKE, "banana", "not a strongSwan algorithm"},
		{IKE, "AES256-SHA256-MODP2048", "not a strongSwan algorithm"},
		{IKE, "aes256 sha256", "not a strongSwan algorithm"},
		{IKE, "aes256-sha256", "no DH group"},
		{IKE, "aes256-modp2048", "without an integrity"},
		{IKE, "sha256-modp2048", "no encryption"},
		{IKE, "aes256gcm16-modp2048", "no PRF"},
		{IKE, "aes256gcm16-sha256-modp2048", "AEAD encryption with an integrity"},
		{IKE, "aes256-aes256gcm16-sha256-modp2048", "mixes classic and AEAD"},
		{IKE, "aes256-sha256-modp2048-esn", "ESP keywords"},
		{IKE, "aes256-sha256-modp1024", "under 2048 bits"},
		{IKE, "3des-sha256-modp2048", "64-bit block cipher"},
		{IKE, "aes256-md5-modp2048", "MD5"},
		{IKE, "aes256-sha256-modp2048s256", "RFC 5114"},
		{IKE, "aes256-sha256-modp2048,", "empty proposal"},
		{IKE, "aes256--sha256-modp2048", "stray '-'"},
		{IKE, ",aes256-sha256-modp2048", "proposal 1 of 2"},
		{ESP, "aes256", "without an integrity"},
		{ESP, "aes256gcm16-prfsha256", "IKE keyword"},
		{ESP, "aes256gcm8", "64-bit integrity check"},
		{ESP, "aes128gmac", "does not encrypt"},
		{ESP, "null-sha256", "null encryption"},
		{ESP, "aes256gcm16-modp2048-none", "DH group and for none"},
		{ESP, strings.Repeat("aes256gcm16,", 20) + "aes256gcm16", "proposals, at most"},
		{ESP, strings.Repeat("x", 2000), "bytes, at most"},
	}
	for _, tc := range tests {
		err := Proposal(tc.k, tc.s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Proposal(%v, %q) = %v, want nil", tc.k, tc.s, err)
		case tc.want != "" && err == nil:
			t.Errorf("Proposal(%v, %q) accepted, want error with %q", tc.k, tc.s, tc.want)
		case tc.want != "" && !strings.Contains(err.Error(), tc.want):
			t.Errorf("Proposal(%v, %q) = %v, want error with %q", tc.k, tc.s, err, tc.want)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("Proposal(%v, %.20q...) error is %d bytes long", tc.k, tc.s, len(err.Error()))
		}
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		f    func(time.Duration) error
		d    time.Duration
		good bool
	}{
		{IKELifetime, 10 * time.Minute, true}, {IKELifetime, 8 * time.Hour, true}, {IKELifetime, 7 * 24 * time.Hour, true},
		{IKELifetime, 599 * time.Second, false}, {IKELifetime, 136 * 365 * 24 * time.Hour, false}, {IKELifetime, -time.Hour, false},
		{ESPLifetime, 5 * time.Minute, true}, {ESPLifetime, 24 * time.Hour, true}, {ESPLifetime, 299 * time.Second, false}, {ESPLifetime, 25 * time.Hour, false},
		{DPD, 5 * time.Second, true}, {DPD, time.Hour, true}, {DPD, 4 * time.Second, false}, {DPD, 0, false}, {DPD, 2 * time.Hour, false},
	} {
		if err := tc.f(tc.d); (err == nil) != tc.good {
			t.Errorf("check(%v) = %v, want good=%v", tc.d, err, tc.good)
		}
	}
	if ESPWithinIKE(time.Hour, 8*time.Hour) != nil || ESPWithinIKE(9*time.Hour, 8*time.Hour) == nil {
		t.Error("ESPWithinIKE is wrong")
	}
}

func TestQuoteBounded(t *testing.T) {
	long := strings.Repeat("é", 1<<20)
	q := Quote(long)
	if len(q) > 2*MaxQuote+40 {
		t.Errorf("Quote of 2 MB is %d bytes", len(q))
	}
	if !strings.Contains(q, fmt.Sprintf("(%d bytes)", len(long))) {
		t.Errorf("Quote does not note the length: %s", q)
	}
	if Quote("abc") != `"abc"` {
		t.Errorf("Quote(abc) = %s", Quote("abc"))
	}
	if err := Proposal(IKE, strings.Repeat("q", 1000)); err == nil || len(err.Error()) > 200 {
		t.Errorf("long unknown keyword: %v", err)
	}
}

// randPrefix makes prefixes in a small space so that they often nest and
// overlap.
func randPrefix(r *rand.Rand) netip.Prefix {
	a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4) * 64), byte(r.IntN(4) * 64)})
	p, _ := a.Prefix(8 + r.IntN(25))
	return p
}

func randAddr(r *rand.Rand) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4) * 64), byte(r.IntN(256))})
}

// TestIndexesAgainstReference checks every index query against the
// obvious pairwise loop, with random prefixes that nest and repeat.
func TestIndexesAgainstReference(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 11))
	defer func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	}()
	for range 3000 {
		n := r.IntN(12)
		var pes []PrefixEntry[int]
		var aes []AddrEntry[int]
		for i := range n {
			pes = append(pes, PrefixEntry[int]{randPrefix(r), i})
			aes = append(aes, AddrEntry[int]{randAddr(r), i})
		}
		px, ax := NewPrefixes(pes), NewAddrs(aes)
		skipN := r.IntN(n + 1)
		skip := func(v int) bool { return v < skipN }
		q := randPrefix(r)
		a := randAddr(r)
		var wantCover, wantWithin, wantContain, wantIn, wantFind bool
		for _, e := range pes {
			if skip(e.Val) {
				continue
			}
			wantCover = wantCover || (e.Prefix.Bits() <= q.Bits() && e.Prefix.Contains(q.Addr()))
			wantWithin = wantWithin || (q.Bits() <= e.Prefix.Bits() && q.Contains(e.Prefix.Addr()))
			wantContain = wantContain || e.Prefix.Contains(a)
		}
		for _, e := range aes {
			if !skip(e.Val) {
				wantIn = wantIn || q.Contains(e.Addr)
				wantFind = wantFind || e.Addr == a
			}
		}
		check := func(name string, got bool, want bool, ok func() bool) {
			if got != want {
				t.Fatalf("%s(%v / %v) in %v skip<%d = %v, want %v", name, q, a, pes, skipN, got, want)
			}
			if got && !ok() {
				t.Fatalf("%s returned a wrong witness", name)
			}
		}
		e, got := px.Covering(q, skip)
		check("Covering", got, wantCover, func() bool { return !skip(e.Val) && e.Prefix.Bits() <= q.Bits() && e.Prefix.Contains(q.Addr()) })
		e, got = px.Within(q, skip)
		check("Within", got, wantWithin, func() bool { return !skip(e.Val) && q.Bits() <= e.Prefix.Bits() && q.Contains(e.Prefix.Addr()) })
		e, got = px.Overlapping(q, skip)
		check("Overlapping", got, wantCover || wantWithin, func() bool { return !skip(e.Val) && e.Prefix.Overlaps(q) })
		e, got = px.Containing(a, skip)
		check("Containing", got, wantContain, func() bool { return !skip(e.Val) && e.Prefix.Contains(a) })
		ae, got := ax.In(q, skip)
		check("In", got, wantIn, func() bool { return !skip(ae.Val) && q.Contains(ae.Addr) })
		ae, got = ax.Find(a, skip)
		check("Find", got, wantFind, func() bool { return !skip(ae.Val) && ae.Addr == a })

		wantOverlap := false
		for i := range pes {
			for j := range i {
				wantOverlap = wantOverlap || pes[i].Prefix.Overlaps(pes[j].Prefix)
			}
		}
		x, y, got := FirstOverlap(pes)
		check("FirstOverlap", got, wantOverlap, func() bool { return x.Val != y.Val && x.Prefix.Overlaps(y.Prefix) })
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/30": "10.0.0.3", "10.1.0.0/16": "10.1.255.255", "0.0.0.0/0": "255.255.255.255",
		"192.0.2.7/32": "192.0.2.7", "10.0.0.0/9": "10.127.255.255"} {
		if got := lastAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

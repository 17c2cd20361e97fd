package intent

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func tsite(name, addr string, lans ...string) Site {
	s := Site{Name: name, Role: RoleSpoke}
	if addr == Dynamic {
		s.Transports = []Transport{{Name: "inet1", Dynamic: true}}
	} else {
		s.Transports = []Transport{{Name: "inet1", Addr: netip.MustParseAddr(addr)}}
	}
	for _, l := range lans {
		s.LANPrefixes = append(s.LANPrefixes, netip.MustParsePrefix(l))
	}
	return s
}

// TestSiteValidateRules: one case per rule of Site.Validate, each naming
// its field and wrapping ErrInvalid.
func TestSiteValidateRules(t *testing.T) {
	tests := []struct {
		name  string
		s     Site
		field string
	}{
		{"name too long", tsite(strings.Repeat("a", 10<<20), "198.51.100.1", "10.1.0.0/24"), "site.name"},
		{"lan loopback", tsite("a", "198.51.100.1", "127.0.0.0/8"), "site.lan_prefixes[0]"},
		{"lan multicast", tsite("a", "198.51.100.1", "10.1.0.0/24", "224.0.0.0/4"), "site.lan_prefixes[1]"},
		{"lan link-local", tsite("a", "198.51.100.1", "169.254.0.0/16"), "site.lan_prefixes[0]"},
		{"lan this-network", tsite("a", "198.51.100.1", "0.0.0.0/8"), "site.lan_prefixes[0]"},
		{"lan reserved", tsite("a", "198.51.100.1", "240.0.0.0/4"), "site.lan_prefixes[0]"},
		{"lan broadcast", tsite("a", "198.51.100.1", "255.255.255.255/32"), "site.lan_prefixes[0]"},
		{"lan default", tsite("a", "198.51.100.1", "0.0.0.0/0"), "site.lan_prefixes[0]"},
		{"lan contains own underlay", tsite("a", "198.51.100.1", "198.51.100.0/24"), "site.lan_prefixes[0]"},
		{"lans overlap", tsite("a", "198.51.100.1", "10.1.0.0/16", "10.2.0.0/16", "10.1.5.0/24"), "site.lan_prefixes[2]"},
		{"underlay loopback", tsite("a", "127.0.0.1", "10.1.0.0/24"), "site.transports[0].address"},
		{"underlay multicast", tsite("a", "224.0.0.1", "10.1.0.0/24"), "site.transports[0].address"},
		{"underlay unspecified", tsite("a", "0.0.0.0", "10.1.0.0/24"), "site.transports[0].address"},
		{"asn as_trans", func() Site { s := tsite("a", "198.51.100.1", "10.1.0.0/24"); s.ASN = 23456; return s }(), "site.asn"},
		{"asn 65535", func() Site { s := tsite("a", "198.51.100.1", "10.1.0.0/24"); s.ASN = 65535; return s }(), "site.asn"},
		{"asn max", func() Site { s := tsite("a", "198.51.100.1", "10.1.0.0/24"); s.ASN = 4294967295; return s }(), "site.asn"},
		{"asn documentation", func() Site { s := tsite("a", "198.51.100.1", "10.1.0.0/24"); s.ASN = 64500; return s }(), "site.asn"},
		{"two transports one address", func() Site {
			s := tsite("a", "198.51.100.1", "10.1.0.0/24")
			s.Transports = append(s.Transports, Transport{Name: "inet2", Addr: netip.MustParseAddr("198.51.100.1")})
			return s
		}(), "site.transports[1].address"},
	}
	for _, tc := range tests {
		err := tc.s.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: %v, want ErrInvalid naming %s", tc.name, err, tc.field)
		}
		if err != nil && len(err.Error()) > 300 {
			t.Errorf("%s: error of %d bytes", tc.name, len(err.Error()))
		}
	}
	if err := tsite("a", "100.64.0.1", "10.1.0.0/24", "192.168.0.0/16").Validate(); err != nil {
		t.Errorf("a CGNAT underlay and private LANs: %v", err)
	}
}

// TestTopologyValidateRules: proposals, lifetimes, DPD, transit prefixes.
func TestTopologyValidateRules(t *testing.T) {
	tests := []struct {
		name  string
		mut   func(*Topology)
		field string
	}{
		{"ike banana", func(t *Topology) { t.IPsec.IKEProposal = "banana" }, "topology.ipsec.ike_proposal"},
		{"ike zzz-yyy", func(t *Topology) { t.IPsec.IKEProposal = "zzz-yyy" }, "topology.ipsec.ike_proposal"},
		{"ike no dh", func(t *Topology) { t.IPsec.IKEProposal = "aes256-sha256" }, "topology.ipsec.ike_proposal"},
		{"esp weak", func(t *Topology) { t.IPsec.ESPProposal = "3des-md5" }, "topology.ipsec.esp_proposal"},
		{"esp long", func(t *Topology) { t.IPsec.ESPProposal = strings.Repeat("aes256gcm16,", 1<<20) }, "topology.ipsec.esp_proposal"},
		{"ike 136 years", func(t *Topology) { t.IPsec.IKELifetime = 136 * 365 * 24 * time.Hour }, "topology.ipsec.ike_lifetime_seconds"},
		{"ike 1 min", func(t *Topology) { t.IPsec.IKELifetime = time.Minute }, "topology.ipsec.ike_lifetime_seconds"},
		{"esp 2 days", func(t *Topology) { t.IPsec.ESPLifetime = 48 * time.Hour }, "topology.ipsec.esp_lifetime_seconds"},
		{"esp over default ike", func(t *Topology) { t.IPsec.ESPLifetime = 9 * time.Hour }, "topology.ipsec.esp_lifetime_seconds"},
		{"dpd 1s", func(t *Topology) { t.IPsec.DPD = time.Second }, "topology.ipsec.dpd_seconds"},
		{"dpd 2h", func(t *Topology) { t.IPsec.DPD = 2 * time.Hour }, "topology.ipsec.dpd_seconds"},
		{"transit special", func(t *Topology) { t.TransitPrefixes = []netip.Prefix{netip.MustParsePrefix("224.0.0.0/8")} }, "topology.transit_prefixes[0]"},
		{"transit overlap", func(t *Topology) {
			t.TransitPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16")}
		}, "topology.transit_prefixes[1]"},
	}
	for _, tc := range tests {
		top := Topology{Mode: ModeFullMesh}
		tc.mut(&top)
		err := top.Validate(nil)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: %.300v, want ErrInvalid naming %s", tc.name, err, tc.field)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("%s: error of %d bytes", tc.name, len(err.Error()))
		}
	}
	good := Topology{Mode: ModeFullMesh, IPsec: IPsec{IKEProposal: "aes256gcm16-prfsha256-curve25519", ESPProposal: "aes256gcm16-ecp256-esn",
		IKELifetime: 24 * time.Hour, ESPLifetime: 12 * time.Hour, DPD: 10 * time.Second}}
	if err := good.Validate(nil); err != nil {
		t.Errorf("good topology: %v", err)
	}
}

// TestIndexCheckSite: one case per cross-site rule, each ErrConflict naming
// the field and the other site.
func TestIndexCheckSite(t *testing.T) {
	pool := netip.MustParsePrefix("10.255.0.0/16")
	others := []Site{tsite("hq", "198.51.100.1", "10.1.0.0/16"), tsite("dyn", Dynamic, "10.2.0.0/16")}
	observed := map[string]map[string]netip.Addr{"dyn": {"inet1": netip.MustParseAddr("203.0.113.7")}}
	x := NewIndex(others, observed)
	tests := []struct {
		name, field, other string
		s                  Site
	}{
		{"lan overlaps", "site.lan_prefixes[0]", `"hq"`, tsite("b", "198.51.100.2", "10.1.2.0/24")},
		{"lan covers", "site.lan_prefixes[0]", `"hq"`, tsite("b", "198.51.100.2", "10.0.0.0/14")},
		{"lan in pool", "site.lan_prefixes[0]", "tunnel pool", tsite("b", "198.51.100.2", "10.255.1.0/24")},
		{"lan contains another's underlay", "site.lan_prefixes[0]", `"hq"`, tsite("b", "198.51.100.2", "198.51.100.0/31")},
		{"lan contains an observed address", "site.lan_prefixes[0]", `"dyn"`, tsite("b", "198.51.100.2", "203.0.113.0/24")},
		{"underlay taken", "site.transports[0].address", `"hq"`, tsite("b", "198.51.100.1", "10.3.0.0/24")},
		{"underlay observed elsewhere", "site.transports[0].address", `"dyn"`, tsite("b", "203.0.113.7", "10.3.0.0/24")},
		{"underlay in another's LAN", "site.transports[0].address", `"hq"`, tsite("b", "10.1.9.9", "10.3.0.0/24")},
		{"underlay in pool", "site.transports[0].address", "tunnel pool", tsite("b", "10.255.0.9", "10.3.0.0/24")},
		{"asn taken", "site.asn", `"hq"`, func() Site { s := tsite("b", "198.51.100.2", "10.3.0.0/24"); s.ASN = 65001; return s }()},
	}
	others[0].ASN = 65001
	x = NewIndex(others, observed)
	for _, tc := range tests {
		// The index (a whole declaration) and the linear form (one site's
		// change) find the same clashes.
		for _, err := range []error{x.CheckSite(tc.s, pool), CheckSite(tc.s, others, observed, pool)} {
			if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), tc.field+":") || !strings.Contains(err.Error(), tc.other) {
				t.Errorf("%s: %v, want ErrConflict naming %s and %s", tc.name, err, tc.field, tc.other)
			}
		}
	}
	// The site's previous version is skipped; a good site passes.
	if err := x.CheckSite(tsite("hq", "198.51.100.1", "10.1.0.0/16", "10.9.0.0/16"), pool); err != nil {
		t.Errorf("updating hq: %v", err)
	}
	if err := CheckSite(tsite("hq", "198.51.100.1", "10.1.0.0/16", "10.9.0.0/16"), others, observed, pool); err != nil {
		t.Errorf("updating hq (linear): %v", err)
	}
	if err := x.CheckSite(tsite("b", "198.51.100.2", "10.3.0.0/24"), pool); err != nil {
		t.Errorf("a good site: %v", err)
	}

	// Reported addresses.
	top := Topology{TransitPrefixes: []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}}
	for _, bad := range []string{"127.0.0.1", "0.0.0.0", "224.0.0.1", "198.51.100.1", "10.255.3.3", "10.1.0.9", "10.2.0.9", "172.16.0.1"} {
		if err := x.CheckObserved("dyn", "inet1", netip.MustParseAddr(bad), pool, top); err == nil {
			t.Errorf("reported %s accepted", bad)
		}
	}
	for _, good := range []string{"203.0.113.7", "203.0.113.8", "100.64.0.1"} {
		if err := x.CheckObserved("dyn", "inet1", netip.MustParseAddr(good), pool, top); err != nil {
			t.Errorf("reported %s: %v", good, err)
		}
	}
}

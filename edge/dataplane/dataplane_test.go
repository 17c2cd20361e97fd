package dataplane

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestValidLinkName(t *testing.T) {
	for _, ok := range []string{"mw-a", "eth0", "mw-123456789012"} {
		if err := ValidLinkName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "mw-1234567890123", "a/b", "a:b", "a b", "mw-%d", "a\tb"} {
		if err := ValidLinkName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/30": "10.0.0.3", "10.0.0.5/30": "10.0.0.7", "10.1.0.0/16": "10.1.255.255",
		"0.0.0.0/0": "255.255.255.255", "192.0.2.7/32": "192.0.2.7"} {
		if got := LastAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("LastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func goodTunnel() Tunnel {
	return Tunnel{
		ID:             "t1",
		LinkName:       "mw-b-inet-inet",
		LocalUnderlay:  netip.MustParseAddr("110.19.112.126"),
		RemoteUnderlay: netip.MustParseAddr("96.3.36.10"),
		LocalInner:     netip.MustParsePrefix("11.11.11.2/30"),
		RemoteInner:    netip.MustParseAddr("11.11.11.1"),
		RemoteSite:     "b",
		RemoteLANs:     []netip.Prefix{netip.MustParsePrefix("10.1.1.0/24")},
		PSK:            []byte("0123456789abcdef0123456789abcdef"),
		IPsec:          IPsecPolicy{IKEProposal: "aes256-sha256-modp2048", ESPProposal: "aes256gcm16", IKELifetime: 8 * time.Hour},
	}
}

func TestValidate(t *testing.T) {
	base := func() Desired {
		return Desired{Site: "a", LANPrefixes: []netip.Prefix{netip.MustParsePrefix("10.2.1.0/24")}, Tunnels: []Tunnel{goodTunnel()}}
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("good state rejected: %v", err)
	}
	// The controller's tunnel ids (controller/topology.ID), longest form.
	long := base()
	long.Tunnels[0].ID = strings.Repeat("s", 32) + ".inet-backup1~" + strings.Repeat("t", 32) + ".inet-backup1"
	if err := long.Validate(); err != nil || len(long.Tunnels[0].ID) != 91 {
		t.Errorf("controller-style id rejected: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(d *Desired)
		field  string // want a FieldError naming this field
	}{
		{"no site", func(d *Desired) { d.Site = "" }, "Site"},
		{"lan host bits", func(d *Desired) { d.LANPrefixes[0] = netip.MustParsePrefix("10.2.1.1/24") }, "LANPrefixes[0]"},
		{"lan v6", func(d *Desired) { d.LANPrefixes[0] = netip.MustParsePrefix("2001:db8::/64") }, "LANPrefixes[0]"},
		{"wan name", func(d *Desired) { d.WANInterfaces = []string{"a very long interface"} }, "WANInterfaces[0]"},
		{"empty id", func(d *Desired) { d.Tunnels[0].ID = "" }, "Tunnels[0].ID"},
		{"id spaces", func(d *Desired) { d.Tunnels[0].ID = "a b" }, "Tunnels[0](id=a b).ID"},
		// The field path quotes at most MaxIDLen bytes of the id.
		{"id too long", func(d *Desired) { d.Tunnels[0].ID = strings.Repeat("x", 1<<20) }, "Tunnels[0](id=" + strings.Repeat("x", MaxIDLen) + ").ID"},
		{"dup id", func(d *Desired) {
			t2 := goodTunnel()
			t2.LinkName = "mw-other"
			d.Tunnels = append(d.Tunnels, t2)
		}, "Tunnels[1](id=t1).ID"},
		{"dup link", func(d *Desired) {
			t2 := goodTunnel()
			t2.ID = "t2"
			d.Tunnels = append(d.Tunnels, t2)
		}, "Tunnels[1](id=t2).LinkName"},
		{"link prefix", func(d *Desired) { d.Tunnels[0].LinkName = "gre1" }, "Tunnels[0](id=t1).LinkName"},
		{"link too long", func(d *Desired) { d.Tunnels[0].LinkName = "mw-0123456789abc" }, "Tunnels[0](id=t1).LinkName"},
		{"underlay v6", func(d *Desired) { d.Tunnels[0].LocalUnderlay = netip.MustParseAddr("2001:db8::1") }, "Tunnels[0](id=t1).LocalUnderlay"},
		{"underlay missing", func(d *Desired) { d.Tunnels[0].RemoteUnderlay = netip.Addr{} }, "Tunnels[0](id=t1).RemoteUnderlay"},
		{"underlay same", func(d *Desired) { d.Tunnels[0].RemoteUnderlay = d.Tunnels[0].LocalUnderlay }, "Tunnels[0](id=t1).RemoteUnderlay"},
		{"inner /24", func(d *Desired) { d.Tunnels[0].LocalInner = netip.MustParsePrefix("11.11.11.2/24") }, "Tunnels[0](id=t1).LocalInner"},
		{"inner network addr", func(d *Desired) { d.Tunnels[0].LocalInner = netip.MustParsePrefix("11.11.11.0/30") }, "Tunnels[0](id=t1).LocalInner"},
		{"inner broadcast", func(d *Desired) { d.Tunnels[0].LocalInner = netip.MustParsePrefix("11.11.11.3/30") }, "Tunnels[0](id=t1).LocalInner"},
		{"remote inner outside", func(d *Desired) { d.Tunnels[0].RemoteInner = netip.MustParseAddr("11.11.12.1") }, "Tunnels[0](id=t1).RemoteInner"},
		{"remote inner same", func(d *Desired) { d.Tunnels[0].RemoteInner = netip.MustParseAddr("11.11.11.2") }, "Tunnels[0](id=t1).RemoteInner"},
		{"remote inner bcast", func(d *Desired) { d.Tunnels[0].RemoteInner = netip.MustParseAddr("11.11.11.3") }, "Tunnels[0](id=t1).RemoteInner"},
		{"mtu small", func(d *Desired) { d.Tunnels[0].MTU = 100 }, "Tunnels[0](id=t1).MTU"},
		{"remote lan overlaps local", func(d *Desired) { d.Tunnels[0].RemoteLANs[0] = netip.MustParsePrefix("10.2.1.128/25") }, "Tunnels[0](id=t1).RemoteLANs[0]"},
		{"remote lan equals local", func(d *Desired) { d.Tunnels[0].RemoteLANs[0] = netip.MustParsePrefix("10.2.1.0/24") }, "Tunnels[0](id=t1).RemoteLANs[0]"},
		{"remote lan covers underlay", func(d *Desired) { d.Tunnels[0].RemoteLANs[0] = netip.MustParsePrefix("0.0.0.0/0") }, "Tunnels[0](id=t1).RemoteLANs[0]"},
		{"psk short", func(d *Desired) { d.Tunnels[0].PSK = []byte("short") }, "Tunnels[0](id=t1).PSK"},
		{"proposal syntax", func(d *Desired) { d.Tunnels[0].IPsec.IKEProposal = "aes256 sha256" }, "Tunnels[0](id=t1).IPsec.IKEProposal"},
		{"negative lifetime", func(d *Desired) { d.Tunnels[0].IPsec.ESPLifetime = -time.Second }, "Tunnels[0](id=t1).IPsec.ESPLifetime"},
		// The shared rules (edge/dataplane/validity) and the cross checks.
		{"lan loopback", func(d *Desired) { d.LANPrefixes[0] = netip.MustParsePrefix("127.0.0.0/8") }, "LANPrefixes[0]"},
		{"lan link-local", func(d *Desired) { d.LANPrefixes[0] = netip.MustParsePrefix("169.254.0.0/16") }, "LANPrefixes[0]"},
		{"remote lan multicast", func(d *Desired) { d.Tunnels[0].RemoteLANs[0] = netip.MustParsePrefix("224.0.0.0/24") }, "Tunnels[0](id=t1).RemoteLANs[0]"},
		{"remote lan broadcast", func(d *Desired) { d.Tunnels[0].RemoteLANs[0] = netip.MustParsePrefix("255.255.255.255/32") }, "Tunnels[0](id=t1).RemoteLANs[0]"},
		{"local lans overlap", func(d *Desired) {
			d.LANPrefixes = append(d.LANPrefixes, netip.MustParsePrefix("10.2.1.128/25"))
		}, "LANPrefixes[1]"},
		{"local lan contains local underlay", func(d *Desired) { d.LANPrefixes[0] = netip.MustParsePrefix("110.19.112.0/24") }, "LANPrefixes[0]"},
		{"local lan contains remote underlay", func(d *Desired) { d.LANPrefixes[0] = netip.MustParsePrefix("96.3.0.0/16") }, "LANPrefixes[0]"},
		{"remote lan contains local underlay", func(d *Desired) { d.Tunnels[0].RemoteLANs[0] = netip.MustParsePrefix("110.19.112.0/24") }, "Tunnels[0](id=t1).RemoteLANs[0]"},
		{"lan overlaps tunnel net", func(d *Desired) { d.LANPrefixes[0] = netip.MustParsePrefix("11.11.11.0/24") }, "LANPrefixes[0]"},
		{"remote lan overlaps tunnel net", func(d *Desired) { d.Tunnels[0].RemoteLANs[0] = netip.MustParsePrefix("11.11.11.0/29") }, "Tunnels[0](id=t1).RemoteLANs[0]"},
		{"underlay loopback", func(d *Desired) { d.Tunnels[0].LocalUnderlay = netip.MustParseAddr("127.0.0.1") }, "Tunnels[0](id=t1).LocalUnderlay"},
		{"underlay unspecified", func(d *Desired) { d.Tunnels[0].RemoteUnderlay = netip.MustParseAddr("0.0.0.0") }, "Tunnels[0](id=t1).RemoteUnderlay"},
		{"underlay multicast", func(d *Desired) { d.Tunnels[0].RemoteUnderlay = netip.MustParseAddr("224.0.0.1") }, "Tunnels[0](id=t1).RemoteUnderlay"},
		{"underlay in tunnel net", func(d *Desired) {
			t2 := goodTunnel()
			t2.ID, t2.LinkName = "t2", "mw-t2"
			t2.LocalInner, t2.RemoteInner = netip.MustParsePrefix("11.11.12.1/30"), netip.MustParseAddr("11.11.12.2")
			t2.RemoteUnderlay = netip.MustParseAddr("11.11.11.1")
			d.Tunnels = append(d.Tunnels, t2)
		}, "Tunnels[1](id=t2).RemoteUnderlay"},
		{"proposal banana", func(d *Desired) { d.Tunnels[0].IPsec.IKEProposal = "banana" }, "Tunnels[0](id=t1).IPsec.IKEProposal"},
		{"proposal zzz-yyy", func(d *Desired) { d.Tunnels[0].IPsec.ESPProposal = "zzz-yyy" }, "Tunnels[0](id=t1).IPsec.ESPProposal"},
		{"ike proposal without dh", func(d *Desired) { d.Tunnels[0].IPsec.IKEProposal = "aes256-sha256" }, "Tunnels[0](id=t1).IPsec.IKEProposal"},
		{"ike lifetime 136 years", func(d *Desired) { d.Tunnels[0].IPsec.IKELifetime = 136 * 365 * 24 * time.Hour }, "Tunnels[0](id=t1).IPsec.IKELifetime"},
		{"dpd 1s", func(d *Desired) { d.Tunnels[0].IPsec.DPDInterval = time.Second }, "Tunnels[0](id=t1).IPsec.DPDInterval"},
		{"esp longer than ike", func(d *Desired) { d.Tunnels[0].IPsec.ESPLifetime = 9 * time.Hour }, "Tunnels[0](id=t1).IPsec.ESPLifetime"},
		{"asn as_trans", func(d *Desired) { d.ASN = 23456 }, "ASN"},
		{"remote asn reserved", func(d *Desired) { d.Tunnels[0].RemoteASN = 65535 }, "Tunnels[0](id=t1).RemoteASN"},
	}
	// A transit summary that strictly contains the local LAN is accepted
	// (the local LAN is more specific).
	summary := base()
	summary.Tunnels[0].RemoteLANs = append(summary.Tunnels[0].RemoteLANs, netip.MustParsePrefix("10.0.0.0/9"))
	if err := summary.Validate(); err != nil {
		t.Errorf("a transit summary containing the local LAN was refused: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := base()
			tc.mutate(&d)
			err := d.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			found := false
			for _, e := range unjoin(err) {
				var fe *FieldError
				if errors.As(e, &fe) && fe.Field == tc.field {
					found = true
				}
			}
			if !found {
				t.Errorf("no error for field %q in: %v", tc.field, err)
			}
			if strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("error leaks the PSK: %v", err)
			}
			if len(err.Error()) > 1000 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if _, isField := err.(*FieldError); !isField {
			return j.Unwrap()
		}
	}
	return []error{err}
}

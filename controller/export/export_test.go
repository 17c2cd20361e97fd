package export

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// seedInput is the seed recipe's two sites seen from "remote" (the RansNet
// box, unmanaged): hub 96.3.36.10 with LAN 10.1.1.0/24, remote
// 110.19.112.126 with LAN 10.2.1.0/24, one tunnel on 11.11.11.0/30 (hub
// .1, remote .2), the seed's PSK and policies (AES SHA 14, 28800 s and
// 3600 s), MTU 1400. The hub (managed) initiates.
func seedInput(routing intent.Routing) Input {
	return Input{
		Site: intent.Site{Name: "remote", Role: intent.RoleSpoke, ASN: 65002, Unmanaged: true,
			Transports:  []intent.Transport{{Name: "inet1", Addr: netip.MustParseAddr("110.19.112.126")}},
			LANPrefixes: []netip.Prefix{netip.MustParsePrefix("10.2.1.0/24")}},
		Topology: intent.Topology{Mode: intent.ModeHubAndSpoke, Routing: routing, MTU: 1400,
			IPsec: intent.IPsec{IKEProposal: "aes128-sha1-modp2048", IKELifetime: 28800 * time.Second,
				ESPProposal: "aes128-sha1-modp2048", ESPLifetime: 3600 * time.Second, DPD: 30 * time.Second}},
		Tunnels: []Tunnel{{
			ID: "hub.inet1~remote.inet1", LocalTransport: "inet1", LocalUnderlay: netip.MustParseAddr("110.19.112.126"),
			RemoteSite: "hub", RemoteTransport: "inet1", RemoteUnderlay: netip.MustParseAddr("96.3.36.10"),
			LocalInner: netip.MustParsePrefix("11.11.11.2/30"), RemoteInner: netip.MustParseAddr("11.11.11.1"),
			RemoteASN: 65001, RemoteLANs: []netip.Prefix{netip.MustParsePrefix("10.1.1.0/24")},
			PSK: []byte("Letmein99"),
		}},
		Version: 42,
	}
}

// joined renders files as one text: "==> name <==" then the content.
func joined(files []File) string {
	var b strings.Builder
	for _, f := range files {
		b.WriteString("==> " + f.Name + " <==\n" + f.Content)
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test ./controller/export -update to accept):\n%s", name, path, got)
	}
}

// TestSeedExportGolden: the seed's two-site example exported in both
// formats (and Linux with BGP) equals the golden files.
func TestSeedExportGolden(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       Format
		routing intent.Routing
	}{
		{"seed-linux-static", Linux, intent.RoutingStatic},
		{"seed-linux-bgp", Linux, intent.RoutingBGP},
		{"seed-ransnet", RansNet, intent.RoutingStatic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, err := Render(tc.f, seedInput(tc.routing))
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, joined(files))
		})
	}
}

// TestSeedRansNetMatchesTheRecipe: the lines of the seed's own example
// that concern the tunnel come out of the export unchanged (the syntax is
// the seed's), except local-net/remote-net (see FileMboxNotes).
func TestSeedRansNetMatchesTheRecipe(t *testing.T) {
	files, err := Render(RansNet, seedInput(intent.RoutingStatic))
	if err != nil {
		t.Fatal(err)
	}
	cli := files[0].Content
	for _, line := range []string{
		"interface tun0\n  tunnel local 110.19.112.126 remote 96.3.36.10\n  enable\n  mtu 1400\n  ip address 11.11.11.2/30\n!\n",
		"ip route 10.1.1.0/24 nexthop 11.11.11.1\n",
		"firewall-access 11 permit outbound tun0 src 10.2.1.0/24\n",
		"firewall-snat 08 exempt outbound eth0 src 11.11.11.0/30 remark \"bypass SNAT for tunnel traffic\"\n",
		"ipsec ike-policy 10 authentication psk policy AES SHA 14 keylife 28800 version 2\n",
		"ipsec esp-policy 10 policy AES SHA 14 keylife 3600\n",
		"ipsec peer 96.3.36.10\n  local ip 110.19.112.126\n",
		"  policy ike 10 esp 10\n  psk Letmein99\n!\nipsec start\n",
	} {
		if !strings.Contains(cli, line) {
			t.Errorf("export lacks the seed's %q:\n%s", line, cli)
		}
	}
}

// multiInput: an unmanaged spoke with two transports to two hubs (all
// four tunnels), LANs 10.9.0.0/24 and 10.9.1.0/24.
func multiInput(routing intent.Routing) Input {
	in := seedInput(routing)
	in.Site.Name = "branch"
	in.Site.Transports = []intent.Transport{{Name: "inet1", Addr: netip.MustParseAddr("198.51.100.9")}, {Name: "lte", Addr: netip.MustParseAddr("203.0.113.9")}}
	in.Site.LANPrefixes = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("10.9.1.0/24")}
	in.Topology.IPsec = intent.IPsec{}
	mk := func(id, lt, hub, hubAddr string, local netip.Addr, inner string, remoteInner string, asn uint32, lan string) Tunnel {
		return Tunnel{ID: id, LocalTransport: lt, LocalUnderlay: local, RemoteSite: hub, RemoteTransport: "inet1",
			RemoteUnderlay: netip.MustParseAddr(hubAddr), LocalInner: netip.MustParsePrefix(inner), RemoteInner: netip.MustParseAddr(remoteInner),
			RemoteASN: asn, RemoteLANs: []netip.Prefix{netip.MustParsePrefix(lan), netip.MustParsePrefix("10.0.0.0/9")}, PSK: []byte{0, 1, 2, 0xff}}
	}
	a, b := in.Site.Transports[0].Addr, in.Site.Transports[1].Addr
	// Deliberately out of id order: Render sorts.
	in.Tunnels = []Tunnel{
		mk("hub2.inet1~branch.lte", "lte", "hub2", "192.0.2.2", b, "100.64.0.14/30", "100.64.0.13", 65012, "10.20.0.0/16"),
		mk("hub1.inet1~branch.inet1", "inet1", "hub1", "192.0.2.1", a, "100.64.0.2/30", "100.64.0.1", 65011, "10.10.0.0/16"),
		mk("hub1.inet1~branch.lte", "lte", "hub1", "192.0.2.1", b, "100.64.0.6/30", "100.64.0.5", 65011, "10.10.0.0/16"),
		mk("hub2.inet1~branch.inet1", "inet1", "hub2", "192.0.2.2", a, "100.64.0.10/30", "100.64.0.9", 65012, "10.20.0.0/16"),
	}
	return in
}

// TestMultiTunnelLinux: every tunnel gets a connection, a secret, a link
// and (static) routes with a primary and backup metric per prefix; with
// BGP, no static route and one neighbor per tunnel.
func TestMultiTunnelLinux(t *testing.T) {
	for _, tc := range []struct {
		routing         intent.Routing
		want, forbidden []string
	}{
		{intent.RoutingStatic,
			[]string{
				"ip route replace 10.10.0.0/16 via 100.64.0.1 dev mw-19100000 metric 100\n",
				"ip route replace 10.10.0.0/16 via 100.64.0.5 dev mw-19100001 metric 101\n",
				"ip route replace 10.0.0.0/9 via 100.64.0.1 dev mw-19100000 metric 100\n",
				"ip route replace 10.0.0.0/9 via 100.64.0.13 dev mw-19100003 metric 103\n",
				"ip tunnel add mw-19100001 mode gre local 203.0.113.9 remote 192.0.2.1 ttl 64\n",
				"ip link set dev mw-19100002 mtu 1400 addrgenmode none\n",
				"esp_proposals = aes256gcm16-modp2048\n", // topology defaults filled in
				"secret = 0x000102ff\n",
				"set peers { type ipv4_addr; flags interval; elements = { 192.0.2.1, 192.0.2.2 } }",
				"set local_lans { type ipv4_addr; flags interval; elements = { 10.9.0.0/24, 10.9.1.0/24 } }",
			},
			[]string{"router bgp"}},
		{intent.RoutingBGP,
			[]string{
				"neighbor 100.64.0.1 remote-as 65011\n", "neighbor 100.64.0.5 remote-as 65011\n",
				"neighbor 100.64.0.9 remote-as 65012\n", "neighbor 100.64.0.13 remote-as 65012\n",
				"  network 10.9.0.0/24\n  network 10.9.1.0/24\n", "router bgp 65002\n", "no bgp ebgp-requires-policy\n",
			},
			[]string{"ip route replace"}},
	} {
		files, err := Render(Linux, multiInput(tc.routing))
		if err != nil {
			t.Fatalf("%s: %v", tc.routing, err)
		}
		all := joined(files)
		for _, w := range tc.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s: missing %q", tc.routing, w)
			}
		}
		for _, f := range tc.forbidden {
			if strings.Contains(all, f) {
				t.Errorf("%s: has %q", tc.routing, f)
			}
		}
		if n := strings.Count(files[0].Content, "    children {"); n != 4 {
			t.Errorf("%s: %d connections, want 4", tc.routing, n)
		}
		if n := strings.Count(files[0].Content, "id-remote ="); n != 4 {
			t.Errorf("%s: %d secrets, want 4", tc.routing, n)
		}
		// Sorted by id: hub1.inet1~branch.inet1 first.
		if i, j := strings.Index(all, "mw-hub1_inet1~branch_inet1 {"), strings.Index(all, "mw-hub2_inet1~branch_lte {"); i < 0 || j < i {
			t.Errorf("%s: connections not in id order", tc.routing)
		}
	}
}

// TestInitiatorRole: the end that initiates starts at once and restarts
// on DPD; the other only traps, as a passive meshwan edge.
func TestInitiatorRole(t *testing.T) {
	in := seedInput(intent.RoutingStatic)
	for _, initiates := range []bool{false, true} {
		in.Tunnels[0].Initiates = initiates
		files, err := Render(Linux, in)
		if err != nil {
			t.Fatal(err)
		}
		want := "start_action = trap\n        dpd_action = trap\n"
		if initiates {
			want = "start_action = trap|start\n        dpd_action = restart\n"
		}
		if !strings.Contains(files[0].Content, want) {
			t.Errorf("initiates=%v: want %q in\n%s", initiates, want, files[0].Content)
		}
	}
}

// TestRansNetRefusals: what the mbox recipe cannot hold is refused with
// ErrInvalid naming the field or the tunnels.
func TestRansNetRefusals(t *testing.T) {
	tests := []struct {
		name string
		in   func() Input
		want string
	}{
		{"bgp", func() Input { return seedInput(intent.RoutingBGP) }, "topology.routing"},
		{"aead esp (the default)", func() Input {
			in := seedInput(intent.RoutingStatic)
			in.Topology.IPsec.ESPProposal = ""
			return in
		}, "topology.ipsec.esp_proposal: \"aes256gcm16\" is an AEAD cipher"},
		{"esp without pfs", func() Input {
			in := seedInput(intent.RoutingStatic)
			in.Topology.IPsec.ESPProposal = "aes128-sha1"
			return in
		}, "names no DH group"},
		{"two proposals", func() Input {
			in := seedInput(intent.RoutingStatic)
			in.Topology.IPsec.IKEProposal = "aes128-sha1-modp2048,aes256-sha256-modp2048"
			return in
		}, "several proposals"},
		{"curve25519", func() Input {
			in := seedInput(intent.RoutingStatic)
			in.Topology.IPsec.IKEProposal = "aes256-sha256-curve25519"
			return in
		}, "\"curve25519\" has no mbox keyword"},
		{"two tunnels to one peer address", func() Input {
			in := multiInput(intent.RoutingStatic)
			in.Topology.IPsec = seedInput(intent.RoutingStatic).Topology.IPsec
			return in
		}, "both lead to 192.0.2.1"},
	}
	for _, tc := range tests {
		_, err := Render(RansNet, tc.in())
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid with %q", tc.name, err, tc.want)
		}
	}
}

// TestMboxPolicyMapping: the documented table (docs/third-party.md).
func TestMboxPolicyMapping(t *testing.T) {
	for in, want := range map[string]string{
		"aes128-sha1-modp2048":   "AES SHA 14",
		"aes256-sha256-modp2048": "AES256 SHA256 14",
		"aes192-sha384-modp3072": "AES192 SHA384 15",
		"aes256-sha512-ecp384":   "AES256 SHA512 20",
		"aes-sha-modp4096":       "AES SHA 16",
	} {
		if got, err := MboxPolicy("p", in); err != nil || got != want {
			t.Errorf("MboxPolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestRansNetMultiTunnel: one tunN, SNAT exemption (counting down from 08)
// and peer per tunnel, one permit per tunnel and LAN, one route per
// prefix; a binary key is written as 0x<hex> and the notes say so.
func TestRansNetMultiTunnel(t *testing.T) {
	in := multiInput(intent.RoutingStatic)
	in.Topology.IPsec = seedInput(intent.RoutingStatic).Topology.IPsec
	in.Tunnels = in.Tunnels[:2] // hub2 via lte, hub1 via inet1: distinct peers
	files, err := Render(RansNet, in)
	if err != nil {
		t.Fatal(err)
	}
	cli, notes := files[0].Content, files[1].Content
	for _, w := range []string{
		"interface tun0\n  tunnel local 198.51.100.9 remote 192.0.2.1\n",
		"interface tun1\n  tunnel local 203.0.113.9 remote 192.0.2.2\n",
		"firewall-snat 08 exempt outbound eth0 src 100.64.0.0/30",
		"firewall-snat 07 exempt outbound eth1 src 100.64.0.12/30",
		"firewall-access 11 permit outbound tun0 src 10.9.0.0/24\nfirewall-access 12 permit outbound tun0 src 10.9.1.0/24\nfirewall-access 13 permit outbound tun1 src 10.9.0.0/24\n",
		"ip route 10.0.0.0/9 nexthop 100.64.0.1\n", "ip route 10.20.0.0/16 nexthop 100.64.0.13\n",
		"  psk 0x000102ff\n",
	} {
		if !strings.Contains(cli, w) {
			t.Errorf("missing %q in\n%s", w, cli)
		}
	}
	if strings.Count(cli, "ip route 10.0.0.0/9 ") != 1 {
		t.Errorf("transit summary routed twice:\n%s", cli)
	}
	if !strings.Contains(notes, "binary") || !strings.Contains(notes, "transport lte is eth1") {
		t.Errorf("notes:\n%s", notes)
	}
}

// TestRenderRefusesIncompleteTunnels: an unknown far-end address or a
// missing key is refused rather than rendered half.
func TestRenderRefusesIncompleteTunnels(t *testing.T) {
	in := seedInput(intent.RoutingStatic)
	in.Tunnels[0].RemoteUnderlay = netip.Addr{}
	if _, err := Render(Linux, in); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "tunnels[0]") {
		t.Errorf("no far address: %v", err)
	}
	in = seedInput(intent.RoutingStatic)
	in.Tunnels[0].PSK = nil
	if _, err := Render(RansNet, in); !errors.Is(err, ErrInvalid) {
		t.Errorf("no key: %v", err)
	}
}

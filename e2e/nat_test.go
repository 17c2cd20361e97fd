//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/e2e/lab"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NAT scenario addresses. The spoke's uplink gets a private address; the
// WAN router (the spoke's ISP, a carrier-grade NAT) translates it to
// natPublic, later to natPublic2. Neither public address is on any
// interface: only the NAT's connection tracking answers for them, as on a
// real NAT.
var (
	natPrivate = netip.MustParsePrefix("172.16.1.2/30")
	natGateway = netip.MustParseAddr("172.16.1.1")
	natPublic  = netip.MustParseAddr("198.51.100.6")   // the spoke's lab address, now on no interface
	natPublic2 = netip.MustParseAddr("198.51.100.250") // a new public address after the NAT "reboots"
)

// recoverBound is what docs/nat.md states: after the NAT mapping of a
// spoke changes (new public port, or new public address), LAN-to-LAN
// traffic flows again within this time in the emulated VM.
const recoverBound = 60 * time.Second

// TestSpokeBehindNAT: a spoke whose only uplink sits behind a NAT
// (nftables snat in the WAN router) and whose transport is declared
// dynamic reaches the hub's LAN, encrypted as ESP in UDP 4500 across the
// WAN; the controller records the NAT's public address (the connection's,
// not the private one the edge sees on its interface). Then the NAT
// mapping changes, first to a new public port, then to a new public
// address (connection tracking flushed each time, as when a NAT reboots
// or an ISP renumbers), and LAN-to-LAN traffic recovers within
// recoverBound without operator action.
func TestSpokeBehindNAT(t *testing.T) {
	e := setup(t, "hub", "br1")
	br1 := e.lab.Sites["br1"]
	tr := br1.Transports[0]
	if tr.Addr != natPublic {
		t.Fatalf("lab addressing changed: br1's uplink is %s, the test expects %s", tr.Addr, natPublic)
	}
	// Renumber br1's uplink into a private block and NAT it in the WAN
	// router. ESP-in-UDP and raw ESP are counted separately on the WAN.
	e.sh("ip", "-n", br1.NS, "addr", "del", tr.Addr.String()+"/30", "dev", tr.Dev)
	e.sh("ip", "-n", br1.NS, "addr", "add", natPrivate.String(), "dev", tr.Dev)
	e.sh("ip", "-n", br1.NS, "route", "replace", "default", "via", natGateway.String())
	e.sh("ip", "-n", "mw-wan", "addr", "add", natGateway.String()+"/30", "dev", tr.RouterDev)
	e.setNAT(natPublic, "")
	e.sh("ip", "netns", "exec", "mw-wan", "nft", "add rule ip mwlab counted udp dport 4500 counter; add rule ip mwlab counted udp sport 4500 counter")

	// hub: static address; br1: dynamic, learnt from its connection.
	hub := e.lab.Sites["hub"]
	for _, s := range []*pb.Site{
		{Name: "hub", Role: pb.SiteRole_SITE_ROLE_HUB, Transports: []*pb.Transport{{Name: "inet1", Address: hub.WAN.String()}}, LanPrefixes: []string{hub.LAN.String()}},
		{Name: "br1", Role: pb.SiteRole_SITE_ROLE_SPOKE, Transports: []*pb.Transport{{Name: "inet1", Address: "dynamic"}}, LanPrefixes: []string{br1.LAN.String()}},
	} {
		if _, err := e.admin.CreateSite(e.actx, &pb.CreateSiteRequest{Site: s}); err != nil {
			t.Fatalf("create site %s: %v", s.Name, err)
		}
	}
	e.topology(pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE)
	start := time.Now()
	for _, name := range e.lab.Order {
		tok, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Site: name})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.lab.StartEdge(name, e.ctl.GRPCAddr.String(), "--token", tok.Secret, "--ca-hash", tok.CaSha256,
			"--transport", "inet1="+e.lab.Sites[name].Transports[0].Dev); err != nil {
			t.Fatal(err)
		}
	}
	e.waitPing("br1", "hub")
	e.waitPing("hub", "br1")
	t.Logf("spoke behind NAT reaches the hub's LAN and back after %v", time.Since(start).Round(time.Millisecond))
	if got := e.observed("br1", "inet1"); got != natPublic {
		t.Fatalf("controller records %v for br1/inet1, want the NAT's public %s", got, natPublic)
	}
	port := e.expectNATT(natPrivate.Addr(), natPublic)

	// A new public port: the NAT forgets its mappings and maps to other
	// ports from now on.
	e.setNAT(natPublic, "20000-29999")
	d := e.remap("new public port")
	t.Logf("NAT mapping moved to a new public port: LAN-to-LAN recovered after %v", d.Round(time.Millisecond))
	moved := false
	for p := range e.expectNATT(natPrivate.Addr(), natPublic) {
		n, _ := strconv.Atoi(p)
		moved = moved || n >= 20000 && n <= 29999
	}
	if !moved {
		t.Errorf("the hub sends ESP-in-UDP to no port of the NAT's new range 20000-29999 (before the change: %v)", port)
	}

	// A new public address.
	e.setNAT(natPublic2, "")
	d = e.remap("new public address")
	t.Logf("NAT mapping moved to a new public address: LAN-to-LAN recovered after %v", d.Round(time.Millisecond))
	if got := e.observed("br1", "inet1"); got != natPublic2 {
		t.Fatalf("after the NAT moved to %s the controller records %v for br1/inet1", natPublic2, got)
	}
	e.expectNATT(natPrivate.Addr(), natPublic2)
}

// sh runs a command and fails the test on error.
func (e *env) sh(name string, args ...string) string {
	e.t.Helper()
	out, err := lab.Run(e.ctx, name, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// setNAT (re)writes the WAN router's source NAT for the private block:
// to the address to, and for TCP and UDP to ports (a range "FROM-TO", or
// "" to keep the source port when free, as masquerading does).
func (e *env) setNAT(to netip.Addr, ports string) {
	e.t.Helper()
	l4 := to.String()
	if ports != "" {
		l4 += ":" + ports
	}
	e.sh("ip", "netns", "exec", "mw-wan", "nft", fmt.Sprintf(
		"add table ip mwnat; delete table ip mwnat; add table ip mwnat; "+
			"add chain ip mwnat post { type nat hook postrouting priority srcnat; policy accept; }; "+
			"add rule ip mwnat post ip saddr %s meta l4proto { tcp, udp } snat to %s; "+
			"add rule ip mwnat post ip saddr %s snat to %s", natPrivate.Masked(), l4, natPrivate.Masked(), to))
}

// remap flushes the WAN router's connection tracking (every mapping is
// forgotten; the next packet of each flow gets a new one under the
// current rule) and returns how long until br1's LAN reaches the hub's
// LAN and back again, failing beyond recoverBound.
func (e *env) remap(what string) time.Duration {
	e.t.Helper()
	ns, err := netns.GetFromName("mw-wan")
	if err != nil {
		e.t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		e.t.Fatal(err)
	}
	defer h.Close()
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		e.t.Fatalf("flush the NAT's connection tracking: %v", err)
	}
	start := time.Now()
	for {
		n, _ := e.lab.Ping(e.ctx, "br1", "hub", 1)
		if n == 1 {
			if n, _ := e.lab.Ping(e.ctx, "hub", "br1", 1); n == 1 {
				return time.Since(start)
			}
		}
		if time.Since(start) > recoverBound {
			e.t.Fatalf("%s: LAN-to-LAN traffic not back after %v (docs/nat.md states %v)", what, time.Since(start).Round(time.Second), recoverBound)
		}
		for _, s := range e.lab.Order {
			if e.lab.EdgeExited(s) {
				e.t.Fatalf("edge %s exited:\n%s", s, tail(e.lab.EdgeLog(s), 40))
			}
		}
	}
}

// observed is the address the controller records for a dynamic transport.
func (e *env) observed(site, transport string) netip.Addr {
	var a netip.Addr
	e.ctl.Net.Read(func(s *network.Snapshot) { a = s.Observed[site][transport] })
	return a
}

var (
	xfrmEncap = regexp.MustCompile(`(?m)^src (\S+) dst (\S+)\s*\n(?:\s+.*\n)*?\s+encap type espinudp sport (\d+) dport (\d+)`)
	wanUDP    = regexp.MustCompile(`udp (dport|sport) 4500 counter packets (\d+)`)
)

// expectNATT asserts the tunnel runs as ESP in UDP: br1's SAs go between
// its private address and the hub, the hub's between the hub and the
// NAT's public address, all UDP-encapsulated; the WAN router forwards
// ESP-in-UDP on port 4500 and neither clear GRE nor raw ESP. It returns
// the ports the hub sends ESP-in-UDP to (the NAT's public ports).
//
// Until the controller makes the end behind NAT the only initiator
// (topology.Initiator), both ends initiate and may each hold one CHILD_SA
// pair (both carry traffic): at least one pair is required.
func (e *env) expectNATT(private, public netip.Addr) map[string]bool {
	e.t.Helper()
	hub := e.lab.Sites["hub"].WAN
	ends := map[string][2]netip.Addr{"br1": {private, hub}, "hub": {hub, public}}
	deadline := time.Now().Add(converge)
	var ports map[string]bool
	for {
		var problems []string
		ports = map[string]bool{}
		for site, ab := range ends {
			out, err := lab.Run(e.ctx, "ip", "-n", e.lab.Sites[site].NS, "xfrm", "state")
			if err != nil {
				e.t.Fatal(err)
			}
			out2, in := 0, 0
			for _, m := range xfrmEncap.FindAllStringSubmatch(out, -1) {
				switch m[1] + ">" + m[2] {
				case ab[0].String() + ">" + ab[1].String():
					out2++
					if site == "hub" {
						ports[m[4]] = true
					}
				case ab[1].String() + ">" + ab[0].String():
					in++
				}
			}
			if out2 == 0 || in == 0 {
				problems = append(problems, fmt.Sprintf("%s: %d outbound and %d inbound UDP-encapsulated SAs between %s and %s, want at least one each:\n%s", site, out2, in, ab[0], ab[1], out))
			} else if out2 > 1 || in > 1 {
				e.t.Logf("%s: %d outbound and %d inbound SAs between %s and %s (both ends initiated)", site, out2, in, ab[0], ab[1])
			}
		}
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatal(strings.Join(problems, "\n"))
		}
		time.Sleep(time.Second)
	}
	gre, esp, err := e.lab.WANCounters(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	out := e.sh("ip", "netns", "exec", "mw-wan", "nft", "list", "chain", "ip", "mwlab", "counted")
	var udp uint64
	for _, m := range wanUDP.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.ParseUint(m[2], 10, 64)
		udp += n
	}
	if gre != 0 || esp != 0 || udp == 0 {
		e.t.Fatalf("WAN router forwarded %d GRE in clear, %d raw ESP and %d UDP 4500 packets; want 0, 0 and > 0", gre, esp, udp)
	}
	e.t.Logf("WAN router: %d packets on UDP 4500 (ESP in UDP, IKE), 0 raw ESP, 0 GRE in clear; the hub sends to %s ports %v", udp, public, ports)
	return ports
}

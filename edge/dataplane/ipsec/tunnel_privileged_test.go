package ipsec

// End-to-end: two sites in two network namespaces joined by a veth
// "underlay", each with its own link, firewall and ipsec Managers and its
// own supervised charon. Needs kernel GRE and ESP: it skips on the build
// hosts and runs in the VM lab (e2e/vm), e.g.
//
//	go test -c -o /tmp/out/ipsec.test ./edge/dataplane/ipsec
//	e2e/vm/run.sh --out /tmp/out -- /tmp/out/ipsec.test -test.run TunnelEndToEnd -test.v

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/firewall"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/dataplane/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type site struct {
	name    string
	ns      netns.NsHandle
	desired dataplane.Desired
	link    *link.Manager
	fw      *firewall.Manager
	ipsec   *Manager
	charon  *Charon
}

func siteDesired(name, local, remote, inner, peerInner, lan, remoteLAN string, psk []byte) dataplane.Desired {
	return dataplane.Desired{
		Site:        name,
		LANPrefixes: []netip.Prefix{netip.MustParsePrefix(lan)},
		Tunnels: []dataplane.Tunnel{{
			ID:             "a.inet1~b.inet1", // controller/topology.ID form
			LinkName:       "mw-peer",
			LocalUnderlay:  netip.MustParseAddr(local),
			RemoteUnderlay: netip.MustParseAddr(remote),
			LocalInner:     netip.MustParsePrefix(inner),
			RemoteInner:    netip.MustParseAddr(peerInner),
			RemoteLANs:     []netip.Prefix{netip.MustParsePrefix(remoteLAN)},
			PSK:            psk,
		}},
	}
}

// newSitePair builds two sites a (192.0.2.1, LAN 10.2.1.0/24) and b
// (192.0.2.2, LAN 10.1.1.0/24) in two namespaces joined by a veth, each
// with its link, firewall and ipsec Managers and its own charon (stopped
// at the end of the test), and returns them with apply, which applies a
// site's desired state in the owner's order. It skips where the kernel
// has no GRE.
func newSitePair(t *testing.T) (a, b *site, apply func(*site)) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	a = &site{name: "a", ns: netnstest.New(t)}
	b = &site{name: "b", ns: netnstest.New(t)}

	ha, err := kernel.NewNetlinkHandle(a.ns)
	must(t, err)
	t.Cleanup(func() { ha.Close() })
	hb, err := kernel.NewNetlinkHandle(b.ns)
	must(t, err)
	t.Cleanup(func() { hb.Close() })

	// Skip where the kernel has no GRE (the build hosts).
	probe := &netlink.Gretun{LinkAttrs: netlink.NewLinkAttrs(), Local: net.ParseIP("192.0.2.1"), Remote: net.ParseIP("192.0.2.2")}
	probe.Name = "probe"
	if err := ha.LinkAdd(probe); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || strings.Contains(err.Error(), "not supported") {
			t.Skipf("kernel has no GRE (%v): run in the VM lab", err)
		}
		t.Fatal(err)
	}
	must(t, ha.LinkDel(probe))

	// Underlay: veth a:wan0 192.0.2.1/24 <-> b:wan0 192.0.2.2/24; LANs on
	// bridges (a: 10.2.1.1/24, b: 10.1.1.1/24).
	v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "wan0", PeerNamespace: netlink.NsFd(int(b.ns))}
	v.Name = "wan0"
	must(t, ha.LinkAdd(v))
	up := func(h *kernel.NetlinkHandle, name, cidr string) {
		l, err := h.LinkByName(name)
		must(t, err)
		ad, err := netlink.ParseAddr(cidr)
		must(t, err)
		must(t, h.AddrAdd(l, ad))
		must(t, h.LinkSetUp(l))
	}
	lan := func(h *kernel.NetlinkHandle, cidr string) {
		br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
		br.Name = "lan0"
		must(t, h.LinkAdd(br))
		up(h, "lan0", cidr)
	}
	up(ha, "wan0", "192.0.2.1/24")
	up(hb, "wan0", "192.0.2.2/24")
	lan(ha, "10.2.1.1/24")
	lan(hb, "10.1.1.1/24")
	for _, h := range []*kernel.NetlinkHandle{ha, hb} {
		lo, err := h.LinkByName("lo")
		must(t, err)
		must(t, h.LinkSetUp(lo))
	}

	psk := []byte("0123456789abcdef0123456789abcdef")
	a.desired = siteDesired("a", "192.0.2.1", "192.0.2.2", "10.255.0.1/30", "10.255.0.2", "10.2.1.0/24", "10.1.1.0/24", psk)
	b.desired = siteDesired("b", "192.0.2.2", "192.0.2.1", "10.255.0.2/30", "10.255.0.1", "10.1.1.0/24", "10.2.1.0/24", psk)
	for _, s := range []*site{a, b} {
		h := ha
		if s == b {
			h = hb
		}
		s.link = link.NewManager(h, link.Options{})
		fd := int(s.ns)
		s.fw = firewall.NewManager(func() (kernel.NFT, error) { return kernel.NewNFT(fd) }, firewall.Options{})
		s.charon, err = NewCharon(CharonConfig{RunDir: t.TempDir(), NetNS: netnstest.Path(s.ns)})
		must(t, err)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func(c *Charon) { done <- c.Run(cctx) }(s.charon)
		t.Cleanup(func() { cancel(); <-done })
		rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
		must(t, s.charon.WaitReady(rctx))
		rcancel()
		sock := s.charon.SocketPath()
		s.ipsec = NewManager(func(ctx context.Context) (Session, error) { return Dial(ctx, sock) }, Options{})
		t.Cleanup(func() { _ = s.ipsec.Close() })
	}
	apply = func(s *site) {
		t.Helper()
		must(t, s.link.Apply(ctx, s.desired))
		// The routes to the far LAN (the edge's owner plans them; here
		// one static route per remote LAN is all the test needs).
		var routes []kernel.Route
		for _, tn := range s.desired.Tunnels {
			for _, p := range tn.RemoteLANs {
				routes = append(routes, kernel.Route{Dst: p, Via: []netip.Addr{tn.RemoteInner}, Protocol: kernel.ProtoStatic})
			}
		}
		must(t, s.link.ApplyRoutes(ctx, routes))
		must(t, s.fw.Apply(ctx, s.desired))
		must(t, s.ipsec.Apply(ctx, s.desired))
	}
	return a, b, apply
}

// waitStatus polls both sites' ipsec status until ok holds for both, or
// fails after 90 s with what it saw.
func waitStatus(t *testing.T, a, b *site, what string, ok func(Status) bool) (sa, sb Status) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	for {
		la, err := a.ipsec.Status(ctx)
		must(t, err)
		lb, err := b.ipsec.Status(ctx)
		must(t, err)
		if ok(la[0]) && ok(lb[0]) {
			return la[0], lb[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: a %+v, b %+v\ncharon logs: %s %s", what, la[0], lb[0], a.charon.LogPath(), b.charon.LogPath())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestPrivilegedTunnelEndToEnd(t *testing.T) {
	ctx := context.Background()
	a, b, apply := newSitePair(t)
	apply(a)
	apply(b)

	// Wait for an installed transport-mode CHILD_SA on both ends.
	sa, sb := waitStatus(t, a, b, "no installed CHILD_SA", func(s Status) bool { return s.ChildState == ChildInstalled })
	t.Logf("SAs: a %+v, b %+v", sa, sb)

	// UDP over the tunnel: to the peer's inner address, and to its LAN
	// through the static route.
	for _, dst := range []string{"10.255.0.2", "10.1.1.1"} {
		if got := udpOnce(t, a.ns, b.ns, dst); got == "" {
			t.Errorf("UDP to %s over the tunnel did not arrive", dst)
		} else {
			t.Logf("UDP to %s arrived from %s", dst, got)
		}
	}

	la, err := a.link.Status(ctx)
	must(t, err)
	ia, err := a.ipsec.Status(ctx)
	must(t, err)
	ib, err := b.ipsec.Status(ctx)
	must(t, err)
	if la[0].TxPackets == 0 || ia[0].BytesOut == 0 || ib[0].BytesIn == 0 {
		t.Errorf("counters did not rise: link a %+v, ipsec a %+v, ipsec b %+v", la[0], ia[0], ib[0])
	}

	// Idempotence with everything up: no IKE reload, same SA.
	before := ia[0]
	apply(a)
	after, err := a.ipsec.Status(ctx)
	must(t, err)
	if after[0].IKESAs != before.IKESAs || after[0].ChildState != ChildInstalled {
		t.Errorf("re-apply disturbed the SAs: %+v -> %+v", before, after[0])
	}

	for _, s := range []*site{a, b} {
		must(t, s.ipsec.Cleanup(ctx))
		must(t, s.fw.Cleanup(ctx))
		must(t, s.link.Cleanup(ctx))
	}
}

// udpOnce sends one datagram from namespace from to dst:9999, received by
// a socket in namespace to; it returns the source address seen, or "".
func udpOnce(t *testing.T, from, to netns.NsHandle, dst string) string {
	t.Helper()
	var pc net.PacketConn
	must(t, netnstest.Do(to, func() (err error) { pc, err = net.ListenPacket("udp4", dst+":9999"); return }))
	defer pc.Close()
	token := fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	// Retry for a while: with trap policies the first packets may only
	// trigger negotiation.
	for i := 0; i < 20; i++ {
		must(t, netnstest.Do(from, func() error {
			c, err := net.Dial("udp4", dst+":9999")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(token))
			return err
		}))
		_ = pc.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		n, src, err := pc.ReadFrom(buf)
		if err == nil && string(buf[:n]) == token {
			return src.(*net.UDPAddr).IP.String()
		}
	}
	return ""
}

// TestPrivilegedTidyEndsDuplicates: with real charons, both ends of a
// tunnel initiate at once (the active end by its start action or a
// retry, the passive end by its trap policies), repeatedly, and each kind
// of extra IKE_SA that occurs is tidied (both ends holding both, or one
// end holding a stale one whose twin the other destroyed on
// INITIAL_CONTACT; at least one must occur). Each time,
// with traffic both ways and each end's Tidy run every second (as the
// edge's IPsec worker does every status query), one IKE_SA with one
// installed CHILD_SA remains at both ends well before DPD could have
// ended the extra one; then traffic flows.
func TestPrivilegedTidyEndsDuplicates(t *testing.T) {
	ctx := context.Background()
	a, b, apply := newSitePair(t)
	b.desired.Tunnels[0].Passive = true
	// The passive end first: the active end's start_action initiates
	// when its connection loads, and nothing else would retry here (an
	// edge's GRE traffic hits the trap policies).
	apply(b)
	apply(a)
	// Shorter silences than the edge's (3 s and 30 s), in the same order.
	for s, q := range map[*site][2]time.Duration{a: {time.Second, 8 * time.Second}, b: {time.Second, 8 * time.Second}} {
		s.ipsec.activeQuiet, s.ipsec.passiveQuiet = q[0], q[1]
	}
	name := ConnName(a.desired.Tunnels[0].ID)
	single := func(s Status) bool { return s.IKESAs == 1 && s.ChildSAs == 1 && s.ChildState == ChildInstalled }
	waitStatus(t, a, b, "no single installed CHILD_SA", single)
	initiate := func(s *site) {
		if _, err := s.ipsec.request(ctx, "initiate", initiateRequest{Child: ChildName, IKE: name, Timeout: -1, LogLevel: -1}); err != nil {
			t.Error(err)
		}
	}

	// tidy runs traffic both ways and Tidy at both ends every second
	// until one IKE_SA with one installed CHILD_SA is left at both ends.
	tidy := func(kind string) {
		t.Helper()
		tctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tctx.Done():
					return
				case <-tick.C:
					sendUDP(a.ns, "10.1.1.1")
					sendUDP(b.ns, "10.2.1.1")
				}
			}
		}()
		start := time.Now()
		deadline := start.Add(60 * time.Second)
		for {
			time.Sleep(time.Second)
			must(t, a.ipsec.Tidy(ctx))
			must(t, b.ipsec.Tidy(ctx))
			la, err := a.ipsec.Status(ctx)
			must(t, err)
			lb, err := b.ipsec.Status(ctx)
			must(t, err)
			if single(la[0]) && single(lb[0]) {
				t.Logf("%s: one IKE_SA at both ends %v after Tidy started: a %s, b %s", kind, time.Since(start).Round(time.Second), la[0].IKEIDs, lb[0].IKEIDs)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: extra IKE_SAs left after 60 s of Tidy: a %+v, b %+v", kind, la[0], lb[0])
			}
		}
	}

	// Both ends initiate at once, with no SA between them, and every
	// outcome that leaves an extra IKE_SA is tidied the first time it is
	// seen: both ends holding both IKE_SAs, or one end holding a stale one
	// (its twin destroyed on INITIAL_CONTACT). Which one occurs is a
	// matter of timing (the stale one came first in 4 of 6 VM runs on an
	// idle host, never in 16 tries in one CI run), so the test needs at
	// least one and tries up to 12 times to see both.
	const tries = 12
	seen := map[string]bool{}
	for try := 1; try <= tries && len(seen) < 2; try++ {
		a.ipsec.terminate(ctx, name)
		b.ipsec.terminate(ctx, name)
		waitStatus(t, a, b, "SAs not gone", func(s Status) bool { return s.IKESAs == 0 })
		done := make(chan struct{})
		go func() { defer close(done); initiate(b) }()
		initiate(a)
		<-done
		waitStatus(t, a, b, "no CHILD_SA after both initiated", func(s Status) bool { return s.ChildState == ChildInstalled })
		time.Sleep(time.Second) // a second negotiation, if one is under way, finishes
		sa, sb := waitStatus(t, a, b, "no CHILD_SA after both initiated", func(s Status) bool { return s.ChildState == ChildInstalled })
		kind := ""
		switch {
		case sa.IKESAs > 1 && sb.IKESAs > 1:
			kind = "both ends hold both"
		case sa.IKESAs > 1 || sb.IKESAs > 1:
			kind = "a stale IKE_SA at one end"
		}
		t.Logf("try %d: IKE_SAs at a %d (%s), at b %d (%s): %s", try, sa.IKESAs, sa.IKEIDs, sb.IKESAs, sb.IKEIDs, kind)
		if kind == "" || seen[kind] {
			continue
		}
		seen[kind] = true
		tidy(kind)
	}
	if len(seen) == 0 {
		t.Fatalf("%d simultaneous initiations never left an extra IKE_SA", tries)
	}
	t.Logf("outcomes seen and tidied: %v", seen)
	if got := udpOnce(t, a.ns, b.ns, "10.1.1.1"); got == "" {
		t.Fatal("no traffic after the extra IKE_SA was ended")
	}
	for _, s := range []*site{a, b} {
		must(t, s.ipsec.Cleanup(ctx))
		must(t, s.fw.Cleanup(ctx))
		must(t, s.link.Cleanup(ctx))
	}
}

// sendUDP sends one datagram from namespace ns to dst:9999 (nobody need
// listen: the ESP counters are what counts).
func sendUDP(ns netns.NsHandle, dst string) {
	_ = netnstest.Do(ns, func() error {
		c, err := net.Dial("udp4", dst+":9999")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
}

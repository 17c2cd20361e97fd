package firewall

// Privileged tests on the host kernel (nftables, netns and veth work on
// the build hosts; nothing here needs GRE or ESP). Each test builds fresh
// namespaces with netnstest; nftables connections and netlink handles are
// opened on namespace file descriptors, and sockets are created through
// netnstest.Do, so no test thread stays in a namespace.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// recording wraps a kernel.NFT and logs its write calls.
type recording struct {
	kernel.NFT
	mu     sync.Mutex
	writes []string
}

func (r *recording) note(s string) { r.mu.Lock(); r.writes = append(r.writes, s); r.mu.Unlock() }
func (r *recording) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writes
	r.writes = nil
	return w
}
func (r *recording) AddTable(t *nftables.Table) *nftables.Table {
	r.note("AddTable")
	return r.NFT.AddTable(t)
}
func (r *recording) DelTable(t *nftables.Table) { r.note("DelTable"); r.NFT.DelTable(t) }
func (r *recording) AddChain(c *nftables.Chain) *nftables.Chain {
	r.note("AddChain " + c.Name)
	return r.NFT.AddChain(c)
}
func (r *recording) FlushChain(c *nftables.Chain) {
	r.note("FlushChain " + c.Name)
	r.NFT.FlushChain(c)
}
func (r *recording) DelChain(c *nftables.Chain) { r.note("DelChain " + c.Name); r.NFT.DelChain(c) }
func (r *recording) AddSet(s *nftables.Set, v []nftables.SetElement) error {
	r.note("AddSet " + s.Name)
	return r.NFT.AddSet(s, v)
}
func (r *recording) FlushSet(s *nftables.Set) { r.note("FlushSet " + s.Name); r.NFT.FlushSet(s) }
func (r *recording) SetAddElements(s *nftables.Set, v []nftables.SetElement) error {
	r.note("SetAddElements " + s.Name)
	return r.NFT.SetAddElements(s, v)
}
func (r *recording) DelSet(s *nftables.Set) { r.note("DelSet " + s.Name); r.NFT.DelSet(s) }
func (r *recording) AddRule(x *nftables.Rule) *nftables.Rule {
	r.note("AddRule")
	return r.NFT.AddRule(x)
}
func (r *recording) Flush() error { r.note("Flush"); return r.NFT.Flush() }

func labDesired() dataplane.Desired {
	return dataplane.Desired{
		Site:        "a",
		LANPrefixes: []netip.Prefix{pfx("10.2.1.0/24")},
		Tunnels: []dataplane.Tunnel{{
			ID: "t1", LinkName: "mw-lab",
			LocalUnderlay: addr("203.0.113.1"), RemoteUnderlay: addr("203.0.113.2"),
			LocalInner: pfx("10.255.0.1/30"), RemoteInner: addr("10.255.0.2"),
			RemoteLANs: []netip.Prefix{pfx("10.1.1.0/24")},
			PSK:        []byte("0123456789abcdef0123456789abcdef"),
		}},
	}
}

// handles returns the rule handles of our table, to prove "no rewrite".
func handles(t *testing.T, c kernel.NFT) []string {
	t.Helper()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var hs []string
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		rs, err := c.GetRules(table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			hs = append(hs, fmt.Sprintf("%s/%d", ch.Name, r.Handle))
		}
	}
	slices.Sort(hs)
	return hs
}

// TestPrivilegedApplyOnKernel proves on the host kernel: the ruleset is
// accepted (sets, inet nat chain, identity snat, exthdr write, mark);
// reading it back gives exactly the desired shape; a second Apply makes no
// write at all and keeps every rule handle; a change is one batch with one
// Flush; tampering inside our table is repaired; a foreign table is never
// touched; Cleanup removes only our table.
func TestPrivilegedApplyOnKernel(t *testing.T) {
	ctx := context.Background()
	ns := netnstest.New(t)
	rec := &recording{}
	m := NewManager(func() (kernel.NFT, error) {
		c, err := kernel.NewNFT(int(ns))
		rec.NFT = c
		return rec, err
	}, Options{PermitMark: 0x100000})

	// A foreign table that must survive everything.
	other, err := kernel.NewNFT(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	ft := other.AddTable(&nftables.Table{Name: "operator", Family: nftables.TableFamilyINet})
	fc := other.AddChain(&nftables.Chain{Name: "in", Table: ft, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	other.AddRule(&nftables.Rule{Table: ft, Chain: fc, Exprs: []expr.Any{&expr.Counter{}}})
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}

	d := labDesired()
	if err := m.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	w := rec.take()
	if n := count(w, "Flush"); n != 1 {
		t.Errorf("first apply: %d Flushes, want 1: %q", n, w)
	}
	check, _ := kernel.NewNFT(int(ns))
	o, err := observe(check)
	if err != nil {
		t.Fatal(err)
	}
	if want := shapeOf(Build(d, Params{Mark: 0x100000})); o.shape != want {
		t.Fatalf("kernel shape:\n%s\nwant:\n%s", o.shape, want)
	}
	before := handles(t, check)
	if len(before) == 0 {
		t.Fatal("no rules in the kernel")
	}

	if err := m.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if w := rec.take(); len(w) != 0 {
		t.Errorf("second apply wrote: %q", w)
	}
	if after := handles(t, check); !slices.Equal(before, after) {
		t.Errorf("rule handles changed without a change:\n%v\n%v", before, after)
	}

	// A second tunnel: one batch, and the new shape is there.
	d2 := labDesired()
	t2 := d2.Tunnels[0]
	t2.ID, t2.LinkName, t2.RemoteUnderlay = "t2", "mw-lab2", addr("198.51.100.7")
	t2.LocalInner, t2.RemoteInner, t2.RemoteLANs = pfx("10.255.0.5/30"), addr("10.255.0.6"), []netip.Prefix{pfx("10.1.0.0/16")}
	d2.Tunnels = append(d2.Tunnels, t2)
	if err := m.Apply(ctx, d2); err != nil {
		t.Fatal(err)
	}
	if w := rec.take(); count(w, "Flush") != 1 || count(w, "AddChain") != 0 || count(w, "AddTable") != 0 {
		t.Errorf("change writes: %q (want one Flush, chains kept)", w)
	}
	if o, _ := observe(check); o.shape != shapeOf(Build(d2, Params{Mark: 0x100000})) {
		t.Errorf("after change, kernel shape:\n%s", o.shape)
	}

	// Tamper: an operator appends a rule to our forward chain.
	tc, _ := kernel.NewNFT(int(ns))
	tc.AddRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: ChainForward, Table: table},
		Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
	if err := tc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, d2); err != nil {
		t.Fatal(err)
	}
	if w := rec.take(); count(w, "Flush") != 1 {
		t.Errorf("tamper not repaired: %q", w)
	}
	if o, _ := observe(check); o.shape != shapeOf(Build(d2, Params{Mark: 0x100000})) {
		t.Errorf("after repair, kernel shape:\n%s", o.shape)
	}

	// An operator's chain inside our table goes; a deleted chain of ours
	// comes back (DelChain and AddChain in the same single batch).
	tc2, _ := kernel.NewNFT(int(ns))
	tc2.AddChain(&nftables.Chain{Name: "extra", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	mssChain := &nftables.Chain{Name: ChainMSS, Table: table}
	tc2.FlushChain(mssChain)
	tc2.DelChain(mssChain)
	if err := tc2.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, d2); err != nil {
		t.Fatal(err)
	}
	if w := rec.take(); count(w, "Flush") != 1 || count(w, "DelChain extra") != 1 || count(w, "AddChain mss") != 1 {
		t.Errorf("chain repair writes: %q", w)
	}
	if o, _ := observe(check); o.shape != shapeOf(Build(d2, Params{Mark: 0x100000})) {
		t.Errorf("after chain repair, kernel shape:\n%s", o.shape)
	}

	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	tables, err := check.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	if !slices.Equal(names, []string{"operator"}) {
		t.Errorf("tables after cleanup: %v, want only the operator's", names)
	}
	if rs, err := check.GetRules(ft, fc); err != nil || len(rs) != 1 {
		t.Errorf("operator's rule disturbed: %v %v", rs, err)
	}
	if err := m.Cleanup(ctx); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

// count counts entries equal to s, or starting with s + " ".
func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s || strings.HasPrefix(x, s+" ") {
			n++
		}
	}
	return n
}

// lab is a three-namespace network: client A (a LAN host), router R (the
// edge, where meshwan's table goes) and server B (the far side).
//
//	A eth0 10.2.1.2/24 -- lan0 10.2.1.1/24  R  wan0 203.0.113.1/24 -- eth0 203.0.113.2/24, 10.1.1.2/24, 198.51.100.2/24  B
//	                                         R  mw-lab 10.255.0.1/30 -- eth1 10.255.0.2/30, 10.1.2.2/24                 B
//
// R routes 10.1.1.0/24 and 198.51.100.0/24 out wan0 and 10.1.2.0/24 out
// mw-lab (a veth standing in for a GRE link: the firewall only sees its
// name). The operator's own table masquerades everything from the LAN.
type lab struct {
	a, r, b netns.NsHandle
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{a: netnstest.New(t), r: netnstest.New(t), b: netnstest.New(t)}
	h := func(ns netns.NsHandle) *netlink.Handle {
		x, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(x.Close)
		return x
	}
	ha, hr, hb := h(l.a), h(l.r), h(l.b)
	veth := func(name, peer string, peerNS netns.NsHandle) {
		v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: peer, PeerNamespace: netlink.NsFd(int(peerNS))}
		v.Name = name
		if err := hr.LinkAdd(v); err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
	}
	veth("lan0", "eth0", l.a)
	veth("wan0", "eth0", l.b)
	veth("mw-lab", "eth1", l.b)
	up := func(x *netlink.Handle, dev string, addrs ...string) {
		lk, err := x.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range addrs {
			a, err := netlink.ParseAddr(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := x.AddrAdd(lk, a); err != nil {
				t.Fatalf("%s %s: %v", dev, s, err)
			}
		}
		if err := x.LinkSetUp(lk); err != nil {
			t.Fatal(err)
		}
	}
	up(ha, "lo")
	up(hr, "lo")
	up(hb, "lo")
	up(ha, "eth0", "10.2.1.2/24")
	up(hr, "lan0", "10.2.1.1/24")
	up(hr, "wan0", "203.0.113.1/24")
	up(hr, "mw-lab", "10.255.0.1/30")
	up(hb, "eth0", "203.0.113.2/24", "10.1.1.2/24", "198.51.100.2/24")
	up(hb, "eth1", "10.255.0.2/30", "10.1.2.2/24")
	route := func(x *netlink.Handle, dst, gw string) {
		_, n, _ := net.ParseCIDR(dst)
		if err := x.RouteAdd(&netlink.Route{Dst: n, Gw: net.ParseIP(gw)}); err != nil {
			t.Fatalf("route %s via %s: %v", dst, gw, err)
		}
	}
	route(ha, "0.0.0.0/0", "10.2.1.1")
	route(hr, "10.1.1.0/24", "203.0.113.2")
	route(hr, "198.51.100.0/24", "203.0.113.2")
	route(hr, "10.1.2.0/24", "10.255.0.2")
	route(hb, "10.2.1.0/24", "10.255.0.1")
	for _, kv := range [][3]any{{l.r, "net/ipv4/ip_forward", "1"}, {l.b, "net/ipv4/conf/all/rp_filter", "0"}, {l.b, "net/ipv4/conf/default/rp_filter", "0"}} {
		if err := netnstest.Sysctl(kv[0].(netns.NsHandle), kv[1].(string), kv[2].(string)); err != nil {
			t.Fatal(err)
		}
	}
	for _, dev := range []string{"eth0", "eth1"} {
		if err := netnstest.Sysctl(l.b, "net/ipv4/conf/"+dev+"/rp_filter", "0"); err != nil {
			t.Fatal(err)
		}
	}

	// The operator's masquerade: table ip opnat, postrouting at srcnat,
	// `ip saddr 10.2.1.0/24 masquerade` (no interface condition).
	c, err := kernel.NewNFT(int(l.r))
	if err != nil {
		t.Fatal(err)
	}
	tb := c.AddTable(&nftables.Table{Name: "opnat", Family: nftables.TableFamilyIPv4})
	ch := c.AddChain(&nftables.Chain{Name: "post", Table: tb, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 255, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 2, 1, 0}},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

// udpSource sends one datagram from A to dst:9999 and returns the source
// address B saw, or "" if nothing arrived within the timeout.
func (l *lab) udpSource(t *testing.T, dst string) string {
	t.Helper()
	var pc net.PacketConn
	if err := netnstest.Do(l.b, func() (err error) { pc, err = net.ListenPacket("udp4", dst+":9999"); return }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	token := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	if err := netnstest.Do(l.a, func() error {
		c, err := net.Dial("udp4", dst+":9999")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(token))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return ""
		}
		if string(buf[:n]) == token {
			return from.(*net.UDPAddr).IP.String()
		}
	}
}

// tcpMSS opens a TCP connection from A to dst:8080 and returns the MSS of
// B's accepted socket (TCP_MAXSEG), which the SYN's MSS option bounds.
func (l *lab) tcpMSS(t *testing.T, dst string) int {
	t.Helper()
	var ln net.Listener
	if err := netnstest.Do(l.b, func() (err error) { ln, err = net.Listen("tcp4", dst+":8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	if err := netnstest.Do(l.a, func() (err error) { c, err = net.DialTimeout("tcp4", dst+":8080", 3*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw, err := s.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var serr error
	if err := raw.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil || serr != nil {
		t.Fatal(errors.Join(err, serr))
	}
	return mss
}

// TestPrivilegedNATAndMSS proves the firewall's behaviour with real
// packets through a real router namespace:
//  1. control: an `accept` in a nat chain at srcnat-10 does NOT stop the
//     operator's masquerade at srcnat (the kernel semantics the package
//     comment relies on);
//  2. with meshwan's table: LAN -> remote LAN keeps its source even when
//     routed out the WAN, traffic out a "mw-" link keeps its source, and
//     other LAN traffic is still masqueraded by the operator's rule;
//  3. the MSS of a TCP connection through the "mw-" link is clamped to
//     MTU-40 (1360) where it was 1460-class before.
func TestPrivilegedNATAndMSS(t *testing.T) {
	ctx := context.Background()
	l := newLab(t)

	// 1. Control with an accept-only exemption.
	c, err := kernel.NewNFT(int(l.r))
	if err != nil {
		t.Fatal(err)
	}
	at := c.AddTable(&nftables.Table{Name: "acceptonly", Family: nftables.TableFamilyIPv4})
	ac := c.AddChain(&nftables.Chain{Name: "post", Table: at, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(PriorityNAT)})
	c.AddRule(&nftables.Rule{Table: at, Chain: ac, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 3},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 1, 1}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := l.udpSource(t, "10.1.1.2"); got != "203.0.113.1" {
		t.Fatalf("control: with only an accept at srcnat-10, B saw source %q; want the masqueraded 203.0.113.1", got)
	}
	mssBefore := l.tcpMSS(t, "10.1.2.2")
	c.DelTable(at)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	// 2. meshwan's table.
	m := NewManager(func() (kernel.NFT, error) { return kernel.NewNFT(int(l.r)) }, Options{})
	if err := m.Apply(ctx, labDesired()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dst, want, why string }{
		{"10.1.1.2", "10.2.1.2", "LAN -> remote LAN out the WAN keeps its source"},
		{"10.1.2.2", "10.2.1.2", "traffic out a mw- link keeps its source"},
		{"198.51.100.2", "203.0.113.1", "other LAN traffic is still masqueraded"},
	} {
		if got := l.udpSource(t, tc.dst); got != tc.want {
			t.Errorf("%s: to %s B saw source %q, want %q", tc.why, tc.dst, got, tc.want)
		}
	}

	// 3. MSS clamp through mw-lab (veth MTU 1500: 1448 with timestamps).
	mssAfter := l.tcpMSS(t, "10.1.2.2")
	if mssBefore <= 1360 || mssAfter > 1360 {
		t.Errorf("MSS before %d (want > 1360), after %d (want <= 1360)", mssBefore, mssAfter)
	}
	t.Logf("MSS through mw-lab: %d without meshwan, %d with the clamp", mssBefore, mssAfter)
}

// TestPrivilegedPermitMark proves the cooperation path for operators with
// a drop-policy forward chain: it drops LAN -> tunnel traffic unless
// PermitMark is set and their chain accepts that mark.
func TestPrivilegedPermitMark(t *testing.T) {
	ctx := context.Background()
	l := newLab(t)
	const mark = 0x100000
	c, err := kernel.NewNFT(int(l.r))
	if err != nil {
		t.Fatal(err)
	}
	ft := c.AddTable(&nftables.Table{Name: "opfilter", Family: nftables.TableFamilyINet})
	drop := nftables.ChainPolicyDrop
	fc := c.AddChain(&nftables.Chain{Name: "fwd", Table: ft, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	c.AddRule(&nftables.Rule{Table: ft, Chain: fc, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32ne(mark), Xor: u32ne(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: u32ne(mark)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	unmarked := NewManager(func() (kernel.NFT, error) { return kernel.NewNFT(int(l.r)) }, Options{})
	if err := unmarked.Apply(ctx, labDesired()); err != nil {
		t.Fatal(err)
	}
	if got := l.udpSource(t, "10.1.2.2"); got != "" {
		t.Errorf("without PermitMark the operator's drop policy should win; B saw %q", got)
	}
	marked := NewManager(func() (kernel.NFT, error) { return kernel.NewNFT(int(l.r)) }, Options{PermitMark: mark})
	if err := marked.Apply(ctx, labDesired()); err != nil {
		t.Fatal(err)
	}
	if got := l.udpSource(t, "10.1.2.2"); got != "10.2.1.2" {
		t.Errorf("with PermitMark and the operator's mark rule, B saw %q, want 10.2.1.2", got)
	}
}

func u32ne(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// TestPrivilegedTunnelTrafficIsUntracked proves on the kernel that the
// untracked chains keep the tunnel's packets out of connection tracking
// without weakening the SNAT exemption: LAN -> remote LAN traffic (routed
// out the WAN here, as a tunnel would carry it) and ESP to a peer leave
// no conntrack entry and keep their source under the operator's
// masquerade; other LAN traffic is still tracked and masqueraded.
func TestPrivilegedTunnelTrafficIsUntracked(t *testing.T) {
	ctx := context.Background()
	l := newLab(t)
	m := NewManager(func() (kernel.NFT, error) { return kernel.NewNFT(int(l.r)) }, Options{})
	if err := m.Apply(ctx, labDesired()); err != nil {
		t.Fatal(err)
	}
	if got := l.udpSource(t, "10.1.1.2"); got != "10.2.1.2" {
		t.Errorf("LAN -> remote LAN: B saw source %q, want 10.2.1.2 (not masqueraded)", got)
	}
	if got := l.udpSource(t, "198.51.100.2"); got != "203.0.113.1" {
		t.Errorf("other LAN traffic: B saw source %q, want the masqueraded 203.0.113.1", got)
	}
	// ESP from the edge itself to the peer's underlay address (a raw
	// socket: the host kernel has no ESP to make real SAs).
	if err := netnstest.Do(l.r, func() error {
		c, err := net.Dial("ip4:50", "203.0.113.2")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, 32))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hr, err := netlink.NewHandleAt(l.r)
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Close()
	flows, err := hr.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var other bool
	for _, f := range flows {
		dst := f.Forward.DstIP.String()
		switch {
		case dst == "10.1.1.2":
			t.Errorf("LAN -> remote LAN flow tracked: %s", f)
		case dst == "203.0.113.2" && f.Forward.Protocol == unix.IPPROTO_ESP:
			t.Errorf("ESP to the peer tracked: %s", f)
		case dst == "198.51.100.2":
			other = true
		}
	}
	if !other {
		t.Errorf("the masqueraded flow to 198.51.100.2 is not tracked (conntrack lists %d flows): is conntrack on at all?", len(flows))
	}
}

// TestPrivilegedGREGuard proves the fail-closed guarantee on the kernel:
// GRE from the edge to a peer's underlay address that no IPsec policy
// covers ("rt ipsec missing") is dropped before it leaves, and counted;
// GRE to an address that is not a peer's passes (the guard only ever
// matches meshwan's own GRE). Raw sockets stand in for a GRE link, so it
// runs without the GRE module.
func TestPrivilegedGREGuard(t *testing.T) {
	ctx := context.Background()
	l := newLab(t)
	m := NewManager(func() (kernel.NFT, error) { return kernel.NewNFT(int(l.r)) }, Options{})
	if err := m.Apply(ctx, labDesired()); err != nil {
		t.Fatal(err)
	}
	// B listens for GRE on every address.
	var rx net.PacketConn
	if err := netnstest.Do(l.b, func() (err error) {
		rx, err = net.ListenPacket("ip4:47", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	send := func(dst string) error {
		return netnstest.Do(l.r, func() error {
			c, err := net.Dial("ip4:47", dst)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte{0, 0, 0x08, 0, 'm', 'w'}) // GRE header, IPv4 payload type
			return err
		})
	}
	received := func() []string {
		var from []string
		buf := make([]byte, 1500)
		for {
			rx.SetReadDeadline(time.Now().Add(time.Second))
			_, a, err := rx.ReadFrom(buf)
			if err != nil {
				return from
			}
			from = append(from, a.String())
		}
	}
	// To the peer: dropped on output (a raw socket sees EPERM).
	if err := send("203.0.113.2"); err != nil && !errors.Is(err, unix.EPERM) {
		t.Fatalf("GRE to the peer: %v", err)
	}
	if got := received(); len(got) != 0 {
		t.Errorf("GRE to the peer without IPsec left the edge: B received %d packets", len(got))
	}
	if n := ruleCounter(t, l.r, "gre-needs-ipsec"); n != 1 {
		t.Errorf("guard counter %d, want 1", n)
	}
	// To a non-peer: untouched (and the listener works).
	if err := send("198.51.100.2"); err != nil {
		t.Fatalf("GRE to a non-peer: %v", err)
	}
	if got := received(); len(got) != 1 {
		t.Errorf("GRE to a non-peer: B received %d packets, want 1", len(got))
	}
}

// ruleCounter returns the packet counter of the meshwan rule labelled
// label in ns.
func ruleCounter(t *testing.T, ns netns.NsHandle, label string) uint64 {
	t.Helper()
	c, err := kernel.NewNFT(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		rs, err := c.GetRules(table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if !strings.HasPrefix(kernel.RuleComment(r), "mw:"+label+" ") {
				continue
			}
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					return ctr.Packets
				}
			}
		}
	}
	t.Fatalf("no counted rule mw:%s", label)
	return 0
}

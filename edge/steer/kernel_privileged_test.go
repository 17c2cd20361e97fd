package steer

// Privileged tests on the host kernel: netns, veth, nftables (including a
// type route chain) and policy routing, no GRE (veths named like tunnel
// links stand in). Each test builds fresh namespaces with netnstest;
// netlink handles and nftables connections are opened on namespace file
// descriptors, and sockets are created through netnstest.Do, so no test
// thread is ever left inside a namespace. They skip cleanly without root.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
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

// writeLog records write calls, in order, across the recording wrappers.
type writeLog struct {
	mu sync.Mutex
	w  []string
}

func (l *writeLog) note(s string) { l.mu.Lock(); l.w = append(l.w, s); l.mu.Unlock() }
func (l *writeLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.w
	l.w = nil
	return w
}

// recNL wraps a Netlink and records its write calls.
type recNL struct {
	kernel.Netlink
	log *writeLog
}

func (r recNL) RuleAdd(x *netlink.Rule) error {
	r.log.note(fmt.Sprintf("RuleAdd %d", x.Priority))
	return r.Netlink.RuleAdd(x)
}
func (r recNL) RuleDel(x *netlink.Rule) error {
	r.log.note(fmt.Sprintf("RuleDel %d", x.Priority))
	return r.Netlink.RuleDel(x)
}
func (r recNL) RouteReplace(x *netlink.Route) error {
	r.log.note(fmt.Sprintf("RouteReplace %d %v", x.Table, x.Dst))
	return r.Netlink.RouteReplace(x)
}
func (r recNL) RouteDel(x *netlink.Route) error {
	r.log.note(fmt.Sprintf("RouteDel %d %v", x.Table, x.Dst))
	return r.Netlink.RouteDel(x)
}

// recNFT wraps an NFT and records its write calls.
type recNFT struct {
	kernel.NFT
	log *writeLog
}

func (r recNFT) AddTable(t *nftables.Table) *nftables.Table {
	r.log.note("AddTable")
	return r.NFT.AddTable(t)
}
func (r recNFT) DelTable(t *nftables.Table) { r.log.note("DelTable"); r.NFT.DelTable(t) }
func (r recNFT) AddChain(c *nftables.Chain) *nftables.Chain {
	r.log.note("AddChain " + c.Name)
	return r.NFT.AddChain(c)
}
func (r recNFT) FlushChain(c *nftables.Chain) {
	r.log.note("FlushChain " + c.Name)
	r.NFT.FlushChain(c)
}
func (r recNFT) DelChain(c *nftables.Chain) { r.log.note("DelChain " + c.Name); r.NFT.DelChain(c) }
func (r recNFT) AddSet(s *nftables.Set, v []nftables.SetElement) error {
	r.log.note("AddSet")
	return r.NFT.AddSet(s, v)
}
func (r recNFT) DelSet(s *nftables.Set) { r.log.note("DelSet " + s.Name); r.NFT.DelSet(s) }
func (r recNFT) AddRule(x *nftables.Rule) *nftables.Rule {
	r.log.note("AddRule " + x.Chain.Name)
	return r.NFT.AddRule(x)
}
func (r recNFT) InsertRule(x *nftables.Rule) *nftables.Rule {
	r.log.note("InsertRule " + x.Chain.Name)
	return r.NFT.InsertRule(x)
}
func (r recNFT) DelRule(x *nftables.Rule) error {
	r.log.note("DelRule " + x.Chain.Name)
	return r.NFT.DelRule(x)
}
func (r recNFT) Flush() error { r.log.note("Flush"); return r.NFT.Flush() }

// steerLab is five namespaces: a LAN host, the edge, and three far ends.
//
//	lan eth0 10.2.1.2/24 -- lan0 10.2.1.1/24  EDGE  mw-p1 10.255.0.1/30 -- eth0 10.255.0.2/30  p1
//	                                           EDGE  mw-p2 10.255.0.5/30 -- eth0 10.255.0.6/30  p2
//	                                           EDGE  wan0  10.255.0.9/30 -- eth0 10.255.0.10/30 p3
//
// p1, p2 and p3 all own 10.9.0.1 (the remote LAN, an overlay destination)
// and 10.8.0.1 (somewhere else) on their loopback and listen on UDP ports
// 5004-5007; which of them receives a datagram tells which way the edge
// sent it. mw-p1 and mw-p2 stand in for the two tunnels to site b; the
// edge's main table sends 10.9.0.0/24 and 10.8.0.0/24 to p3, so "followed
// the main table" is visible as "arrived at p3".
type steerLab struct {
	lan, edge     netns.NsHandle
	far           map[string]netns.NsHandle
	nl            *kernel.NetlinkHandle // the edge's
	arrivals      chan arrival
	wg            sync.WaitGroup
	mu            sync.Mutex
	conns         []net.PacketConn
	writes        *writeLog
	kernel        *Kernel
	steer         *Steerer
	classes       []dataplane.TrafficClass
	desired       dataplane.Desired
	farPathLookup map[string]string
}

type arrival struct{ path, token string }

var labPorts = []int{5004, 5005, 5006, 5007}

func newSteerLab(t *testing.T) *steerLab {
	t.Helper()
	l := &steerLab{lan: netnstest.New(t), edge: netnstest.New(t), far: map[string]netns.NsHandle{},
		arrivals: make(chan arrival, 64), writes: &writeLog{}}
	for _, p := range []string{"p1", "p2", "p3"} {
		l.far[p] = netnstest.New(t)
	}
	h := func(ns netns.NsHandle) *netlink.Handle {
		x, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(x.Close)
		return x
	}
	edge, err := kernel.NewNetlinkHandle(l.edge)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(edge.Close)
	l.nl = edge
	veth := func(name, peer string, peerNS netns.NsHandle) {
		v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: peer, PeerNamespace: netlink.NsFd(int(peerNS))}
		v.Name = name
		if err := l.nl.LinkAdd(v); err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
	}
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
	route := func(x *netlink.Handle, dst, gw string) {
		_, n, _ := net.ParseCIDR(dst)
		if err := x.RouteAdd(&netlink.Route{Dst: n, Gw: net.ParseIP(gw)}); err != nil {
			t.Fatalf("route %s via %s: %v", dst, gw, err)
		}
	}
	veth("lan0", "eth0", l.lan)
	hl := h(l.lan)
	up(hl, "lo")
	up(hl, "eth0", "10.2.1.2/24")
	route(hl, "0.0.0.0/0", "10.2.1.1")
	up(l.nl.Handle, "lo")
	up(l.nl.Handle, "lan0", "10.2.1.1/24")
	for i, p := range []string{"p1", "p2", "p3"} {
		edgeName := "mw-" + p
		if p == "p3" {
			edgeName = "wan0"
		}
		veth(edgeName, "eth0", l.far[p])
		up(l.nl.Handle, edgeName, fmt.Sprintf("10.255.0.%d/30", 4*i+1))
		hp := h(l.far[p])
		up(hp, "lo", "10.9.0.1/32", "10.8.0.1/32")
		up(hp, "eth0", fmt.Sprintf("10.255.0.%d/30", 4*i+2))
		// rp_filter off on the far ends: locally originated steered
		// packets keep the source address of their first route (see
		// docs/steering.md on rp_filter).
		for _, k := range []string{"all", "default", "eth0"} {
			if err := netnstest.Sysctl(l.far[p], "net/ipv4/conf/"+k+"/rp_filter", "0"); err != nil {
				t.Fatal(err)
			}
		}
		for _, port := range labPorts {
			var pc net.PacketConn
			if err := netnstest.Do(l.far[p], func() (err error) {
				pc, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
				return
			}); err != nil {
				t.Fatal(err)
			}
			l.conns = append(l.conns, pc)
			l.wg.Add(1)
			go func(path string) {
				defer l.wg.Done()
				buf := make([]byte, 128)
				for {
					n, _, err := pc.ReadFrom(buf)
					if err != nil {
						return // closed at cleanup
					}
					l.arrivals <- arrival{path: path, token: string(buf[:n])}
				}
			}(p)
		}
	}
	t.Cleanup(func() {
		for _, c := range l.conns {
			c.Close()
		}
		l.wg.Wait()
	})
	route(l.nl.Handle, "10.9.0.0/24", "10.255.0.10")
	route(l.nl.Handle, "10.8.0.0/24", "10.255.0.10")
	if err := netnstest.Sysctl(l.edge, "net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}

	k, err := NewKernel(KernelOptions{
		Netlink: recNL{Netlink: l.nl, log: l.writes},
		NFT: func() (kernel.NFT, error) {
			c, err := kernel.NewNFT(int(l.edge))
			return recNFT{NFT: c, log: l.writes}, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	l.kernel = k
	l.steer = New()
	l.desired = dataplane.Desired{
		Site: "a",
		Tunnels: []dataplane.Tunnel{
			{ID: "t1", LinkName: "mw-p1", RemoteInner: netip.MustParseAddr("10.255.0.2"), RemoteSite: "b",
				LocalTransport: "inet1", RemoteTransport: "inet1", RemoteLANs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}},
			{ID: "t2", LinkName: "mw-p2", RemoteInner: netip.MustParseAddr("10.255.0.6"), RemoteSite: "b",
				LocalTransport: "inet2", RemoteTransport: "inet2", RemoteLANs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}},
		},
		Paths: dataplane.PathPolicy{
			SLAs: []dataplane.SLA{
				{Name: "realtime", MaxRTT: 100 * time.Millisecond, MaxLossPct: 1, Transports: []string{"inet2", "inet1"}},
				{Name: "bulk", Transports: []string{"inet1", "inet2"}},
			},
			Classes: []dataplane.TrafficClass{
				{Name: "voice", SLA: "realtime", Protocol: "udp", Ports: []dataplane.PortRange{{From: 5004, To: 5004}}},
				{Name: "backup", SLA: "bulk", Protocol: "udp", Ports: []dataplane.PortRange{{From: 5006, To: 5006}}},
				{Name: "ef", SLA: "realtime", DSCP: []uint8{46, 34}, Destinations: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}},
			},
		},
	}
	return l
}

// apply decides with health and applies; it returns the plan's choices.
func (l *steerLab) apply(t *testing.T, health map[string]Health) []Choice {
	t.Helper()
	p := l.steer.Decide(time.Unix(1000, 0), l.desired, DestsFromDesired(l.desired), health)
	if err := l.kernel.Apply(context.Background(), l.desired.Paths.Classes, p); err != nil {
		t.Fatal(err)
	}
	return p.Choices
}

// send sends one UDP datagram with DSCP dscp from ns to dst:port and
// returns the far end ("p1", "p2", "p3") that received it, or "" if none
// did within 3 s.
func (l *steerLab) send(t *testing.T, ns netns.NsHandle, dst string, port int, dscp int) string {
	t.Helper()
	token := fmt.Sprintf("%s:%d@%d", dst, port, time.Now().UnixNano())
	if err := netnstest.Do(ns, func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(dst, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		raw, err := c.(*net.UDPConn).SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, dscp<<2) }); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		_, err = c.Write([]byte(token))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(3 * time.Second)
	for {
		select {
		case a := <-l.arrivals:
			if a.token == token {
				return a.path
			}
		case <-timeout:
			return ""
		}
	}
}

type flow struct {
	from string // "lan" or "edge" (locally originated)
	dst  string
	port int
	dscp int
	want string
	why  string
}

func (l *steerLab) check(t *testing.T, stage string, flows []flow) {
	t.Helper()
	for _, f := range flows {
		ns := l.lan
		if f.from == "edge" {
			ns = l.edge
		}
		if got := l.send(t, ns, f.dst, f.port, f.dscp); got != f.want {
			t.Errorf("%s: %s -> %s:%d dscp %d arrived at %q, want %q (%s)", stage, f.from, f.dst, f.port, f.dscp, got, f.want, f.why)
		}
	}
}

// nftHandles returns "chain/handle comment" of our rules.
func nftHandles(t *testing.T, ns netns.NsHandle) []string {
	t.Helper()
	c, err := kernel.NewNFT(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	o, err := observeNFT(c)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range o.chains {
		for i, r := range ch.rules {
			out = append(out, fmt.Sprintf("%s/%d %s", ch.chain.Name, r.Handle, ch.comments[i]))
		}
	}
	slices.Sort(out)
	return out
}

// kernelText prints our ip rules and routes in the edge namespace.
func kernelText(t *testing.T, h kernel.Netlink) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, lk := range links {
		names[lk.Attrs().Index] = lk.Attrs().Name
	}
	var lines []string
	rules, err := h.RuleListFiltered(netlink.FAMILY_V4, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Protocol == kernel.ProtoSteer {
			lines = append(lines, "rule "+strings.TrimSuffix(kernel.RuleText(r), " proto 242"))
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: kernel.ProtoSteer},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		lines = append(lines, fmt.Sprintf("route table %d %v via %v dev %s", r.Table, r.Dst, r.Gw, names[r.LinkIndex]))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// nftList logs `nft list table inet meshwan_steer` from the edge
// namespace when nsenter and nft exist, and fails if nft cannot render
// what we wrote. It is a view for humans; the assertions use netlink.
func nftList(t *testing.T, ns netns.NsHandle) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Log("nft not installed; skipping the nft view")
		return ""
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Log("nsenter not installed; skipping the nft view")
		return ""
	}
	out, err := exec.Command("nsenter", "--net="+netnstest.Path(ns), "nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	return string(out)
}

// TestPrivilegedSteering proves with real packets through a real edge
// namespace:
//   - a class's packets leave through the tunnel the plan chose for it,
//     forwarded from the LAN and originated on the edge itself;
//   - unclassified packets, and classified packets to a non-overlay
//     destination, follow the main table (the class table has no route
//     and the kernel falls through to the next rule);
//   - the marks keep other mark bits (a foreign table's 0x00100000);
//   - a second Apply writes nothing and keeps every nft rule handle;
//   - failover moves a class with one route replace and no nft write; a
//     class with no usable tunnel follows the main table;
//   - changing one class rewrites only that class's rules;
//   - Cleanup removes everything of ours and nothing else.
func TestPrivilegedSteering(t *testing.T) {
	l := newSteerLab(t)
	ctx := context.Background()

	// A foreign table: sets bit 0x00100000 on voice packets before our
	// chain runs, and counts packets whose mark is then exactly voice's
	// class mark plus that bit.
	fc, err := kernel.NewNFT(int(l.edge))
	if err != nil {
		t.Fatal(err)
	}
	ft := fc.AddTable(&nftables.Table{Name: "operator", Family: nftables.TableFamilyINet})
	pre := fc.AddChain(&nftables.Chain{Name: "pre", Table: ft, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200)})
	fc.AddRule(&nftables.Rule{Table: ft, Chain: pre, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(5004)},
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(0x00100000)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}})
	post := fc.AddChain(&nftables.Chain{Name: "post", Table: ft, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-100)})
	fc.AddRule(&nftables.Rule{Table: ft, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0x01100000)},
		&expr.Counter{},
	}})
	if err := fc.Flush(); err != nil {
		t.Fatal(err)
	}

	good := Health{Usable: true, RTT: 20 * time.Millisecond}
	choices := l.apply(t, map[string]Health{"t1": good, "t2": good})
	if got, want := fmt.Sprint(choices), "[{voice b t2 true} {backup b t1 true} {ef b t2 true}]"; got != want {
		t.Fatalf("choices %s, want %s", got, want)
	}
	wantKernel := `route table 7401 10.9.0.0/24 via 10.255.0.6 dev mw-p2
route table 7402 10.9.0.0/24 via 10.255.0.2 dev mw-p1
route table 7403 10.9.0.0/24 via 10.255.0.6 dev mw-p2
rule pref 7401 fwmark 0x1000000/0x7f000000 lookup 7401
rule pref 7402 fwmark 0x2000000/0x7f000000 lookup 7402
rule pref 7403 fwmark 0x3000000/0x7f000000 lookup 7403`
	if got := kernelText(t, l.nl); got != wantKernel {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, wantKernel)
	}
	if out := nftList(t, l.edge); out != "" {
		t.Logf("nft list table inet %s:\n%s", TableName, out)
		for _, s := range []string{"udp dport", "5004", "meta mark set", "steer:voice", "ip dscp ef", "ip dscp af41", "ip daddr { 10.9.0.0/16 }"} {
			if !strings.Contains(out, s) {
				t.Errorf("nft list lacks %q", s)
			}
		}
	}
	l.check(t, "voice on t2", []flow{
		{"lan", "10.9.0.1", 5004, 0, "p2", "voice is steered to its tunnel t2"},
		{"lan", "10.9.0.1", 5006, 0, "p1", "backup is steered to its tunnel t1"},
		{"lan", "10.9.0.1", 5005, 0, "p3", "unclassified follows the main table"},
		{"lan", "10.8.0.1", 5004, 0, "p3", "voice to a non-overlay destination falls through to main"},
		{"edge", "10.9.0.1", 5004, 0, "p2", "locally originated voice is steered (output route chain)"},
		{"edge", "10.9.0.1", 5005, 0, "p3", "locally originated unclassified follows main"},
		{"lan", "10.9.0.1", 5005, 46, "p2", "DSCP EF to 10.9.0.0/16 is class ef"},
		{"lan", "10.9.0.1", 5005, 34, "p2", "DSCP AF41 to 10.9.0.0/16 is class ef"},
		{"lan", "10.9.0.1", 5005, 10, "p3", "another DSCP is unclassified"},
		{"lan", "10.8.0.1", 5005, 46, "p3", "DSCP EF outside ef's destinations is unclassified"},
		{"lan", "10.9.0.1", 5006, 46, "p1", "backup's rule comes first: first match wins"},
	})
	rs, err := fc.GetRules(ft, post)
	if err != nil || len(rs) != 1 {
		t.Fatalf("operator rules: %v %v", rs, err)
	}
	if n := counterOf(rs[0]); n == 0 {
		t.Error("no forwarded voice packet carried mark 0x01100000: the class mark clobbered or missed the foreign bit")
	}

	// Idempotence on the kernel.
	handles := nftHandles(t, l.edge)
	l.writes.take()
	l.apply(t, map[string]Health{"t1": good, "t2": good})
	if w := l.writes.take(); len(w) != 0 {
		t.Errorf("second apply wrote: %q", w)
	}
	if h := nftHandles(t, l.edge); !slices.Equal(h, handles) {
		t.Errorf("nft rule handles changed without a change:\n%v\n%v", handles, h)
	}
	if got := kernelText(t, l.nl); got != wantKernel {
		t.Errorf("after second apply:\n%s", got)
	}

	// t2 goes down: voice fails over to t1 at once, one route replace.
	choices = l.apply(t, map[string]Health{"t1": good, "t2": {}})
	if got, want := fmt.Sprint(choices), "[{voice b t1 true} {backup b t1 true} {ef b t1 true}]"; got != want {
		t.Errorf("choices %s, want %s", got, want)
	}
	if w := l.writes.take(); !slices.Equal(w, []string{"RouteReplace 7401 10.9.0.0/24", "RouteReplace 7403 10.9.0.0/24"}) {
		t.Errorf("failover writes %q, want two route replaces", w)
	}
	l.check(t, "t2 down", []flow{
		{"lan", "10.9.0.1", 5004, 0, "p1", "voice failed over to t1"},
		{"lan", "10.9.0.1", 5005, 46, "p1", "ef failed over to t1"},
		{"lan", "10.9.0.1", 5005, 0, "p3", "unclassified still follows main"},
	})

	// Both down: no choice, empty tables, everything follows main.
	choices = l.apply(t, map[string]Health{})
	if got, want := fmt.Sprint(choices), "[{voice b  false} {backup b  false} {ef b  false}]"; got != want {
		t.Errorf("choices %s, want %s", got, want)
	}
	if w := l.writes.take(); len(w) != 3 || count(w, "RouteDel") != 3 {
		t.Errorf("writes %q, want three route deletions", w)
	}
	l.check(t, "all down", []flow{
		{"lan", "10.9.0.1", 5004, 0, "p3", "voice without a usable tunnel follows main"},
		{"lan", "10.9.0.1", 5006, 0, "p3", "backup without a usable tunnel follows main"},
	})

	// Back up; then change backup's port: only backup's two rules (one
	// per chain) are replaced, voice's keep their handles.
	l.apply(t, map[string]Health{"t1": good, "t2": good})
	l.writes.take()
	voiceBefore := filterContains(nftHandles(t, l.edge), "steer:voice")
	l.desired.Paths.Classes[1].Ports = []dataplane.PortRange{{From: 5007, To: 5007}}
	l.apply(t, map[string]Health{"t1": good, "t2": good})
	w := l.writes.take()
	if count(w, "DelRule") != 2 || count(w, "AddRule")+count(w, "InsertRule") != 2 || count(w, "AddSet") != 2 ||
		count(w, "Flush") != 1 || len(w) != 7 {
		t.Errorf("class change writes %q: want 2 rule deletions, 2 rule and 2 set additions, 1 flush, nothing else", w)
	}
	if got := filterContains(nftHandles(t, l.edge), "steer:voice"); !slices.Equal(got, voiceBefore) {
		t.Errorf("voice rules rewritten: %v -> %v", voiceBefore, got)
	}
	l.check(t, "backup on 5007", []flow{
		{"lan", "10.9.0.1", 5007, 0, "p1", "backup now matches port 5007"},
		{"lan", "10.9.0.1", 5006, 0, "p3", "port 5006 is unclassified now"},
		{"lan", "10.9.0.1", 5004, 0, "p2", "voice unchanged"},
	})

	// Cleanup: ours gone, the operator's table and the main routes stay.
	if err := l.kernel.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kernelText(t, l.nl); got != "" {
		t.Errorf("after cleanup:\n%s", got)
	}
	tables, err := fc.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	if !slices.Equal(names, []string{"operator"}) {
		t.Errorf("nft tables after cleanup: %v, want only the operator's", names)
	}
	l.check(t, "after cleanup", []flow{{"lan", "10.9.0.1", 5004, 0, "p3", "no steering: main"}})
	l.writes.take()
	if err := l.kernel.Cleanup(ctx); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
	if w := l.writes.take(); len(w) != 0 {
		t.Errorf("second cleanup wrote %q", w)
	}
}

// TestPrivilegedForeignRouteAndMissingLink: a route of another protocol in
// a class table at a destination the plan needs is reported and left
// alone; a route over a missing link is reported while the rest of the
// plan is installed.
func TestPrivilegedForeignRouteAndMissingLink(t *testing.T) {
	l := newSteerLab(t)
	_, dst, _ := net.ParseCIDR("10.9.0.0/24")
	lk, err := l.nl.LinkByName("wan0")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.nl.RouteAdd(&netlink.Route{Table: 7402, Dst: dst, Gw: net.ParseIP("10.255.0.10"), LinkIndex: lk.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	l.desired.Tunnels = append(l.desired.Tunnels, dataplane.Tunnel{ID: "t3", LinkName: "mw-gone", RemoteInner: netip.MustParseAddr("10.255.0.14"),
		RemoteSite: "c", LocalTransport: "inet1", RemoteLANs: []netip.Prefix{netip.MustParsePrefix("10.7.0.0/24")}})
	good := Health{Usable: true}
	p := l.steer.Decide(time.Unix(1, 0), l.desired, DestsFromDesired(l.desired), map[string]Health{"t1": good, "t2": good, "t3": good})
	err = l.kernel.Apply(context.Background(), l.desired.Paths.Classes, p)
	if err == nil || !strings.Contains(err.Error(), "protocol") || !strings.Contains(err.Error(), "mw-gone does not exist") {
		t.Fatalf("Apply error %v: want the foreign route conflict and the missing link", err)
	}
	want := `route table 7401 10.9.0.0/24 via 10.255.0.6 dev mw-p2
route table 7403 10.9.0.0/24 via 10.255.0.6 dev mw-p2
rule pref 7401 fwmark 0x1000000/0x7f000000 lookup 7401
rule pref 7402 fwmark 0x2000000/0x7f000000 lookup 7402
rule pref 7403 fwmark 0x3000000/0x7f000000 lookup 7403`
	if got := kernelText(t, l.nl); got != want {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, want)
	}
	foreign, err := l.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 7402}, netlink.RT_FILTER_TABLE)
	if err != nil || len(foreign) != 1 || !foreign[0].Gw.Equal(net.ParseIP("10.255.0.10")) {
		t.Errorf("foreign route in table 7402 disturbed: %v %v", foreign, err)
	}
	// The operator's route in the backup table is what backup traffic
	// meets: proof that the table is consulted for marked packets.
	l.check(t, "foreign route", []flow{{"lan", "10.9.0.1", 5006, 0, "p3", "backup meets the foreign route in its table"}})
	if err := l.kernel.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if foreign, _ := l.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 7402}, netlink.RT_FILTER_TABLE); len(foreign) != 1 {
		t.Errorf("cleanup removed the foreign route: %v", foreign)
	}
}

func counterOf(r *nftables.Rule) uint64 {
	for _, e := range r.Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c.Packets
		}
	}
	return 0
}

func filterContains(ss []string, sub string) []string {
	var out []string
	for _, s := range ss {
		if strings.Contains(s, sub) {
			out = append(out, s)
		}
	}
	return out
}

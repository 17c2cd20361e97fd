package bgp

// In-process integration tests: real GoBGP speakers talking BGP over
// loopback TCP. Each speaker has its own 127.0.x.y address (Linux routes
// all of 127/8 to lo), used as router id, listen address and session
// address, and its own free port (no fixed ports; neighbors name the
// peer's port). Waits poll GoBGP's state with a generous deadline (the
// build machines are slow and shared); nothing sleeps to synchronise.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

const waitTimeout = 60 * time.Second

type node struct {
	t    *testing.T
	name string
	s    *Speaker
	cfg  Config
	addr netip.Addr
	port int
	asn  uint32
	ribs *ribLog // what the running speaker published
}

// ribLog records the RIBs a speaker publishes (Config.OnRIB) and counts
// calls made after the test marked the speaker stopped.
type ribLog struct {
	mu      sync.Mutex
	ribs    []RIB
	stopped bool          // set by the test once Stop returned
	late    int           // OnRIB calls while stopped
	changed chan struct{} // closed and replaced on every call
	// block, when set, makes the next call close entered and wait for
	// release before it returns.
	block *struct{ entered, release chan struct{} }
}

func newRIBLog() *ribLog { return &ribLog{changed: make(chan struct{})} }

func (l *ribLog) publish(r RIB) {
	l.mu.Lock()
	if l.stopped {
		l.late++
	}
	l.ribs = append(l.ribs, r)
	close(l.changed)
	l.changed = make(chan struct{})
	b := l.block
	l.block = nil
	l.mu.Unlock()
	if b != nil {
		close(b.entered)
		<-b.release
	}
}

// blockNext makes the next OnRIB call close entered and return only once
// release is closed.
func (l *ribLog) blockNext() (entered <-chan struct{}, release chan<- struct{}) {
	b := &struct{ entered, release chan struct{} }{make(chan struct{}), make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.block = b
	return b.entered, b.release
}

// latest returns the newest RIB (ok false before the first), how many
// were published, and a channel closed at the next publish.
func (l *ribLog) latest() (r RIB, n int, next <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ribs) > 0 {
		r = l.ribs[len(l.ribs)-1]
	}
	return r, len(l.ribs), l.changed
}

// all returns every RIB published so far, oldest first.
func (l *ribLog) all() []RIB {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ribs)
}

// markStopped records that Stop returned; lateCalls reports OnRIB calls
// since.
func (l *ribLog) markStopped() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}

func (l *ribLog) lateCalls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.late
}

// freePort finds a TCP port free on addr: listen on port 0, close.
func freePort(t *testing.T, addr netip.Addr) int {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNode starts a speaker on addr that records what it publishes.
func startNode(t *testing.T, name, addr string, asn uint32) *node {
	t.Helper()
	n := &node{t: t, name: name, addr: ma(addr), asn: asn}
	n.port = freePort(t, n.addr)
	n.cfg = Config{
		ASN: asn, RouterID: n.addr, ListenPort: int32(n.port), ListenAddrs: []netip.Addr{n.addr},
		Logger: testLogger(t).With("node", name),
	}
	n.start()
	return n
}

// start starts a speaker with n.cfg and a new ribLog.
func (n *node) start() {
	n.t.Helper()
	n.ribs = newRIBLog()
	cfg := n.cfg
	cfg.OnRIB = n.ribs.publish
	s, err := Start(context.Background(), cfg)
	if err != nil {
		n.t.Fatalf("%s: start: %v", n.name, err)
	}
	n.s = s
	n.t.Cleanup(s.Stop)
}

// waitRIB waits until the newest RIB n published satisfies cond (checked
// at every publish); cond returns the state it saw, printed on failure.
func (n *node) waitRIB(what string, cond func(RIB) (bool, string)) RIB {
	n.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		rib, count, next := n.ribs.latest()
		state := "nothing published"
		if count > 0 {
			var ok bool
			if ok, state = cond(rib); ok {
				return rib
			}
		}
		select {
		case <-next:
		case <-deadline:
			n.t.Fatalf("%s: timed out after %v waiting for %s; last of %d published RIBs:\n%s", n.name, waitTimeout, what, count, state)
		}
	}
}

// waitRoutes waits until Choose on the newest RIB (nothing excluded)
// prints as want, one route a line.
func (n *node) waitRoutes(what, want string) RIB {
	n.t.Helper()
	return n.waitRIB(what, func(r RIB) (bool, string) {
		got := routesText(Choose(r, nil))
		return got == want, got + "\nwant:\n" + want
	})
}

// to is a neighbor entry on n for peer.
func (n *node) to(peer *node) Neighbor {
	return Neighbor{Addr: peer.addr, ASN: peer.asn, LocalAddr: n.addr, Port: uint16(peer.port), Description: n.name + "-" + peer.name}
}

func (n *node) apply(d Desired) {
	n.t.Helper()
	if err := n.s.Apply(context.Background(), d); err != nil {
		n.t.Fatalf("%s: apply: %v", n.name, err)
	}
}

// ribText prints n's RIB as sorted lines "prefix via nexthop aspath [..]"
// (best path first within a prefix, as GoBGP orders them), our own
// paths as "prefix local".
func (n *node) ribText() string {
	dests, err := n.s.rib(context.Background())
	if err != nil {
		return "error: " + err.Error()
	}
	var lines []string
	for _, d := range dests {
		for _, p := range d.Paths {
			c, err := candidateFrom(p, n.asn)
			switch {
			case err != nil:
				lines = append(lines, d.Prefix+" error "+err.Error())
			case c.Local:
				lines = append(lines, d.Prefix+" local")
			default:
				lines = append(lines, fmt.Sprintf("%s via %v aspath %v", d.Prefix, c.NextHop, c.ASPath))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (n *node) status() []PeerStatus {
	st, err := n.s.Status(context.Background())
	if err != nil {
		n.t.Fatalf("%s: status: %v", n.name, err)
	}
	return st
}

func (n *node) established(peer netip.Addr) bool {
	for _, p := range n.status() {
		if p.Addr == peer {
			return p.State == "established"
		}
	}
	return false
}

// waitFor polls cond until it holds or waitTimeout passes; cond returns
// the state it saw, printed on failure.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state:\n%s", waitTimeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitText waits until f() == want.
func waitText(t *testing.T, what, want string, f func() string) {
	t.Helper()
	waitFor(t, what, func() (bool, string) {
		got := f()
		return got == want, got + "\nwant:\n" + want
	})
}

// TestTwoSpeakers (a): two speakers establish a session, each learns the
// other's prefix, each publishes a RIB whose Choose gives the route, and
// Status counts one prefix each way.
func TestTwoSpeakers(t *testing.T) {
	a := startNode(t, "a", "127.0.1.1", 4200000001)
	b := startNode(t, "b", "127.0.1.2", 4200000002)
	a.apply(Desired{Originate: []netip.Prefix{mp("10.1.0.0/16")}, Neighbors: []Neighbor{a.to(b)}})
	b.apply(Desired{Originate: []netip.Prefix{mp("10.2.0.0/16")}, Neighbors: []Neighbor{b.to(a)}})

	waitText(t, "a's rib", "10.1.0.0/16 local\n10.2.0.0/16 via 127.0.1.2 aspath [4200000002]", a.ribText)
	waitText(t, "b's rib", "10.1.0.0/16 via 127.0.1.1 aspath [4200000001]\n10.2.0.0/16 local", b.ribText)
	a.waitRoutes("a's routes", "10.2.0.0/16 via 127.0.1.2")
	b.waitRoutes("b's routes", "10.1.0.0/16 via 127.0.1.1")
	waitFor(t, "status counters", func() (bool, string) {
		st := a.status()
		return len(st) == 1 && st[0].State == "established" && st[0].Received == 1 && st[0].Accepted == 1 && st[0].Advertised == 1 &&
			st[0].Description == "a-b" && st[0].ASN == 4200000002, fmt.Sprint(st)
	})
}

// TestHubAndSpoke (b): spokes B and C peer only with hub A; B learns C's
// prefix through the hub with AS path [A C] and next hop the hub.
func TestHubAndSpoke(t *testing.T) {
	hub := startNode(t, "hub", "127.0.2.1", 4200000010)
	b := startNode(t, "b", "127.0.2.2", 4200000011)
	c := startNode(t, "c", "127.0.2.3", 4200000012)
	hub.apply(Desired{Neighbors: []Neighbor{hub.to(b), hub.to(c)}})
	b.apply(Desired{Originate: []netip.Prefix{mp("10.11.0.0/16")}, Neighbors: []Neighbor{b.to(hub)}})
	c.apply(Desired{Originate: []netip.Prefix{mp("10.12.0.0/16")}, Neighbors: []Neighbor{c.to(hub)}})

	waitText(t, "b's rib", "10.11.0.0/16 local\n10.12.0.0/16 via 127.0.2.1 aspath [4200000010 4200000012]", b.ribText)
	waitText(t, "c's rib", "10.11.0.0/16 via 127.0.2.1 aspath [4200000010 4200000011]\n10.12.0.0/16 local", c.ribText)
	b.waitRoutes("b's routes", "10.12.0.0/16 via 127.0.2.1")
	hub.waitRoutes("hub's routes", "10.11.0.0/16 via 127.0.2.2\n10.12.0.0/16 via 127.0.2.3")
}

// TestTwoHubs (c): spokes B and C peer with hubs H1 and H2. B learns C's
// prefix via both hubs; the paths tie, so the chosen route is ECMP over
// both. Stopping H1 leaves the route via H2.
func TestTwoHubs(t *testing.T) {
	h1 := startNode(t, "h1", "127.0.3.1", 4200000020)
	h2 := startNode(t, "h2", "127.0.3.2", 4200000021)
	b := startNode(t, "b", "127.0.3.3", 4200000022)
	c := startNode(t, "c", "127.0.3.4", 4200000023)
	h1.apply(Desired{Neighbors: []Neighbor{h1.to(b), h1.to(c)}})
	h2.apply(Desired{Neighbors: []Neighbor{h2.to(b), h2.to(c)}})
	b.apply(Desired{Originate: []netip.Prefix{mp("10.22.0.0/16")}, Neighbors: []Neighbor{b.to(h1), b.to(h2)}})
	c.apply(Desired{Originate: []netip.Prefix{mp("10.23.0.0/16")}, Neighbors: []Neighbor{c.to(h1), c.to(h2)}})

	rib := b.waitRoutes("b's routes: ECMP via both hubs", "10.23.0.0/16 via 127.0.3.1,127.0.3.2")
	c.waitRoutes("c's routes: ECMP via both hubs", "10.22.0.0/16 via 127.0.3.1,127.0.3.2")
	if got := fmt.Sprint(rib.Candidates()); got != "map[10.23.0.0/16:[127.0.3.1 127.0.3.2]]" {
		t.Errorf("b's candidates = %v", got)
	}
	// The agent's probes say the tunnel to h1 is down: the owner
	// excludes its next hop and routes over h2 without asking BGP; the
	// session stays up.
	if got := routesText(Choose(rib, map[netip.Addr]bool{h1.addr: true})); got != "10.23.0.0/16 via 127.0.3.2" {
		t.Errorf("b's routes with h1 excluded: %s", got)
	}

	h1.s.Stop()
	b.waitRoutes("b's routes after losing h1", "10.23.0.0/16 via 127.0.3.2")
	c.waitRoutes("c's routes after losing h1", "10.22.0.0/16 via 127.0.3.2")
}

// TestApplyIdempotentAndRemovals (d): a second Apply with the same Desired
// makes no GoBGP call that changes anything, and the sessions stay up;
// removing a prefix withdraws it at the peer (and from the peer's
// published RIB); removing a neighbor ends the session.
func TestApplyIdempotentAndRemovals(t *testing.T) {
	a := startNode(t, "a", "127.0.4.1", 4200000031)
	b := startNode(t, "b", "127.0.4.2", 4200000032)
	da := Desired{Originate: []netip.Prefix{mp("10.31.0.0/16"), mp("10.31.1.0/24")}, Neighbors: []Neighbor{a.to(b)}}
	a.apply(da)
	b.apply(Desired{Originate: []netip.Prefix{mp("10.32.0.0/16")}, Neighbors: []Neighbor{b.to(a)}})
	b.waitRoutes("b's routes", "10.31.0.0/16 via 127.0.4.1\n10.31.1.0/24 via 127.0.4.1")
	up := func() time.Duration {
		st := a.status()
		if len(st) != 1 || st[0].State != "established" {
			t.Fatalf("a's status %v", st)
		}
		return st[0].Uptime
	}
	before := up()
	writes := a.s.writes.Load()

	// Same Desired, reordered, with explicit defaults and a new description.
	again := Desired{Originate: []netip.Prefix{mp("10.31.1.0/24"), mp("10.31.0.0/16"), mp("10.31.0.0/16")}}
	nb := a.to(b)
	nb.HoldTime, nb.KeepAlive, nb.Description = DefaultHoldTime, DefaultKeepAlive, "renamed"
	again.Neighbors = []Neighbor{nb}
	a.apply(again)
	a.apply(again)
	if w := a.s.writes.Load(); w != writes {
		t.Errorf("repeated Apply made %d GoBGP writes, want 0", w-writes)
	}
	if after := up(); after < before {
		t.Errorf("session restarted: uptime %v after %v", after, before)
	}
	if st := a.status(); st[0].Description != "renamed" {
		t.Errorf("description not updated: %v", st[0])
	}

	// Withdraw one prefix.
	a.apply(Desired{Originate: []netip.Prefix{mp("10.31.0.0/16")}, Neighbors: []Neighbor{nb}})
	waitText(t, "b's rib after the withdraw", "10.31.0.0/16 via 127.0.4.1 aspath [4200000031]\n10.32.0.0/16 local", b.ribText)
	b.waitRoutes("b's routes after the withdraw", "10.31.0.0/16 via 127.0.4.1")

	// Remove the neighbor.
	a.apply(Desired{Originate: []netip.Prefix{mp("10.31.0.0/16")}})
	if st := a.status(); len(st) != 0 {
		t.Errorf("a still has sessions: %v", st)
	}
	waitFor(t, "b sees the session down", func() (bool, string) {
		st := b.status()
		return len(st) == 1 && st[0].State != "established", fmt.Sprint(st)
	})
	waitText(t, "b's rib without a", "10.32.0.0/16 local", b.ribText)
	b.waitRoutes("b's routes without a", "")
	a.waitRoutes("a's routes without b", "")
}

// TestLANPeer: a LAN router (a GoBGP speaker standing in for FRR) peers
// with edge E as a LAN neighbor. It gets the overlay's routes but not E's
// own LAN prefixes; what it announces (a LAN more-specific and a default
// route) is rejected by E: not installed, not passed into the overlay.
func TestLANPeer(t *testing.T) {
	e := startNode(t, "e", "127.0.5.1", 4200000041)
	remote := startNode(t, "remote", "127.0.5.2", 4200000042)
	lan := startNode(t, "lan", "127.0.5.3", 64512)
	ln := e.to(lan)
	ln.LAN = true
	e.apply(Desired{Originate: []netip.Prefix{mp("10.41.0.0/16")}, Neighbors: []Neighbor{e.to(remote), ln}})
	remote.apply(Desired{Originate: []netip.Prefix{mp("10.42.0.0/16")}, Neighbors: []Neighbor{remote.to(e)}})
	// The stand-in LAN router waits for the edge to connect (see
	// FromDataplane: two active GoBGP ends can take long to meet again
	// after the reset below).
	toE := lan.to(e)
	toE.Passive = true
	lan.apply(Desired{Originate: []netip.Prefix{mp("0.0.0.0/0"), mp("10.41.99.0/24")}, Neighbors: []Neighbor{toE}})

	waitText(t, "lan router's rib: overlay routes only",
		"0.0.0.0/0 local\n10.41.99.0/24 local\n10.42.0.0/16 via 127.0.5.1 aspath [4200000041 4200000042]", lan.ribText)
	waitFor(t, "e received the lan router's two prefixes and accepted none", func() (bool, string) {
		for _, p := range e.status() {
			if p.Addr == lan.addr {
				return p.State == "established" && p.Received == 2 && p.Accepted == 0 && p.Advertised == 1 && p.LAN, p.String()
			}
		}
		return false, "no lan peer"
	})
	waitText(t, "remote's rib: no lan routes", "10.41.0.0/16 via 127.0.5.1 aspath [4200000041]\n10.42.0.0/16 local", remote.ribText)
	e.waitRoutes("e's routes", "10.42.0.0/16 via 127.0.5.2")

	// The peer turns into a tunnel peer: the session is re-created and
	// its routes are accepted now.
	e.apply(Desired{Originate: []netip.Prefix{mp("10.41.0.0/16")}, Neighbors: []Neighbor{e.to(remote), e.to(lan)}})
	e.waitRoutes("e's routes with the former lan peer as a tunnel peer", `0.0.0.0/0 via 127.0.5.3
10.41.99.0/24 via 127.0.5.3
10.42.0.0/16 via 127.0.5.2`)
	var sets []string
	err := e.s.bgp.ListDefinedSet(context.Background(), &api.ListDefinedSetRequest{DefinedType: api.DefinedType_NEIGHBOR, Name: lanSetName},
		func(d *api.DefinedSet) { sets = append(sets, fmt.Sprint(d.Name, d.List)) })
	if err != nil || fmt.Sprint(sets) != "[meshwan-lan-peers[255.255.255.255/32]]" {
		t.Errorf("lan neighbor set after the change: %v, %v; want only the sentinel", sets, err)
	}
}

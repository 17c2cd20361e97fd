package bgp

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// proxy forwards TCP connections to target, dialling from src so the
// target sees src as the peer address. cut resets every connection (no
// FIN, no BGP NOTIFICATION: what the peer of a crashed agent sees) and
// refuses new ones until resume.
type proxy struct {
	l      net.Listener
	target netip.AddrPort
	src    netip.Addr
	wg     sync.WaitGroup // accept loop and pipes

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T, listen netip.Addr, target netip.AddrPort, src netip.Addr) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(listen, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target, src: src, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) port() int { return p.l.Addr().(*net.TCPAddr).Port }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		if paused {
			reset(c)
			continue
		}
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.src, 0)), Timeout: 5 * time.Second}
		u, err := d.Dial("tcp", p.target.String())
		if err != nil {
			reset(c)
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range []net.Conn{dst, src} {
		if p.conns[c] {
			delete(p.conns, c)
			reset(c)
		}
	}
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close with RST
	}
	_ = c.Close()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		delete(p.conns, c)
		reset(c)
	}
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}

func (p *proxy) close() {
	_ = p.l.Close()
	p.cut()
	p.wg.Wait()
}

// TestGracefulRestart: agent A dies without a NOTIFICATION (the proxy
// resets the TCP connection) and a new speaker starts with Restarting (its
// owner found BGP routes in the kernel). Throughout:
//   - B (helper) keeps A's route in every RIB it publishes: GoBGP holds
//     A's paths as stale until A2's End-of-RIB replaces them;
//   - A2 publishes Holding RIBs (its owner keeps the adopted routes) until
//     B has sent its End-of-RIB, well before the 120 s restart time, then
//     RIBs that are not Holding and give B's route.
func TestGracefulRestart(t *testing.T) {
	if raceEnabled {
		// GoBGP v3.37.0 data race, measured here: ListPath converts paths
		// to API structs after leaving its server loop (toPathAPI reads
		// Path.IsStale) while the loop marks a restarting peer's paths
		// stale (AdjRib.StaleAll -> Path.MarkStale). See README.md, "Known
		// GoBGP issues". Run this test without -race.
		t.Skip("GoBGP v3.37.0 races on the stale flag during a peer's graceful restart (ListPath vs MarkStale); run without -race")
	}
	a := startNode(t, "a", "127.0.6.1", 4200000061)
	b := startNode(t, "b", "127.0.6.2", 4200000062)
	px := newProxy(t, b.addr, netip.AddrPortFrom(b.addr, uint16(b.port)), a.addr)
	toB := a.to(b)
	toB.Port = uint16(px.port())
	toA := b.to(a)
	toA.Passive = true // a always connects, through the proxy
	da := Desired{Originate: []netip.Prefix{mp("10.61.0.0/16")}, Neighbors: []Neighbor{toB}}
	a.apply(da)
	b.apply(Desired{Originate: []netip.Prefix{mp("10.62.0.0/16")}, Neighbors: []Neighbor{toA}})
	const routeOnB = "10.61.0.0/16 via 127.0.6.1"
	const routeOnA = "10.62.0.0/16 via 127.0.6.2"
	b.waitRoutes("b's routes", routeOnB)
	a.waitRoutes("a's routes", routeOnA)
	if rs := a.ribs.all(); rs[len(rs)-1].Holding {
		t.Fatal("a speaker that is not restarting published a holding rib")
	}
	_, bBefore, _ := b.ribs.latest()

	// A "crashes".
	px.cut()
	waitFor(t, "b holds a's routes as a graceful-restart helper", func() (bool, string) {
		st := b.status()
		return len(st) == 1 && st[0].State != "established" && st[0].PeerRestarting, fmt.Sprint(st)
	})
	b.waitRIB("b's rib with a's path stale", func(r RIB) (bool, string) {
		ps := r.Dests[mp("10.61.0.0/16")]
		return len(ps) == 1 && ps[0].Stale, fmt.Sprintf("%+v", ps)
	})
	a.s.Stop() // the session is down: no NOTIFICATION goes out

	// A comes back; its owner found routes of ours in the kernel.
	a.cfg.Restarting = true
	a.start()
	if a.s.restartUntil.IsZero() {
		t.Fatal("the new speaker did not open a restart window")
	}
	a.waitRIB("a's first rib after the restart", func(r RIB) (bool, string) { return true, "" })
	if first := a.ribs.all()[0]; !first.Holding {
		t.Errorf("a's first rib after the restart is not holding: %+v", first)
	}
	a.apply(da)
	px.resume()
	a.waitRIB("a's rib resynchronised: not holding, b's route back", func(r RIB) (bool, string) {
		got := routesText(Choose(r, nil))
		return !r.Holding && got == routeOnA, fmt.Sprintf("holding %v routes %q", r.Holding, got)
	})
	checkHoldOnce(t, a.ribs.all())
	if time.Now().After(a.s.restartUntil) {
		t.Errorf("the hold ended only with the restart time, not with b's end-of-rib")
	}
	waitFor(t, "b sees a back", func() (bool, string) {
		st := b.status()
		return len(st) == 1 && st[0].State == "established" && !st[0].PeerRestarting && st[0].Accepted == 1, fmt.Sprint(st)
	})
	b.waitRIB("b's rib with a's path fresh", func(r RIB) (bool, string) {
		ps := r.Dests[mp("10.61.0.0/16")]
		return len(ps) == 1 && !ps[0].Stale, fmt.Sprintf("%+v", ps)
	})
	for i, r := range b.ribs.all()[bBefore-1:] {
		if got := routesText(Choose(r, nil)); got != routeOnB {
			t.Errorf("b's rib %d during the restart lost a's route: %q", bBefore-1+i, got)
		}
	}
}

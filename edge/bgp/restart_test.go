package bgp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
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

// watchRoute polls a fake kernel until stop is called and records every
// moment route was missing.
func watchRoute(f *FakeRoutes, route string) (stop func() []string) {
	done := make(chan struct{})
	var (
		wg   sync.WaitGroup
		gaps []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if s := f.String(); !strings.Contains(s, route) {
				gaps = append(gaps, fmt.Sprintf("%s: %q", time.Now().Format("15:04:05.000"), s))
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() []string { close(done); wg.Wait(); return gaps }
}

// TestGracefulRestart: agent A dies without a NOTIFICATION (the proxy
// resets the TCP connection) and a new speaker starts on A's kernel
// table. Throughout:
//   - B (helper) keeps A's route in its kernel: GoBGP holds A's paths as
//     stale, the sync keeps installing them, and A2's End-of-RIB ends it;
//   - A's kernel keeps B's route: Stop leaves it, A2 adopts it;
//   - a route of A's that nobody re-announces (10.99/16, withdrawn while
//     A was down) is held until A2 has B's End-of-RIB, then deleted —
//     well before the 120 s restart time.
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
	const routeOnB = "10.61.0.0/16 via 127.0.6.1 proto 241 metric 20 table 254"
	const routeOnA = "10.62.0.0/16 via 127.0.6.2 proto 241 metric 20 table 254"
	waitText(t, "b's kernel", routeOnB, b.kernel.String)
	waitText(t, "a's kernel", routeOnA, a.kernel.String)
	stopB := watchRoute(b.kernel, routeOnB)
	stopA := watchRoute(a.kernel, routeOnA)

	// A "crashes".
	px.cut()
	waitFor(t, "b holds a's routes as a graceful-restart helper", func() (bool, string) {
		st := b.status()
		return len(st) == 1 && st[0].State != "established" && st[0].PeerRestarting, fmt.Sprint(st)
	})
	if rib := b.ribText(); !strings.Contains(rib, "10.61.0.0/16 via 127.0.6.1") {
		t.Fatalf("b dropped a's route from its rib: %s", rib)
	}
	a.s.Stop() // the session is down: no NOTIFICATION goes out
	a.kernel.AddForeign(*toNetlinkProto(kernelRoute{Dst: mp("10.99.0.0/16"), Metric: 20, Protocol: RouteProtocol, Via: []netip.Addr{b.addr}}))

	// A comes back on the same kernel table.
	a.start()
	if a.s.restartUntil.IsZero() {
		t.Fatal("the new speaker did not notice the restart")
	}
	a.apply(da)
	px.resume()
	waitText(t, "a's kernel after the restart: adopted route confirmed, unannounced one gone", routeOnA, a.kernel.String)
	waitFor(t, "b sees a back", func() (bool, string) {
		st := b.status()
		return len(st) == 1 && st[0].State == "established" && !st[0].PeerRestarting && st[0].Accepted == 1, fmt.Sprint(st)
	})
	dests, err := b.s.rib(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		for _, p := range d.Paths {
			if p.Stale {
				t.Errorf("b still has a stale path for %s", d.Prefix)
			}
		}
	}
	if gaps := stopB(); len(gaps) > 0 {
		t.Errorf("b's kernel lost a's route %d times during the restart, first: %s", len(gaps), gaps[0])
	}
	if gaps := stopA(); len(gaps) > 0 {
		t.Errorf("a's kernel lost b's route %d times during the restart, first: %s", len(gaps), gaps[0])
	}
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/steer"
	"github.com/meshwan/meshwan/edge/syncer"
	"github.com/vishvananda/netlink"
)

// Test doubles of the backends. They model only what the owner's logic
// needs (the kernel's behaviour is link's, steer's and firewall's to
// test; the real backends are proven in the VM lab).

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var testPSK = []byte("0123456789abcdef0123456789abcdef")

// twoTransports is site a's desired state with two parallel tunnels to
// site b (t1, t2), both routing b's LAN, plus one tunnel to c.
func twoTransports() dataplane.Desired {
	tun := func(id, local, remote, under, site, lan string) dataplane.Tunnel {
		return dataplane.Tunnel{ID: id, LinkName: "mw-" + id, LocalInner: mustPrefix(local), RemoteInner: netip.MustParseAddr(remote),
			LocalUnderlay: netip.MustParseAddr("192.0.2.1"), RemoteUnderlay: netip.MustParseAddr(under), MTU: 1400, PSK: testPSK,
			RemoteSite: site, RemoteLANs: []netip.Prefix{mustPrefix(lan)}, RemoteASN: 65002}
	}
	return dataplane.Desired{Site: "a", ASN: 65001, LANPrefixes: []netip.Prefix{mustPrefix("10.1.0.0/16")}, Tunnels: []dataplane.Tunnel{
		tun("t1", "10.255.0.1/30", "10.255.0.2", "192.0.2.2", "b", "10.2.0.0/16"),
		tun("t2", "10.255.0.5/30", "10.255.0.6", "192.0.2.3", "b", "10.2.0.0/16"),
		tun("t3", "10.255.0.9/30", "10.255.0.10", "192.0.2.4", "c", "10.3.0.0/16"),
	}}
}

// routeWrite is one ApplyRoutes call.
type routeWrite struct {
	at     time.Time
	routes []kernel.Route
}

// fakeLinks is the real link.Manager over kernel.FakeNetlink, recording
// what the owner asked of it (and when each route write returned).
type fakeLinks struct {
	*link.Manager
	nl      *kernel.FakeNetlink
	mu      sync.Mutex
	applies []dataplane.Desired
	writes  []routeWrite
	wrote   chan struct{} // signalled (non-blocking) on every route write
}

func newFakeLinks() *fakeLinks {
	nl := kernel.NewFakeNetlink()
	return &fakeLinks{Manager: link.NewManager(nl, link.Options{}), nl: nl, wrote: make(chan struct{}, 1)}
}

func (f *fakeLinks) Apply(ctx context.Context, d dataplane.Desired) error {
	err := f.Manager.Apply(ctx, d)
	f.mu.Lock()
	f.applies = append(f.applies, d)
	f.mu.Unlock()
	return err
}

func (f *fakeLinks) ApplyRoutes(ctx context.Context, rs []kernel.Route) error {
	err := f.Manager.ApplyRoutes(ctx, rs)
	f.mu.Lock()
	f.writes = append(f.writes, routeWrite{at: time.Now(), routes: slices.Clone(rs)})
	f.mu.Unlock()
	select {
	case f.wrote <- struct{}{}:
	default:
	}
	return err
}

// adopt puts a route into the fake kernel as a previous process left it.
func (f *fakeLinks) adopt(r kernel.Route) {
	nr := netlink.Route{Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		Gw: r.Via[0].AsSlice(), Priority: r.Metric, Protocol: netlink.RouteProtocol(r.Protocol), Table: kernel.MainTable}
	f.nl.InjectRoute(nr)
}

// kernelRoutes is the fake kernel's main table, our routes only.
func (f *fakeLinks) kernelRoutes(t *testing.T) string {
	t.Helper()
	rs, err := f.Manager.Routes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return routesText(rs)
}

func (f *fakeLinks) lastLinks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	if n := len(f.applies); n > 0 {
		for _, t := range f.applies[n-1].Tunnels {
			out = append(out, t.ID+"@"+t.RemoteUnderlay.String())
		}
	}
	return out
}

// waitRoutes waits for a route write whose text satisfies ok and returns
// it.
func (f *fakeLinks) waitRoutes(t *testing.T, what string, ok func(string) bool) routeWrite {
	t.Helper()
	deadline := time.After(20 * time.Second)
	seen := 0
	for {
		f.mu.Lock()
		ws := slices.Clone(f.writes[seen:])
		seen = len(f.writes)
		f.mu.Unlock()
		for _, w := range ws {
			if ok(routesText(w.routes)) {
				return w
			}
		}
		select {
		case <-f.wrote:
		case <-deadline:
			f.mu.Lock()
			defer f.mu.Unlock()
			var all []string
			for _, w := range f.writes {
				all = append(all, routesText(w.routes))
			}
			t.Fatalf("no route write with %s; writes:\n%s", what, strings.Join(all, "\n"))
		}
	}
}

func routesText(rs []kernel.Route) string {
	var b []string
	for _, r := range rs {
		b = append(b, fmt.Sprintf("%v>%v/%d", r.Dst, r.Via, r.Metric))
	}
	return strings.Join(b, " ")
}

type nopBackend struct{}

func (nopBackend) Apply(context.Context, dataplane.Desired) error { return nil }
func (nopBackend) Cleanup(context.Context) error                  { return nil }

type nopSteering struct{}

func (nopSteering) Apply(context.Context, []dataplane.TrafficClass, steer.Plan) error { return nil }
func (nopSteering) Cleanup(context.Context) error                                     { return nil }

// gate blocks the calls of a backend until released (or ctx ends), and
// records each call's entry.
type gate struct {
	release chan struct{}
	mu      sync.Mutex
	entered map[string]bool
}

func newGate() *gate { return &gate{release: make(chan struct{}), entered: map[string]bool{}} }

func (g *gate) pass(ctx context.Context, call string) error {
	g.mu.Lock()
	g.entered[call] = true
	g.mu.Unlock()
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// blockedIPsec is charon hanging: Apply and Status wait for the gate.
type blockedIPsec struct {
	g       *gate
	mu      sync.Mutex
	applied []dataplane.Desired
}

func (b *blockedIPsec) Apply(ctx context.Context, d dataplane.Desired) error {
	if err := b.g.pass(ctx, "ipsec apply"); err != nil {
		return err
	}
	b.mu.Lock()
	b.applied = append(b.applied, d)
	b.mu.Unlock()
	return nil
}

func (b *blockedIPsec) TidyStatus(ctx context.Context) ([]ipsec.Status, error) {
	return nil, b.g.pass(ctx, "ipsec status")
}

func (b *blockedIPsec) Cleanup(context.Context) error { return nil }

// blockedSpeaker is GoBGP hanging: Apply and Status wait for the gate.
type blockedSpeaker struct {
	g       *gate
	onRIB   func(bgp.RIB)
	mu      sync.Mutex
	applied []bgp.Desired
}

func (s *blockedSpeaker) Apply(ctx context.Context, d bgp.Desired) error {
	if err := s.g.pass(ctx, "bgp apply"); err != nil {
		return err
	}
	s.mu.Lock()
	s.applied = append(s.applied, d)
	s.mu.Unlock()
	return nil
}

func (s *blockedSpeaker) Status(ctx context.Context) ([]bgp.PeerStatus, error) {
	return nil, s.g.pass(ctx, "bgp status")
}

func (s *blockedSpeaker) Stop() {}

// fakeProber delivers the events the test sends.
type fakeProber struct {
	events chan probe.Event
}

func (p *fakeProber) Run(ctx context.Context) error    { <-ctx.Done(); return nil }
func (p *fakeProber) Apply([]probe.Target) error       { return nil }
func (p *fakeProber) Events() <-chan probe.Event       { return p.events }
func (p *fakeProber) Snapshot() []probe.TunnelSnapshot { return nil }
func (p *fakeProber) send(id string, from, to probe.State) {
	p.events <- probe.Event{Tunnel: id, Transition: probe.Transition{From: from, To: to, At: time.Now()}}
}

// allSAs: every tunnel's outbound SA is installed.
func allSAs() (map[[2]netip.Addr]bool, error) {
	out := map[[2]netip.Addr]bool{}
	for _, t := range twoTransports().Tunnels {
		out[[2]netip.Addr{t.LocalUnderlay, t.RemoteUnderlay}] = true
	}
	return out, nil
}

// ownerRig runs an Owner with doubles until the test ends.
type ownerRig struct {
	o       *Owner
	links   *fakeLinks
	prober  *fakeProber
	updates chan syncer.State
	speaker chan *blockedSpeaker
	ipsec   IPsec
}

func startOwner(t *testing.T, cfg Config, lk *fakeLinks) *ownerRig {
	t.Helper()
	r := &ownerRig{links: lk, prober: &fakeProber{events: make(chan probe.Event, 16)}, updates: make(chan syncer.State, 1), speaker: make(chan *blockedSpeaker, 4)}
	cfg.StateDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Links, cfg.Firewall = lk, nopBackend{}
	if cfg.Steering == nil {
		cfg.Steering = nopSteering{}
	}
	if cfg.IPsec == nil {
		cfg.IPsec = &blockedIPsec{g: newGate()}
		close(cfg.IPsec.(*blockedIPsec).g.release)
	}
	r.ipsec = cfg.IPsec
	cfg.NewProber = func(probe.Config) (Prober, error) { return r.prober, nil }
	r.o = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.o.Run(ctx, r.updates, func(syncer.Report) {})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// TestFailoverWhileBackendsBlocked is issue 13's acceptance test: with
// charon and GoBGP hanging (every IPsec and BGP Apply and Status blocks
// for 10 s), a probe verdict that takes the primary tunnel out moves the
// main-table route to the backup within one probe interval of the
// verdict, in static and in BGP routing mode.
func TestFailoverWhileBackendsBlocked(t *testing.T) {
	for _, mode := range []string{"static", "bgp"} {
		t.Run(mode, func(t *testing.T) {
			d := twoTransports()
			d.BGP = mode == "bgp"
			interval := d.Paths.WithDefaults().ProbeInterval
			g := newGate()
			// The backends are released after 10 s, or when the test ends.
			var once sync.Once
			release := func() { once.Do(func() { close(g.release) }) }
			time.AfterFunc(10*time.Second, release)
			t.Cleanup(release)
			ip := &blockedIPsec{g: g}
			var r *ownerRig
			cfg := Config{IPsec: ip, SAs: allSAs, StatusEvery: 20 * time.Millisecond, KernelStatusEvery: 20 * time.Millisecond,
				BGP: func(_ context.Context, c BGPStart) (Speaker, error) {
					s := &blockedSpeaker{g: g, onRIB: c.OnRIB}
					r.speaker <- s
					return s, nil
				}}
			r = startOwner(t, cfg, newFakeLinks())
			r.updates <- syncer.State{Version: 1, Desired: d}
			for _, id := range []string{"t1", "t2", "t3"} {
				r.prober.send(id, probe.StateUnknown, probe.StateUp)
			}
			var primary, backup string
			if d.BGP {
				s := <-r.speaker
				// t1 is preferred (local-pref), t2 the backup.
				s.onRIB(bgp.RIB{Dests: map[netip.Prefix][]bgp.Path{
					mustPrefix("10.2.0.0/16"): {{NextHop: netip.MustParseAddr("10.255.0.2"), LocalPref: 200}, {NextHop: netip.MustParseAddr("10.255.0.6"), LocalPref: 100}},
					mustPrefix("10.3.0.0/16"): {{NextHop: netip.MustParseAddr("10.255.0.10"), LocalPref: 100}},
				}})
				primary, backup = "10.2.0.0/16>[10.255.0.2]/20", "10.2.0.0/16>[10.255.0.6]/20"
			} else {
				primary, backup = "10.2.0.0/16>[10.255.0.2]/0 10.2.0.0/16>[10.255.0.6]/1", "10.2.0.0/16>[10.255.0.6]/0 10.3"
			}
			waitFor(t, "every tunnel usable", func() bool {
				h := r.o.Health()
				return h["t1"].Usable && h["t2"].Usable && h["t3"].Usable
			})
			r.links.waitRoutes(t, "the primary route", func(s string) bool { return strings.HasPrefix(s, primary) })
			// Both backends are stuck in their calls now...
			for _, want := range []string{"ipsec apply", "bgp apply"} {
				if want == "bgp apply" && !d.BGP {
					continue
				}
				waitEntered(t, g, want)
			}
			// ...and have newer work queued: a new desired version.
			d2 := d
			d2.Tunnels = slices.Clone(d.Tunnels)
			d2.Tunnels[2].MTU = 1380
			r.updates <- syncer.State{Version: 2, Desired: d2}

			verdict := time.Now()
			r.prober.send("t1", probe.StateUp, probe.StateDown)
			w := r.links.waitRoutes(t, "the backup route", func(s string) bool { return strings.HasPrefix(s, backup) })
			took := w.at.Sub(verdict)
			t.Logf("%s: route switch %v after the verdict (probe interval %v), IPsec and BGP blocked", mode, took, interval)
			if took >= interval {
				t.Errorf("route switch took %v, want < one probe interval (%v)", took, interval)
			}
			if got := r.links.kernelRoutes(t); !strings.HasPrefix(got, backup) {
				t.Errorf("the kernel's routes after the switch: %s, want %s...", got, backup)
			}
			select {
			case <-g.release:
				t.Fatal("the backends were released before the switch: the test proves nothing")
			default:
			}
			if r.o.Applied() == 2 {
				t.Error("version 2 reported applied while IPsec had not applied it")
			}
			// Released, the workers catch up with the newest state only.
			release()
			waitFor(t, "version 2 applied after the release", func() bool { return r.o.Applied() == 2 })
			ip.mu.Lock()
			last := ip.applied[len(ip.applied)-1]
			ip.mu.Unlock()
			if last.Tunnels[2].MTU != 1380 {
				t.Errorf("ipsec's last apply has MTU %d, want the newest state's 1380", last.Tunnels[2].MTU)
			}
		})
	}
}

func waitEntered(t *testing.T, g *gate, want string) {
	t.Helper()
	waitFor(t, "the backend blocked in "+want, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.entered[want]
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOwnerRetiresLinkAfterIPsec: a removed tunnel's link stays until the
// IPsec worker has applied a state without it and its SAs are gone; a
// new tunnel reaches IPsec only after its link was applied.
func TestOwnerRetiresLinkAfterIPsec(t *testing.T) {
	d := twoTransports()
	var mu sync.Mutex
	sasGone := false
	sas := func() (map[[2]netip.Addr]bool, error) {
		out, _ := allSAs()
		mu.Lock()
		defer mu.Unlock()
		if sasGone {
			delete(out, [2]netip.Addr{d.Tunnels[2].LocalUnderlay, d.Tunnels[2].RemoteUnderlay})
		}
		return out, nil
	}
	ip := &blockedIPsec{g: newGate()}
	close(ip.g.release)
	lk := newFakeLinks()
	r := startOwner(t, Config{IPsec: ip, SAs: sas}, lk)
	r.updates <- syncer.State{Version: 1, Desired: d}
	waitFor(t, "version 1 applied", func() bool { return r.o.Applied() == 1 })
	ip.mu.Lock()
	if n := len(ip.applied[0].Tunnels); n != 3 {
		t.Errorf("first IPsec apply has %d tunnels, want 3 (links applied first)", n)
	}
	ip.mu.Unlock()

	d2 := d
	d2.Tunnels = d.Tunnels[:2]
	r.updates <- syncer.State{Version: 2, Desired: d2}
	waitFor(t, "ipsec applied without t3", func() bool {
		ip.mu.Lock()
		defer ip.mu.Unlock()
		return len(ip.applied[len(ip.applied)-1].Tunnels) == 2
	})
	time.Sleep(200 * time.Millisecond) // the worker polls the SAs; the link must stay meanwhile
	if got := lk.lastLinks(); len(got) != 3 {
		t.Fatalf("links while t3's SAs are installed: %v, want t3 kept", got)
	}
	mu.Lock()
	sasGone = true
	mu.Unlock()
	waitFor(t, "t3's link deleted", func() bool { return len(lk.lastLinks()) == 2 })
	waitFor(t, "version 2 applied", func() bool { return r.o.Applied() == 2 })
}

// TestOwnerGracefulRestart: the BGP routes a previous process left in the
// kernel are kept until the new speaker's RIB stops holding.
func TestOwnerGracefulRestart(t *testing.T) {
	d := twoTransports()
	d.BGP = true
	d.Paths.Disabled = true
	lk := newFakeLinks()
	lk.adopt(kernel.Route{Dst: mustPrefix("10.2.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("10.255.0.2")}, Metric: 20, Protocol: kernel.ProtoBGP})
	lk.adopt(kernel.Route{Dst: mustPrefix("10.9.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("10.255.0.2")}, Metric: 7, Protocol: kernel.ProtoStatic})
	speakers := make(chan *blockedSpeaker, 1)
	g := newGate()
	close(g.release)
	r := startOwner(t, Config{BGP: func(_ context.Context, c BGPStart) (Speaker, error) {
		s := &blockedSpeaker{g: g, onRIB: c.OnRIB}
		speakers <- s
		return s, nil
	}}, lk)
	r.updates <- syncer.State{Version: 1, Desired: d}
	lk.waitRoutes(t, "the adopted BGP route only", func(s string) bool { return s == "10.2.0.0/16>[10.255.0.2]/20" })
	s := <-speakers
	s.onRIB(bgp.RIB{Holding: true, Dests: map[netip.Prefix][]bgp.Path{mustPrefix("10.3.0.0/16"): {{NextHop: netip.MustParseAddr("10.255.0.10")}}}})
	lk.waitRoutes(t, "adopted plus learned", func(s string) bool { return s == "10.2.0.0/16>[10.255.0.2]/20 10.3.0.0/16>[10.255.0.10]/20" })
	s.onRIB(bgp.RIB{Dests: map[netip.Prefix][]bgp.Path{mustPrefix("10.3.0.0/16"): {{NextHop: netip.MustParseAddr("10.255.0.10")}}}})
	lk.waitRoutes(t, "the RIB alone after the hold", func(s string) bool { return s == "10.3.0.0/16>[10.255.0.10]/20" })
	if got := lk.kernelRoutes(t); got != "10.3.0.0/16>[10.255.0.10]/20" {
		t.Errorf("kernel routes after the hold: %s (the adopted static route and BGP route must be gone)", got)
	}
}

// TestOwnerLinkFailureHoldsIPsec: a tunnel whose link could not be
// created is not handed to IPsec (its packets would trigger IKE against
// a missing link), and gets no static route; the others go on.
func TestOwnerLinkFailureHoldsIPsec(t *testing.T) {
	d := twoTransports()
	d.Paths.Disabled = true
	lk := newFakeLinks()
	lk.nl.Fail("LinkAdd", "mw-t1", errors.New("refused"))
	ip := &blockedIPsec{g: newGate()}
	close(ip.g.release)
	r := startOwner(t, Config{IPsec: ip}, lk)
	r.updates <- syncer.State{Version: 1, Desired: d}
	lk.waitRoutes(t, "routes without t1", func(s string) bool {
		return s == "10.2.0.0/16>[10.255.0.6]/0 10.3.0.0/16>[10.255.0.10]/0"
	})
	waitFor(t, "ipsec applied", func() bool {
		ip.mu.Lock()
		defer ip.mu.Unlock()
		return len(ip.applied) > 0
	})
	ip.mu.Lock()
	defer ip.mu.Unlock()
	for _, tn := range ip.applied[len(ip.applied)-1].Tunnels {
		if tn.ID == "t1" {
			t.Errorf("t1 handed to IPsec although its link failed")
		}
	}
	if r.o.Applied() != 0 {
		t.Errorf("applied = %d with a failing link", r.o.Applied())
	}
}

func TestTunnelStatusesAndHealth(t *testing.T) {
	d := twoTransports()
	ts := TunnelStatuses(d, []link.Status{{TunnelID: "t1", Present: true, Up: true}, {TunnelID: "t2", Present: true, Up: true}},
		[]ipsec.Status{{TunnelID: "t1", ChildState: "INSTALLED"}, {TunnelID: "t2", ChildState: "INSTALLED"}, {TunnelID: "t3", ChildState: "INSTALLED"}})
	mergeHealth(ts, map[string]PathHealth{
		"t1": {Probed: true, State: probe.StateUp, LossPct: 6, Usable: true},
		"t2": {Probed: true, State: probe.StateDown},
		"t3": {Probed: true, State: probe.StateUp},
	})
	var got []string
	for _, s := range ts {
		got = append(got, s.ID+"="+s.State.String()+"/"+s.ProbeState.String())
	}
	if want := "t1=degraded/up t2=down/down t3=down/up"; strings.Join(got, " ") != want {
		t.Errorf("states %s, want %s", strings.Join(got, " "), want)
	}
}

// dropConn drops what it writes while drop is set (a cut path, seen from
// the reflector: requests arrive, replies vanish).
type dropConn struct {
	probe.PacketConn
	drop *atomic.Bool
}

func (c dropConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.drop.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, a)
}

// TestOwnerFailoverAndHoldDownWithProber runs the real prober over the
// in-memory network (virtual time): cutting t1's replies moves b's route
// to t2 after the detection time (5 lost probes of 100 ms), and the route
// comes back to t1 only after the 2 s hold-down.
func TestOwnerFailoverAndHoldDownWithProber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		fn := probe.NewFakeNet(5 * time.Millisecond)
		var cut atomic.Bool
		for _, a := range []string{"10.255.0.2", "10.255.0.6", "10.255.0.10"} {
			c, err := fn.Listen(ctx, netip.AddrPortFrom(netip.MustParseAddr(a), probe.DefaultPort))
			if err != nil {
				t.Fatal(err)
			}
			if a == "10.255.0.2" {
				c = dropConn{c, &cut}
			}
			go probe.NewReflector(c, nil).Run(ctx)
		}
		lk := newFakeLinks()
		ip := &blockedIPsec{g: newGate()}
		close(ip.g.release)
		o := New(Config{StateDir: t.TempDir(), Links: lk, Firewall: nopBackend{}, IPsec: ip, SAs: allSAs, Listen: fn.Listen})
		updates := make(chan syncer.State, 1)
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx, updates, nil) }()
		updates <- syncer.State{Version: 1, Desired: twoTransports()}

		lastRoutes := func() (string, time.Time) {
			lk.mu.Lock()
			defer lk.mu.Unlock()
			w := lk.writes[len(lk.writes)-1]
			return routesText(w.routes), w.at
		}
		both := "10.2.0.0/16>[10.255.0.2]/0 10.2.0.0/16>[10.255.0.6]/1 10.3.0.0/16>[10.255.0.10]/0"
		time.Sleep(time.Second)
		synctest.Wait()
		if got, _ := lastRoutes(); got != both {
			t.Fatalf("after 1 s: routes %s, want %s", got, both)
		}
		if h := o.Health()["t1"]; !h.Usable || h.State != probe.StateUp || h.RTT != 10*time.Millisecond {
			t.Errorf("t1 health %+v, want up, usable, RTT 10ms", h)
		}

		cutAt := time.Now()
		cut.Store(true)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		got, at := lastRoutes()
		if want := "10.2.0.0/16>[10.255.0.6]/0 10.3.0.0/16>[10.255.0.10]/0"; got != want {
			t.Fatalf("after the cut: routes %s, want %s", got, want)
		}
		if took := at.Sub(cutAt); took < 400*time.Millisecond || took > 700*time.Millisecond {
			t.Errorf("t1's route left %v after the cut, want ~500-600 ms", took)
		}

		restoreAt := time.Now()
		cut.Store(false)
		time.Sleep(time.Second)
		synctest.Wait()
		if h := o.Health()["t1"]; h.State != probe.StateUp || h.Usable || !h.HoldDown {
			t.Errorf("1 s after restore: t1 %+v, want up, in hold-down, not usable", h)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		got, at = lastRoutes()
		if got != both {
			t.Fatalf("after the hold-down: routes %s, want %s", got, both)
		}
		// 3 answered probes (<= 300 ms) + the 2 s hold-down.
		if back := at.Sub(restoreAt); back < 2*time.Second || back > 2500*time.Millisecond {
			t.Errorf("t1 back %v after restore, want 2-2.5 s", back)
		}
		cancel()
		<-done
	})
}

// TestOwnerResyncRepairs: the periodic resync applies every step again
// even when nothing changed (the kernel may have drifted), and hands
// IPsec its state again.
func TestOwnerResyncRepairs(t *testing.T) {
	d := twoTransports()
	d.Paths.Disabled = true
	lk := newFakeLinks()
	ip := &blockedIPsec{g: newGate()}
	close(ip.g.release)
	r := startOwner(t, Config{IPsec: ip, Resync: 100 * time.Millisecond}, lk)
	r.updates <- syncer.State{Version: 1, Desired: d}
	waitFor(t, "three link applies, three route writes and three IPsec applies", func() bool {
		lk.mu.Lock()
		links, routes := len(lk.applies), len(lk.writes)
		lk.mu.Unlock()
		ip.mu.Lock()
		defer ip.mu.Unlock()
		return links >= 3 && routes >= 3 && len(ip.applied) >= 3
	})
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/syncer"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// twoTransports is site a's desired state with two parallel tunnels to
// site b (inet1, inet2), both routing b's LAN, plus one tunnel to c.
func twoTransports() dataplane.Desired {
	tun := func(id, tr, local, remote, site, lan string) dataplane.Tunnel {
		return dataplane.Tunnel{ID: id, LinkName: "mw-" + id, LocalInner: mustPrefix(local), RemoteInner: netip.MustParseAddr(remote),
			LocalUnderlay: netip.MustParseAddr("192.0.2.1"), RemoteUnderlay: netip.MustParseAddr("192.0.2.2"),
			RemoteSite: site, RemoteLANs: []netip.Prefix{mustPrefix(lan)}, LocalTransport: tr, RemoteTransport: tr}
	}
	return dataplane.Desired{Site: "a", Tunnels: []dataplane.Tunnel{
		tun("t1", "inet1", "10.255.0.1/30", "10.255.0.2", "b", "10.2.0.0/16"),
		tun("t2", "inet2", "10.255.0.5/30", "10.255.0.6", "b", "10.2.0.0/16"),
		tun("t3", "inet1", "10.255.0.9/30", "10.255.0.10", "c", "10.3.0.0/16"),
	}}
}

func routesText(d dataplane.Desired) string {
	var b []string
	for _, t := range d.Tunnels {
		b = append(b, fmt.Sprintf("%s:%v", t.ID, t.RemoteLANs))
	}
	return strings.Join(b, " ")
}

func TestRoutedDesired(t *testing.T) {
	d := twoTransports()
	for _, tc := range []struct {
		name     string
		usable   map[string]bool
		fallback map[string]int64
		want     string
	}{
		{"no verdicts: unchanged", nil, nil, "t1:[10.2.0.0/16] t2:[10.2.0.0/16] t3:[10.3.0.0/16]"},
		{"all usable", map[string]bool{"t1": true, "t2": true, "t3": true}, nil, "t1:[10.2.0.0/16] t2:[10.2.0.0/16] t3:[10.3.0.0/16]"},
		{"t1 down: its route goes, t2 carries b", map[string]bool{"t2": true, "t3": true}, nil, "t1:[] t2:[10.2.0.0/16] t3:[10.3.0.0/16]"},
		{"none ever usable: fail-open keeps every route", map[string]bool{}, nil, "t1:[10.2.0.0/16] t2:[10.2.0.0/16] t3:[10.3.0.0/16]"},
		{"both to b down: the one usable most recently keeps b", map[string]bool{"t3": true}, map[string]int64{"t1": 100, "t2": 200}, "t1:[] t2:[10.2.0.0/16] t3:[10.3.0.0/16]"},
		{"both to b down, t1 in hold-down: t1 first", map[string]bool{"t3": true}, map[string]int64{"t1": math.MaxInt64, "t2": 200}, "t1:[10.2.0.0/16] t2:[] t3:[10.3.0.0/16]"},
	} {
		got := routesText(RoutedDesired(d, PathView{Usable: tc.usable, Fallback: tc.fallback}))
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
	if got := routesText(d); got != "t1:[10.2.0.0/16] t2:[10.2.0.0/16] t3:[10.3.0.0/16]" {
		t.Errorf("RoutedDesired changed its input: %s", got)
	}
	if got := fmt.Sprint(ExcludedNextHops(d, map[string]bool{"t2": true})); got != "[10.255.0.2 10.255.0.10]" {
		t.Errorf("ExcludedNextHops = %s", got)
	}
}

func TestBGPDests(t *testing.T) {
	d := twoTransports()
	got := BGPDests(d, map[netip.Prefix][]netip.Addr{
		mustPrefix("10.3.0.0/16"): {netip.MustParseAddr("10.255.0.10")},
		mustPrefix("10.2.0.0/16"): {netip.MustParseAddr("10.255.0.2"), netip.MustParseAddr("10.255.0.6"), netip.MustParseAddr("192.168.1.1")},
		mustPrefix("10.9.0.0/16"): {netip.MustParseAddr("192.168.1.1")},
	})
	if s := fmt.Sprint(got); s != "[{10.2.0.0/16 [t1 t2]} {10.3.0.0/16 [t3]}]" {
		t.Errorf("BGPDests = %s", s)
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

type viewLog struct {
	mu    sync.Mutex
	lines []string
	at    []time.Time
}

func (l *viewLog) apply(_ context.Context, d dataplane.Desired, v PathView) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprint(usableList(v.Usable)))
	l.at = append(l.at, time.Now())
	return nil
}

// lastAt is when the last view was applied.
func (l *viewLog) lastAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.at[len(l.at)-1]
}

func (l *viewLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// TestPathsFailoverAndHoldDown runs Paths over the fake network (in a
// synctest bubble, so times are exact): the first verdicts make every
// tunnel usable at once; cutting t1 takes it out of the view after 5
// probes and 500 ms of silence, and the kernel view is applied once; when
// t1 answers again it is up after 3 replies but carries traffic only
// after the 2 s hold-down.
func TestPathsFailoverAndHoldDown(t *testing.T) {
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
		vl := &viewLog{}
		p := NewPaths(PathsConfig{Listen: fn.Listen, Apply: vl.apply})
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		p.Update(twoTransports())

		time.Sleep(time.Second)
		synctest.Wait()
		got := vl.take()
		if len(got) == 0 || !strings.HasSuffix(got[len(got)-1], "[t1 t2 t3]") {
			t.Fatalf("after 1 s: views %q, want every tunnel usable", got)
		}
		if h := p.Status()["t1"]; !h.Usable || h.State != probe.StateUp || h.RTT != 10*time.Millisecond {
			t.Errorf("t1 health %+v, want up, usable, RTT 10ms", h)
		}

		cutAt := time.Now()
		cut.Store(true)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		got = vl.take()
		if len(got) != 1 || !strings.HasSuffix(got[0], "[t2 t3]") {
			t.Fatalf("after the cut: views %q, want exactly one, without t1", got)
		}
		if took := vl.lastAt().Sub(cutAt); took < 400*time.Millisecond || took > 700*time.Millisecond {
			t.Errorf("t1 left the view %v after the cut, want ~500-600 ms", took)
		}
		select {
		case <-p.Changed():
		default:
			t.Error("no Changed signal for the state change")
		}

		restoreAt := time.Now()
		cut.Store(false)
		time.Sleep(time.Second)
		synctest.Wait()
		if h := p.Status()["t1"]; h.State != probe.StateUp || h.Usable || !h.HoldDown {
			t.Errorf("1 s after restore: t1 %+v, want up, in hold-down, not usable", h)
		}
		// The view may change (t1 now ranks first as a fallback) but t1
		// is not usable yet.
		for _, v := range vl.take() {
			if v != "[t2 t3]" {
				t.Errorf("view during the hold-down: %q, want t1 still out", v)
			}
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		got = vl.take()
		if len(got) != 1 || !strings.HasSuffix(got[0], "[t1 t2 t3]") {
			t.Fatalf("after the hold-down: views %q, want t1 back", got)
		}
		// 3 answered probes (<= 300 ms) + the 2 s hold-down.
		if back := vl.lastAt().Sub(restoreAt); back < 2*time.Second || back > 2500*time.Millisecond {
			t.Errorf("t1 back %v after restore, want 2-2.5 s", back)
		}
		cancel()
		<-done
	})
}

// TestPathsGateOnSA: a tunnel without an installed outbound SA is not
// probed at all (no request leaves: it would hit the IPsec trap policy),
// and not usable; once the SA shows up it is probed and used.
func TestPathsGateOnSA(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		fn := probe.NewFakeNet(time.Millisecond)
		refls := map[string]*probe.Reflector{}
		for _, a := range []string{"10.255.0.2", "10.255.0.6", "10.255.0.10"} {
			c, err := fn.Listen(ctx, netip.AddrPortFrom(netip.MustParseAddr(a), probe.DefaultPort))
			if err != nil {
				t.Fatal(err)
			}
			refls[a] = probe.NewReflector(c, nil)
			go refls[a].Run(ctx)
		}
		d := twoTransports()
		d.Tunnels[1].LocalUnderlay = netip.MustParseAddr("198.51.100.1") // t2 has its own underlay
		var sa2 atomic.Bool
		sas := func() (map[[2]netip.Addr]bool, error) {
			m := map[[2]netip.Addr]bool{{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}: true}
			if sa2.Load() {
				m[[2]netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.2")}] = true
			}
			return m, nil
		}
		vl := &viewLog{}
		p := NewPaths(PathsConfig{Listen: fn.Listen, Apply: vl.apply, SAs: sas})
		go p.Run(ctx)
		p.Update(d)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n, _ := refls["10.255.0.6"].Counts(); n != 0 {
			t.Errorf("t2 without SA: the reflector answered %d requests, want 0", n)
		}
		if h := p.Status()["t2"]; h.Probed || h.Usable {
			t.Errorf("t2 without SA: %+v, want not probed, not usable", h)
		}
		sa2.Store(true)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n, _ := refls["10.255.0.6"].Counts(); n == 0 {
			t.Error("t2 with SA: not probed")
		}
		if h := p.Status()["t2"]; !h.Probed || !h.Usable {
			t.Errorf("t2 with SA: %+v, want probed and usable (first up: no hold-down)", h)
		}
		cancel()
	})
}

func TestMergeHealth(t *testing.T) {
	ts := []syncer.TunnelStatus{{ID: "a", State: "up"}, {ID: "b", State: "up"}, {ID: "c", State: "up"}, {ID: "d", State: "down", Detail: "GRE link missing"}, {ID: "e", State: "up"}}
	mergeHealth(ts, map[string]PathHealth{
		"a": {Probed: true, State: probe.StateUp, Usable: true, RTT: 3 * time.Millisecond},
		"b": {Probed: true, State: probe.StateDown, LossPct: 100},
		"c": {Probed: true, State: probe.StateUp, HoldDown: true},
		"d": {Probed: true, State: probe.StateDown},
		"e": {Probed: true, State: probe.StateUp, Usable: true, LossPct: 7},
	})
	var got []string
	for _, s := range ts {
		got = append(got, fmt.Sprintf("%s=%s/%s/%v", s.ID, s.State, s.ProbeState, s.Usable))
	}
	want := []string{"a=up/up/true", "b=down/down/false", "c=degraded/up/false", "d=down/down/false", "e=degraded/up/true"}
	if !slices.Equal(got, want) {
		t.Errorf("merged\n got %q\nwant %q", got, want)
	}
	if ts[3].Detail != "GRE link missing" || ts[1].Detail == "" {
		t.Errorf("details: %q, %q", ts[3].Detail, ts[1].Detail)
	}
}

// TestKernelApplyPaths: the probes' decisions change only routes (never a
// link: creating and deleting links is Apply's, in its order): t1
// unusable moves the primary route (metric 0) to t2 by an in-place
// replace — never a moment without a route — and drops the backup; the
// same view again writes nothing; t1 usable again puts it back.
func TestKernelApplyPaths(t *testing.T) {
	fake := kernel.NewFakeNetlink()
	k := &Kernel{Link: link.NewManager(fake, link.Options{})}
	d := twoTransports()
	for i := range d.Tunnels {
		d.Tunnels[i].MTU = 1400
		d.Tunnels[i].PSK = make([]byte, 32)
		d.Tunnels[i].RemoteUnderlay = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
	}
	ctx := t.Context()
	routes := func() []string {
		var out []string
		for _, l := range strings.Split(fake.String(), "\n") {
			if strings.HasPrefix(l, "route ") {
				out = append(out, l)
			}
		}
		return out
	}
	// Links are Apply's business: ApplyPaths never creates one ...
	if err := k.ApplyPaths(ctx, d, PathView{}); err != nil {
		t.Fatal(err)
	}
	if w := fake.Writes(); len(w) != 0 {
		t.Fatalf("ApplyPaths on a kernel without links wrote %q", w)
	}
	if err := errors.Join(k.Link.Apply(ctx, d), k.Link.ApplyStaticRoutes(ctx, d)); err != nil {
		t.Fatal(err)
	}
	fake.ResetCalls()
	if err := k.ApplyPaths(ctx, d, PathView{}); err != nil {
		t.Fatal(err)
	}
	if w := fake.Writes(); len(w) != 0 {
		t.Errorf("ApplyPaths after Apply wrote %q", w)
	}
	want := []string{
		"route 10.2.0.0/16 via 10.255.0.2 dev mw-t1 proto 240 metric 0 table 254",
		"route 10.2.0.0/16 via 10.255.0.6 dev mw-t2 proto 240 metric 1 table 254",
		"route 10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 240 metric 0 table 254",
	}
	if got := routes(); !slices.Equal(got, want) {
		t.Fatalf("routes without verdicts\n got %q\nwant %q", got, want)
	}
	fake.ResetCalls()
	down := PathView{Usable: map[string]bool{"t2": true, "t3": true}}
	if err := k.ApplyPaths(ctx, d, down); err != nil {
		t.Fatal(err)
	}
	wantDown := []string{
		"route 10.2.0.0/16 via 10.255.0.6 dev mw-t2 proto 240 metric 0 table 254",
		"route 10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 240 metric 0 table 254",
	}
	if got := routes(); !slices.Equal(got, wantDown) {
		t.Errorf("routes with t1 down\n got %q\nwant %q", got, wantDown)
	}
	if w := fake.Writes(); len(w) != 2 || !strings.HasPrefix(w[0], "RouteReplace 10.2.0.0/16 via 10.255.0.6") || !strings.HasPrefix(w[1], "RouteDel 10.2.0.0/16 via 10.255.0.6 proto 240 metric 1") {
		t.Errorf("writes for t1 down: %q, want the replace in place, then the backup's delete", w)
	}
	fake.ResetCalls()
	if err := k.ApplyPaths(ctx, d, down); err != nil {
		t.Fatal(err)
	}
	if w := fake.Writes(); len(w) != 0 {
		t.Errorf("the same view again wrote %q", w)
	}
	if err := k.ApplyPaths(ctx, d, PathView{Usable: map[string]bool{"t1": true, "t2": true, "t3": true}}); err != nil {
		t.Fatal(err)
	}
	if got := routes(); !slices.Equal(got, want) {
		t.Errorf("routes with t1 back\n got %q\nwant %q", got, want)
	}

	// ... nor deletes one: a new version without t3 seen by the probes
	// before Apply ran takes t3's routes away and leaves its link to
	// Apply (which takes its IPsec down first).
	fake.ResetCalls()
	without := d
	without.Tunnels = d.Tunnels[:2]
	if err := k.ApplyPaths(ctx, without, PathView{Usable: map[string]bool{"t1": true, "t2": true}}); err != nil {
		t.Fatal(err)
	}
	if w := fake.Writes(); !slices.Equal(w, []string{"RouteDel 10.3.0.0/16 via 10.255.0.10 proto 240 metric 0 table 254"}) {
		t.Errorf("ApplyPaths without t3 wrote %q, want only the route's delete", w)
	}
}

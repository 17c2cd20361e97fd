package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// dropConn drops every packet written while drop is set, as a lossy path
// would; it wraps a fake or a real conn alike.
type dropConn struct {
	PacketConn
	drop    *atomic.Bool
	dropped *atomic.Int64
}

func (c dropConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.drop.Load() {
		c.dropped.Add(1)
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// waitEvent waits for the next event of the prober and checks it is want
// ("tunnel from->to"); it fails after a generous deadline.
func waitEvent(t *testing.T, p *Prober, want string) Event {
	t.Helper()
	select {
	case ev := <-p.Events():
		if got := fmt.Sprintf("%s %v->%v", ev.Tunnel, ev.From, ev.To); got != want {
			t.Fatalf("event %q, want %q", got, want)
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatalf("no event %q within 20s; snapshot %+v", want, p.Snapshot())
	}
	return Event{}
}

func only(t *testing.T, p *Prober) Snapshot {
	t.Helper()
	s := p.Snapshot()
	if len(s) != 1 {
		t.Fatalf("snapshot has %d tunnels, want 1", len(s))
	}
	return s[0].Snapshot
}

// scenario runs a Reflector and a Prober over listen and checks the
// liveness rules end to end: unknown -> up on the first reply, up -> down
// after 5 consecutive losses, down -> up after 3 consecutive replies, and
// the loss and RTT figures. With exact (the fake in a synctest bubble)
// counts and RTT are checked exactly, otherwise with bounds. It returns
// after both Run calls have returned.
func scenario(t *testing.T, listen ListenFunc, addr netip.Addr, exact bool, wantRTT time.Duration, whileRunning func()) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var drop atomic.Bool
	var dropped atomic.Int64
	rconn, err := listen(ctx, netip.AddrPortFrom(addr, 0))
	if err != nil {
		t.Fatal(err)
	}
	refl := NewReflector(rconn, nil)
	p, err := NewProber(Config{
		Interval: 20 * time.Millisecond,
		Stats:    StatsConfig{Window: 10000, Timeout: 200 * time.Millisecond},
		Listen: func(ctx context.Context, local netip.AddrPort) (PacketConn, error) {
			c, err := listen(ctx, local)
			if err != nil {
				return nil, err
			}
			return dropConn{c, &drop, &dropped}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply([]Target{{Tunnel: "t1", Local: addr, Remote: addrPort(rconn.LocalAddr())}}); err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 2)
	go func() { runErr <- refl.Run(ctx) }()
	go func() { runErr <- p.Run(ctx) }()

	waitEvent(t, p, "t1 unknown->up")
	s := only(t, p)
	if exact && (s.RTT != wantRTT || s.Received != 1 || s.Sent != 1) {
		t.Errorf("first reply: %s; want rtt=%v after exactly one probe", s.text(), wantRTT)
	}
	if !exact && (s.RTT <= 0 || s.RTT >= 200*time.Millisecond) {
		t.Errorf("first reply: rtt %v outside (0, 200ms)", s.RTT)
	}

	drop.Store(true)
	down := waitEvent(t, p, "t1 up->down")
	s = only(t, p)
	// Down comes from silence (5 unanswered probes, 5 intervals without a
	// reply), before any of them has timed out (200 ms). The last reply
	// came 10 ms after its probe; the prober checks the clock half way
	// between requests too, so the fifth interval after it ends (at
	// 110 ms) with exactly 5 requests unanswered.
	if s.State != StateDown || s.Sent-s.Received < 5 || exact && (s.Sent-s.Received != 5 || s.Lost != 0) {
		t.Errorf("at down: %s; want down after exactly 5 unanswered probes, none timed out yet", s.text())
	}

	drop.Store(false)
	up := waitEvent(t, p, "t1 down->up")
	s = only(t, p)
	if s.ConsecutiveSuccesses < 3 || exact && s.ConsecutiveSuccesses != 3 {
		t.Errorf("at up: %s; want 3 successes", s.text())
	}
	// Dropped probes sent within the last timeout (200 ms = 10 intervals)
	// may still be pending rather than lost.
	if n := uint64(dropped.Load()); s.Lost > n || n-s.Lost > 11 {
		t.Errorf("at up: lost %d, dropped %d", s.Lost, n)
	}
	if want := 100 * float64(s.Lost) / float64(s.Lost+s.Received); s.LossPct != want {
		t.Errorf("at up: loss %.3f%%, want %.3f%%", s.LossPct, want)
	}
	if s.LastTransition != up.Transition || !up.At.After(down.At) {
		t.Errorf("last transition %+v, want %+v after %v", s.LastTransition, up.Transition, down.At)
	}
	if exact && (s.SRTT != wantRTT || s.P99 != wantRTT || s.Jitter != 0) {
		t.Errorf("at up: %s; want every RTT %v", s.text(), wantRTT)
	}
	if answered, _ := refl.Counts(); answered != s.Received+s.Late+s.Duplicate+s.Unknown && exact {
		t.Errorf("reflector answered %d, prober got %s", answered, s.text())
	}

	if whileRunning != nil {
		whileRunning()
	}
	cancel()
	for range 2 {
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

// TestProberFake: the scenario over FakeNet with 5 ms each way, in a
// synctest bubble: deterministic, exact, and synctest fails the test if a
// goroutine outlives Run.
func TestProberFake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewFakeNet(5 * time.Millisecond)
		scenario(t, n.Listen, netip.MustParseAddr("10.255.0.1"), true, 10*time.Millisecond, nil)
	})
}

// TestProberUDP: the same scenario over real UDP sockets on loopback with
// ephemeral ports, then a check that no goroutine of this package is left.
func TestProberUDP(t *testing.T) {
	scenario(t, ListenUDP, netip.MustParseAddr("127.0.0.1"), false, 0, func() {
		// The leak check must see the goroutines it looks for.
		if left := strings.Join(leftoverGoroutines(), "\n\n"); !strings.Contains(left, "(*Prober).runTunnel") ||
			!strings.Contains(left, "(*Prober).readReplies") || !strings.Contains(left, "(*Reflector).Run") {
			t.Errorf("the leak check does not see the running goroutines:\n%s", left)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := leftoverGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left:\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond) // polling a leak check, not synchronising
	}
}

func leftoverGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "edge/probe.(*Prober)") || strings.Contains(g, "edge/probe.(*Reflector)") || strings.Contains(g, "edge/probe.closeOnDone") {
			out = append(out, g)
		}
	}
	return out
}

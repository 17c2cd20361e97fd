package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestNewProberValidates(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		ok       bool
	}{{0, true}, {20 * time.Millisecond, true}, {10 * time.Second, true}, {19 * time.Millisecond, false}, {11 * time.Second, false}, {-1, false}} {
		p, err := NewProber(Config{Interval: tc.interval})
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("interval %v: %v", tc.interval, err)
		}
		if tc.interval == 0 && p != nil && (p.cfg.Interval != DefaultInterval || p.cfg.Stats.Timeout != time.Second || p.cfg.Port != DefaultPort) {
			t.Errorf("defaults: %+v", p.cfg)
		}
	}
	p, _ := NewProber(Config{Interval: time.Second})
	if p.cfg.Stats.Timeout != 3*time.Second {
		t.Errorf("timeout for 1s interval: %v", p.cfg.Stats.Timeout)
	}
}

func TestApplyValidates(t *testing.T) {
	a4, b4, a6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddrPort("10.0.0.2:0"), netip.MustParseAddr("fd00::1")
	good := Target{Tunnel: "t", Local: a4, Remote: b4}
	for _, tc := range []struct {
		name    string
		targets []Target
	}{
		{"no id", []Target{{Local: a4, Remote: b4}}},
		{"no local", []Target{{Tunnel: "t", Remote: b4}}},
		{"no remote", []Target{{Tunnel: "t", Local: a4}}},
		{"families", []Target{{Tunnel: "t", Local: a6, Remote: b4}}},
		{"twice", []Target{good, good}},
	} {
		p, _ := NewProber(Config{})
		p.Apply([]Target{{Tunnel: "keep", Local: a4, Remote: b4}})
		if err := p.Apply(tc.targets); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v", tc.name, err)
		}
		if s := p.Snapshot(); len(s) != 1 || s[0].Target.Tunnel != "keep" {
			t.Errorf("%s: a failed Apply changed the targets: %+v", tc.name, s)
		}
	}
	p, _ := NewProber(Config{Port: 9})
	if err := p.Apply([]Target{good}); err != nil {
		t.Fatal(err)
	}
	if got := p.Snapshot()[0].Target.Remote.String(); got != "10.0.0.2:9" {
		t.Errorf("remote without port became %s, want the configured port", got)
	}
}

func tunnelsText(p *Prober) string {
	var b strings.Builder
	for _, s := range p.Snapshot() {
		fmt.Fprintf(&b, "%s %v->%v %v sent=%d recv=%d\n", s.Target.Tunnel, s.Target.Local, s.Target.Remote, s.State, s.Sent, s.Received)
	}
	return b.String()
}

// TestApplyKeepsUnchangedTunnels: re-applying the same targets changes
// nothing (same stats, no new socket); adding one keeps the others'
// stats; changing one's addresses starts it afresh; removing stops it.
func TestApplyKeepsUnchangedTunnels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		n := NewFakeNet(time.Millisecond)
		var listens atomic.Int64
		p, _ := NewProber(Config{Listen: func(ctx context.Context, a netip.AddrPort) (PacketConn, error) {
			listens.Add(1)
			return n.Listen(ctx, a)
		}})
		for _, a := range []string{"10.0.0.2:7402", "10.0.0.6:7402", "10.0.0.10:7402"} {
			c, _ := n.Listen(ctx, netip.MustParseAddrPort(a))
			go NewReflector(c, nil).Run(ctx)
		}
		t1 := Target{Tunnel: "t1", Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddrPort("10.0.0.2:7402")}
		t2 := Target{Tunnel: "t2", Local: netip.MustParseAddr("10.0.0.5"), Remote: netip.MustParseAddrPort("10.0.0.6:0")}
		t1moved := Target{Tunnel: "t1", Local: netip.MustParseAddr("10.0.0.9"), Remote: netip.MustParseAddrPort("10.0.0.10:7402")}
		done := make(chan error)
		p.Apply([]Target{t1})
		go func() { done <- p.Run(ctx) }()
		step := func(name string, targets []Target, wantListens int64, want string) {
			t.Helper()
			if targets != nil {
				if err := p.Apply(targets); err != nil {
					t.Fatal(err)
				}
			}
			// Fake time; 430 ms so no step ends at the instant of a send
			// (interval 100 ms), leaving every reply in.
			time.Sleep(430 * time.Millisecond)
			synctest.Wait()
			if got := tunnelsText(p); got != want || listens.Load() != wantListens {
				t.Errorf("%s: listens %d (want %d)\n got:\n%s\nwant:\n%s", name, listens.Load(), wantListens, got, want)
			}
		}
		step("start", nil, 1, "t1 10.0.0.1->10.0.0.2:7402 up sent=5 recv=5\n")
		if err := p.Run(ctx); err == nil { // the first Run is active by now
			t.Fatal("a second concurrent Run did not fail")
		}
		step("same again", []Target{t1}, 1, "t1 10.0.0.1->10.0.0.2:7402 up sent=9 recv=9\n")
		step("add t2", []Target{t2, t1}, 2, "t1 10.0.0.1->10.0.0.2:7402 up sent=13 recv=13\nt2 10.0.0.5->10.0.0.6:7402 up sent=5 recv=5\n")
		step("move t1", []Target{t1moved, t2}, 3, "t1 10.0.0.9->10.0.0.10:7402 up sent=5 recv=5\nt2 10.0.0.5->10.0.0.6:7402 up sent=9 recv=9\n")
		step("remove t1", []Target{t2}, 3, "t2 10.0.0.5->10.0.0.6:7402 up sent=13 recv=13\n")
		step("remove all", []Target{}, 3, "")
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// TestProberMatching drives the far end by hand to check which replies
// count: from the wrong source, of another session, of the wrong type,
// duplicated; and that the reflector's holding time is subtracted.
func TestProberMatching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n := NewFakeNet(0)
		far, _ := n.Listen(ctx, netip.MustParseAddrPort("10.0.0.2:7402"))
		stranger, _ := n.Listen(ctx, netip.MustParseAddrPort("10.0.0.3:7402"))
		p, _ := NewProber(Config{Interval: time.Second, Listen: n.Listen})
		p.Apply([]Target{{Tunnel: "t1", Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddrPort("10.0.0.2:7402")}})
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()

		buf := make([]byte, 100)
		nb, from, err := far.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		req, err := Unmarshal(buf[:nb])
		if err != nil || req.Type != TypeRequest || req.Seq != 1 {
			t.Fatalf("request %+v, %v", req, err)
		}
		time.Sleep(30 * time.Millisecond)
		reply := req
		reply.Type, reply.ReflectRx, reply.ReflectTx = TypeReply, 1000, 1000+int64(10*time.Millisecond)
		send := func(c PacketConn, pk Packet) {
			b, _ := pk.Marshal(nil)
			c.WriteTo(b, from)
		}
		other := reply
		other.Session++
		send(stranger, reply) // wrong source
		send(far, other)      // other session
		send(far, req)        // a request, not a reply
		far.WriteTo([]byte("junk"), from)
		synctest.Wait()
		if s := only(t, p); s.State != StateUnknown || s.Received+s.Unknown+s.Duplicate != 0 {
			t.Fatalf("a stray packet counted: %s", s.text())
		}
		send(far, reply)
		send(far, reply) // duplicate
		synctest.Wait()
		s := only(t, p)
		if s.State != StateUp || s.Received != 1 || s.Duplicate != 1 || s.RTT != 20*time.Millisecond {
			t.Errorf("after the reply: %s; want up, rtt 30ms-10ms held", s.text())
		}
		cancel()
		<-done
	})
}

// TestReflector: requests are answered with the same session, seq and
// sender time; anything else is rejected without an answer.
func TestReflector(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		n := NewFakeNet(0)
		rc, _ := n.Listen(ctx, netip.MustParseAddrPort("10.0.0.2:7402"))
		client, _ := n.Listen(ctx, netip.MustParseAddrPort("10.0.0.1:0"))
		r := NewReflector(rc, nil)
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.2:7402"))
		reply, _ := Packet{Type: TypeReply, Session: 1, Seq: 1}.Marshal(nil)
		client.WriteTo(reply, to)
		client.WriteTo([]byte("MWP1 but too short"), to)
		req, _ := Packet{Type: TypeRequest, Session: 7, Seq: 9, SenderTx: 42}.Marshal(nil)
		client.WriteTo(req, to)
		buf := make([]byte, 100)
		nb, from, err := client.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unmarshal(buf[:nb])
		if err != nil || got.Type != TypeReply || got.Session != 7 || got.Seq != 9 || got.SenderTx != 42 || got.ReflectTx < got.ReflectRx || from.String() != "10.0.0.2:7402" {
			t.Errorf("reply %+v from %v, %v", got, from, err)
		}
		client.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := client.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("a second answer, or %v", err)
		}
		if a, rej := r.Counts(); a != 1 || rej != 2 {
			t.Errorf("answered %d rejected %d, want 1 and 2", a, rej)
		}
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

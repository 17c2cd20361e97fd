package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/health"
)

// TestThrottle: a state change pokes at once; figures-only changes poke at
// once when the last poke is old, and otherwise once, when the period is
// over.
func TestThrottle(t *testing.T) {
	const every = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan health.Change)
	pokes := make(chan time.Time, 16)
	var wg sync.WaitGroup
	wg.Go(func() { throttle(ctx, changes, every, func() { pokes <- time.Now() }) })
	defer func() { cancel(); wg.Wait() }()

	next := func(what string) time.Time {
		t.Helper()
		select {
		case p := <-pokes:
			return p
		case <-time.After(5 * time.Second):
			t.Fatalf("no poke for %s", what)
			return time.Time{}
		}
	}
	start := time.Now()
	changes <- health.Change{}
	first := next("the first figures change")
	if first.Sub(start) > every/2 {
		t.Errorf("the first change waited %v", first.Sub(start))
	}
	// Three figures-only changes within the period: one poke, at its end.
	for range 3 {
		changes <- health.Change{}
	}
	second := next("the held-back figures changes")
	if gap := second.Sub(first); gap < every-every/10 {
		t.Errorf("figures-only pokes %v apart, want at least %v", gap, every)
	}
	// A state change right after is not held back.
	sent := time.Now()
	changes <- health.Change{StateChanged: true}
	if d := next("the state change").Sub(sent); d > every/2 {
		t.Errorf("a state change waited %v", d)
	}
	select {
	case p := <-pokes:
		t.Errorf("an extra poke %v after the last change", p.Sub(start))
	case <-time.After(2 * every):
	}
}

func TestProbeFigures(t *testing.T) {
	var m probeFigures
	m.add(health.TunnelStatus{State: "up"}) // not probed
	if m.rtt != nil || m.jitter != nil || m.loss != nil {
		t.Fatalf("unprobed tunnel gave figures %+v", m)
	}
	m.add(health.TunnelStatus{Probed: true, ProbeState: "up", RTTMillis: 20, JitterMillis: 1, LossPct: 0})
	m.add(health.TunnelStatus{Probed: true, ProbeState: "up", RTTMillis: 25, JitterMillis: 0.5, LossPct: 2})
	if *m.rtt != 25 || *m.jitter != 1 || *m.loss != 2 {
		t.Errorf("worst of two ends: rtt %v jitter %v loss %v, want 25 1 2", *m.rtt, *m.jitter, *m.loss)
	}
	var down probeFigures
	down.add(health.TunnelStatus{Probed: true, ProbeState: "down", RTTMillis: 20, LossPct: 100})
	if down.rtt != nil || down.jitter != nil || down.loss == nil || *down.loss != 100 {
		t.Errorf("down tunnel: %+v, want loss 100 and no RTT or jitter", down)
	}
}

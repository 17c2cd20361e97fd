package bgp

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leftoverGoroutines returns the stacks of goroutines started by this
// package or by GoBGP, except GoBGP's Serve loop: GoBGP v3 has no way to
// end it, it stays parked on its channels after Stop (see Speaker).
func leftoverGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*BgpServer).Serve(") {
			continue
		}
		if strings.Contains(g, "created by github.com/meshwan/meshwan/edge/bgp.Start") ||
			strings.Contains(g, "created by github.com/osrg/gobgp") ||
			strings.Contains(g, "created by github.com/eapache/channels") {
			out = append(out, g)
		}
	}
	return out
}

// TestStopLeavesNoGoroutines: after Stop, the publish loop, GoBGP's
// peer goroutines and its event watcher are gone (polled: GoBGP ends some
// of them asynchronously).
func TestStopLeavesNoGoroutines(t *testing.T) {
	a := startNode(t, "a", "127.0.7.1", 4200000071)
	b := startNode(t, "b", "127.0.7.2", 4200000072)
	a.apply(Desired{Originate: []netip.Prefix{mp("10.71.0.0/16")}, Neighbors: []Neighbor{a.to(b)}})
	b.apply(Desired{Neighbors: []Neighbor{b.to(a)}})
	b.waitRoutes("b's routes", "10.71.0.0/16 via 127.0.7.1")
	if left := strings.Join(leftoverGoroutines(), "\n\n"); !strings.Contains(left, "(*Speaker).publishLoop") || !strings.Contains(left, "created by github.com/osrg/gobgp") {
		t.Fatalf("the leak check does not see the running goroutines:\n%s", left)
	}
	a.s.Stop()
	b.s.Stop()
	a.s.Stop() // idempotent
	deadline := time.Now().Add(waitTimeout)
	for {
		left := leftoverGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Stop:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

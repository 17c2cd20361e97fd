package bgp

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// TestOnRIB: B publishes a RIB at start, again when A's prefix arrives
// (Choose gives the route via A) and when A withdraws it (a RIB without
// it), and periodically without any event; no RIB is shared with an
// earlier one; none is Holding (no restart); Stop waits for an OnRIB call
// in progress, and once Stop returned OnRIB is never called again.
func TestOnRIB(t *testing.T) {
	a := startNode(t, "a", "127.0.8.1", 4200000081)
	b := &node{t: t, name: "b", addr: ma("127.0.8.2"), asn: 4200000082}
	b.port = freePort(t, b.addr)
	b.cfg = Config{ASN: b.asn, RouterID: b.addr, ListenPort: int32(b.port), ListenAddrs: []netip.Addr{b.addr},
		Logger: testLogger(t).With("node", "b"), ResyncInterval: 200 * time.Millisecond}
	b.start()

	first := b.waitRIB("a first rib, before any neighbor", func(r RIB) (bool, string) { return true, "" })
	if len(first.Dests) != 0 || first.Holding {
		t.Errorf("first rib = %+v, want empty and not holding", first)
	}
	a.apply(Desired{Originate: []netip.Prefix{mp("10.81.0.0/16")}, Neighbors: []Neighbor{a.to(b)}})
	b.apply(Desired{Neighbors: []Neighbor{b.to(a)}})
	learned := b.waitRoutes("b's routes with a's prefix", "10.81.0.0/16 via 127.0.8.1")
	if learned.Holding {
		t.Error("a speaker that is not restarting published a holding rib")
	}

	// Periodic: more RIBs arrive with nothing changing, each a copy of
	// its own.
	_, n, _ := b.ribs.latest()
	later := b.waitRIB("two more periodic ribs", func(r RIB) (bool, string) {
		_, m, _ := b.ribs.latest()
		return m >= n+2, "published " + time.Now().Format(time.StampMilli)
	})
	if !reflect.DeepEqual(later.Dests, learned.Dests) {
		t.Errorf("periodic rib differs with nothing changed:\n%+v\n%+v", later.Dests, learned.Dests)
	}
	if reflect.ValueOf(later.Dests).UnsafePointer() == reflect.ValueOf(learned.Dests).UnsafePointer() {
		t.Error("two published ribs share their Dests map")
	}

	a.apply(Desired{Neighbors: []Neighbor{a.to(b)}})
	b.waitRoutes("b's routes after a withdrew its prefix", "")

	// Stop while OnRIB runs: Stop must wait for it, and nothing is
	// published once Stop returned. The ticker fires every 200 ms, so the
	// next periodic publish blocks in OnRIB.
	entered, release := b.ribs.blockNext()
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("no periodic publish to block")
	}
	stopped := make(chan struct{})
	go func() {
		b.s.Stop()
		b.ribs.markStopped()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Error("Stop returned while OnRIB was still running")
	case <-time.After(time.Second): // asserting an absence: no event to await
	}
	close(release)
	<-stopped
	a.s.Stop() // a's session drop would be an event for a loop still running
	time.Sleep(time.Second)
	if late := b.ribs.lateCalls(); late != 0 {
		t.Errorf("OnRIB called %d times after Stop returned", late)
	}
}

// TestRestartHoldEndsAtRestartTime: a speaker started with Restarting
// whose tunnel neighbor never answers publishes Holding RIBs, then,
// RestartTime after its start, a RIB that is not Holding.
func TestRestartHoldEndsAtRestartTime(t *testing.T) {
	n := &node{t: t, name: "r", addr: ma("127.0.9.1"), asn: 4200000091}
	n.port = freePort(t, n.addr)
	n.cfg = Config{ASN: n.asn, RouterID: n.addr, ListenPort: int32(n.port), ListenAddrs: []netip.Addr{n.addr},
		Logger: testLogger(t).With("node", "r"), Restarting: true, RestartTime: 2 * time.Second, ResyncInterval: time.Minute}
	start := time.Now()
	n.start()
	// A neighbor nobody answers for: the End-of-RIB never comes.
	silent := Neighbor{Addr: ma("127.0.9.2"), ASN: 4200000092, LocalAddr: n.addr, Port: uint16(freePort(t, ma("127.0.9.2")))}
	n.apply(Desired{Neighbors: []Neighbor{silent}})
	n.waitRIB("a holding rib", func(r RIB) (bool, string) { return r.Holding, "not holding" })
	n.waitRIB("the hold to end", func(r RIB) (bool, string) { return !r.Holding, "holding" })
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("the hold ended after %v, before the restart time (2s)", d)
	}
	checkHoldOnce(t, n.ribs.all())
}

// checkHoldOnce fails unless ribs are Holding up to some point and not
// after it: a hold, once over, never comes back.
func checkHoldOnce(t *testing.T, ribs []RIB) {
	t.Helper()
	over := false
	for i, r := range ribs {
		if r.Holding && over {
			t.Errorf("rib %d of %d is holding again after the hold ended", i, len(ribs))
		}
		over = over || !r.Holding
	}
}

package health_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/health"
)

// liveKey reads a site's stored report key: whether it exists, and its lease.
func (f *fixture) liveKey(t *testing.T, site string) (bool, int64) {
	t.Helper()
	kv, ok, err := f.st.Get(context.Background(), "health/live/"+site)
	if err != nil {
		t.Fatal(err)
	}
	return ok, kv.Lease
}

// waitFor polls cond (another replica's copy follows etcd by a watch, so
// there is no event of its own to wait on).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOneLeaseForManySessions: every session's report lives under the one
// process lease; reports between summaries write nothing; closing a session
// deletes its key and only its key; revoking the lease (what its expiry
// after a controller crash does) removes every report, and the registry
// writes them again under a new lease.
func TestOneLeaseForManySessions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const n = 20
	sessions := make([]*health.Session, n)
	for i := range sessions {
		s, err := f.reg.Connect(ctx, fmt.Sprintf("s%02d", i), "v1")
		if err != nil {
			t.Fatal(err)
		}
		sessions[i] = s
		if err := s.Report(ctx, report(10, "up")); err != nil {
			t.Fatal(err)
		}
	}
	lease := f.reg.Lease()
	if lease == 0 {
		t.Fatal("no process lease")
	}
	for i := range n {
		site := fmt.Sprintf("s%02d", i)
		if ok, l := f.liveKey(t, site); !ok || l != lease {
			t.Fatalf("report of %s: stored %v under lease %x, want under the process lease %x", site, ok, l, lease)
		}
	}

	// Ten seconds of per-second figures-only reports from every edge: no
	// etcd write at all (and, unlike a lease per session, no keep-alive).
	before := f.revision(t)
	for sec := range 10 {
		f.clock.Advance(time.Second)
		for _, s := range sessions {
			if err := s.Report(ctx, report(11+float64(sec), "up")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if writes := f.revision(t) - before; writes != 0 {
		t.Errorf("%d reports between summaries made %d etcd writes, want 0", 10*n, writes)
	}

	// Closing one session deletes its report, not the others'.
	if err := sessions[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.liveKey(t, "s00"); ok {
		t.Error("a closed session's report is still stored")
	}
	if st := f.stored(t, "s00"); st.State != health.Down {
		t.Errorf("closed session: %v in etcd, want down", st.State)
	}
	if ok, _ := f.liveKey(t, "s01"); !ok {
		t.Error("closing one session deleted another's report")
	}

	// The controller dies: its lease expires (here: is revoked) and every
	// report with it.
	if err := f.st.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		site := fmt.Sprintf("s%02d", i)
		if st := f.stored(t, site); st.State != health.Down {
			t.Errorf("after the lease ended, %s is %v in etcd, want down", site, st.State)
		}
	}
	// This process lives on: the next write finds the lease gone, takes a
	// new one, and every session writes again under it.
	f.clock.Advance(time.Second)
	if err := sessions[1].Report(ctx, report(12, "down")); err != nil {
		t.Fatalf("a state change after the lease was lost: %v", err)
	}
	relet := f.reg.Lease()
	if relet == 0 || relet == lease {
		t.Fatalf("lease after the loss %x, want a new one (old %x)", relet, lease)
	}
	for _, s := range sessions[2:] {
		if err := s.Report(ctx, report(12, "up")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < n; i++ {
		site := fmt.Sprintf("s%02d", i)
		if ok, l := f.liveKey(t, site); !ok || l != relet {
			t.Errorf("%s after the new lease: stored %v under %x, want under %x", site, ok, l, relet)
		}
	}

	// A clean stop revokes the lease: the remaining reports go at once.
	for _, s := range sessions[1:] {
		s.Close(ctx)
	}
}

// TestCrashedControllerReportsVanish: a second controller process whose
// lease ends (as it does LeaseTTL after the process dies) leaves no report
// behind, as seen by a registry of another process.
func TestCrashedControllerReportsVanish(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := health.New(f.srv.NewStore(), health.Config{})
	run(t, other)
	for _, site := range []string{"x", "y"} {
		s, err := other.Connect(ctx, site, "v1")
		if err != nil {
			t.Fatal(err)
		}
		s.Report(ctx, report(10, "up"))
	}
	waitFor(t, "this replica sees the other's edges up", func() bool {
		all, err := f.reg.All(ctx)
		return err == nil && all["x"].State == health.Up && all["y"].State == health.Up
	})
	if err := f.st.Revoke(ctx, other.Lease()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "this replica sees the other's edges down", func() bool {
		all, err := f.reg.All(ctx)
		return err == nil && all["x"].State == health.Down && all["y"].State == health.Down
	})
}

// TestSilentEdgeExpires: an edge whose stream stays open but which stops
// reporting has its stored report deleted once the last one is LeaseTTL
// old (what a session lease's expiry did); its next report writes it again.
func TestSilentEdgeExpires(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s, err := f.reg.Connect(ctx, "a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	s.Report(ctx, report(10, "up"))
	f.clock.Advance(health.LeaseTTL - time.Second)
	f.reg.ExpireSilent(ctx)
	if st := f.stored(t, "a"); st.State != health.Up {
		t.Fatalf("expired before LeaseTTL: %v", st.State)
	}
	f.clock.Advance(time.Second)
	f.reg.ExpireSilent(ctx)
	if st := f.stored(t, "a"); st.State != health.Down {
		t.Errorf("a silent edge's report after LeaseTTL: %v in etcd, want down", st.State)
	}
	if st, _ := f.reg.Get(ctx, "a"); st.State != health.Down {
		t.Errorf("a silent edge's status here: %v, want down", st.State)
	}
	s.Report(ctx, report(11, "up"))
	if st := f.stored(t, "a"); st.State != health.Up || rttOf(st) != 11 {
		t.Errorf("after the edge spoke again: %v RTT %v in etcd, want up 11", st.State, rttOf(st))
	}
}

// TestReadsDecodeOnce: another replica's reports are decoded once per
// change, not on every All (the same decoded report comes back), and a
// change is seen.
func TestReadsDecodeOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := health.New(f.srv.NewStore(), health.Config{SummaryPeriod: time.Hour})
	run(t, other)
	s, err := other.Connect(ctx, "x", "v1")
	if err != nil {
		t.Fatal(err)
	}
	s.Report(ctx, report(10, "up"))
	var first map[string]health.Status
	waitFor(t, "the report", func() bool {
		first, err = f.reg.All(ctx)
		return err == nil && f.reg.CacheReady() && rttOf(first["x"]) == 10
	})
	again, err := f.reg.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if &again["x"].Report.Tunnels[0] != &first["x"].Report.Tunnels[0] {
		t.Error("All decoded an unchanged stored report again")
	}
	s.Report(ctx, report(20, "down"))
	waitFor(t, "the state change", func() bool {
		all, err := f.reg.All(ctx)
		return err == nil && rttOf(all["x"]) == 20
	})
	if st, err := f.reg.Get(ctx, "x"); err != nil || rttOf(st) != 20 {
		t.Errorf("Get: RTT %v %v, want 20", rttOf(st), err)
	}
}

// TestReportAllocations: a report that needs no write allocates nothing.
func TestReportAllocations(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s, err := f.reg.Connect(ctx, "a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	rep := report(10, "up")
	s.Report(ctx, rep)
	rtt := 10.0
	allocs := testing.AllocsPerRun(200, func() {
		rtt++
		rep.Tunnels[0].RTTMillis = rtt
		if err := s.Report(ctx, rep); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("a figures-only report made %v allocations, want 0", allocs)
	}
}

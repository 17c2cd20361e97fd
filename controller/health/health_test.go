package health_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/store"
)

// clock is a test clock the Registry reads.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func report(rtt float64, state string) health.Report {
	return health.Report{AppliedVersion: 7,
		Tunnels: []health.TunnelStatus{
			{TunnelID: "a.inet1~b.inet1", State: state, LinkUp: true, IKEState: "ESTABLISHED", ChildState: "INSTALLED",
				Probed: true, ProbeState: "up", Usable: state == "up", RTTMillis: rtt, RTTP99Millis: 2 * rtt, JitterMillis: rtt / 10,
				LossPct: 0.5, BytesIn: uint64(rtt * 1000), Transitions: 1},
			{TunnelID: "a.inet2~b.inet2", State: "up", LinkUp: true, Probed: true, ProbeState: "up", Usable: true, RTTMillis: 40},
		},
		BGPPeers:   []health.BGPPeer{{Neighbor: "10.255.0.2", ASN: 65002, TunnelID: "a.inet1~b.inet1", State: "established", Received: 3}},
		ClassPaths: []health.ClassPath{{TrafficClass: "voice", RemoteSite: "b", TunnelID: "a.inet1~b.inet1", MeetsSLA: true}},
	}
}

func TestFingerprint(t *testing.T) {
	base := health.Fingerprint(report(10, "up"))
	same := map[string]func(r *health.Report){
		"rtt":     func(r *health.Report) { r.Tunnels[0].RTTMillis = 99 },
		"rtt p99": func(r *health.Report) { r.Tunnels[0].RTTP99Millis = 99 },
		"jitter":  func(r *health.Report) { r.Tunnels[0].JitterMillis = 9 },
		"loss":    func(r *health.Report) { r.Tunnels[0].LossPct = 3 },
		"counters": func(r *health.Report) {
			r.Tunnels[0].BytesOut, r.Tunnels[0].PacketsIn, r.BGPPeers[0].Received = 5, 6, 7
		},
		"transitions":  func(r *health.Report) { r.Tunnels[0].Transitions = 9 },
		"detail":       func(r *health.Report) { r.Tunnels[0].Detail = "loss 3 %" },
		"meets sla":    func(r *health.Report) { r.ClassPaths[0].MeetsSLA = false },
		"updated at":   func(r *health.Report) { r.UpdatedAt = time.Now() },
		"tunnel order": func(r *health.Report) { r.Tunnels[0], r.Tunnels[1] = r.Tunnels[1], r.Tunnels[0] },
	}
	for name, edit := range same {
		r := report(10, "up")
		edit(&r)
		if health.Fingerprint(r) != base {
			t.Errorf("%s changed the fingerprint", name)
		}
	}
	differ := map[string]func(r *health.Report){
		"applied version":  func(r *health.Report) { r.AppliedVersion = 8 },
		"agent version":    func(r *health.Report) { r.AgentVersion = "v2" },
		"tunnel state":     func(r *health.Report) { r.Tunnels[1].State = "degraded" },
		"probe state":      func(r *health.Report) { r.Tunnels[0].ProbeState = "down" },
		"probed":           func(r *health.Report) { r.Tunnels[0].Probed = false },
		"usable":           func(r *health.Report) { r.Tunnels[0].Usable = false },
		"link":             func(r *health.Report) { r.Tunnels[0].LinkUp = false },
		"ike":              func(r *health.Report) { r.Tunnels[0].IKEState = "CONNECTING" },
		"child":            func(r *health.Report) { r.Tunnels[0].ChildState = "" },
		"tunnel gone":      func(r *health.Report) { r.Tunnels = r.Tunnels[:1] },
		"bgp state":        func(r *health.Report) { r.BGPPeers[0].State = "active" },
		"bgp peer gone":    func(r *health.Report) { r.BGPPeers = nil },
		"class path moved": func(r *health.Report) { r.ClassPaths[0].TunnelID = "a.inet2~b.inet2" },
		"class path none":  func(r *health.Report) { r.ClassPaths[0].TunnelID = "" },
		"class path added": func(r *health.Report) {
			r.ClassPaths = append(r.ClassPaths, health.ClassPath{TrafficClass: "bulk", RemoteSite: "b", TunnelID: "a.inet2~b.inet2"})
		},
	}
	for name, edit := range differ {
		r := report(10, "up")
		edit(&r)
		if health.Fingerprint(r) == base {
			t.Errorf("%s left the fingerprint unchanged", name)
		}
	}
}

type fixture struct {
	srv   *etcdtest.Server
	st    *store.Store
	clock *clock
	reg   *health.Registry
}

func newFixture(t *testing.T) *fixture {
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	c := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	reg := health.New(st, health.Config{SummaryPeriod: 30 * time.Second, Now: c.Now})
	// The sweep of silent sessions runs only when a test calls it: the
	// test clock jumps, the sweep's ticker does not.
	reg.SetSweepEvery(time.Hour)
	run(t, reg)
	return &fixture{srv: srv, st: st, clock: c, reg: reg}
}

// run runs reg until the test ends.
func run(t *testing.T, reg *health.Registry) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// revision is etcd's current revision: it grows by one per write.
func (f *fixture) revision(t *testing.T) int64 {
	t.Helper()
	_, rev, err := f.st.List(context.Background(), "no-such-prefix/", 0)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// stored reads the status as another controller (or this one after a
// restart) does: from etcd alone.
func (f *fixture) stored(t *testing.T, site string) health.Status {
	t.Helper()
	st, err := health.New(f.srv.NewStore(), health.Config{}).Get(context.Background(), site)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func rttOf(st health.Status) float64 {
	if len(st.Report.Tunnels) == 0 {
		return -1
	}
	return st.Report.Tunnels[0].RTTMillis
}

// TestReportsWrittenOnStateChangeOrSummary: reports that differ only in
// their figures are served from memory and written to etcd once; a state
// change is written at once; after the summary period the figures are
// written too; another registry reading etcd sees the last write.
func TestReportsWrittenOnStateChangeOrSummary(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	sess, err := f.reg.Connect(ctx, "a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.reg.Get(ctx, "a"); st.State != health.Up {
		t.Fatalf("after Connect: %v, want up", st.State)
	}

	before := f.revision(t)
	for i := range 20 {
		f.clock.Advance(time.Second)
		if err := sess.Report(ctx, report(10+float64(i), "up")); err != nil {
			t.Fatal(err)
		}
	}
	if writes := f.revision(t) - before; writes != 1 {
		t.Errorf("20 reports differing only in RTT made %d etcd writes, want 1", writes)
	}
	if st, _ := f.reg.Get(ctx, "a"); rttOf(st) != 29 || st.Report.AgentVersion != "v1" || !st.LastSeen.Equal(f.clock.Now()) {
		t.Errorf("in-memory Get: RTT %v agent %q last seen %v; want the latest report (RTT 29, v1, %v)", rttOf(st), st.Report.AgentVersion, st.LastSeen, f.clock.Now())
	}
	all, err := f.reg.All(ctx)
	if err != nil || rttOf(all["a"]) != 29 {
		t.Errorf("in-memory All: RTT %v, %v; want 29", rttOf(all["a"]), err)
	}
	if st := f.stored(t, "a"); st.State != health.Up || rttOf(st) != 10 {
		t.Errorf("etcd holds %v with RTT %v, want up with the first report's 10", st.State, rttOf(st))
	}

	// A state change is written at once.
	before = f.revision(t)
	f.clock.Advance(time.Second)
	if err := sess.Report(ctx, report(31, "down")); err != nil {
		t.Fatal(err)
	}
	if writes := f.revision(t) - before; writes != 1 {
		t.Errorf("a state change made %d writes, want 1", writes)
	}
	if st := f.stored(t, "a"); st.Report.Tunnels[0].State != "down" || rttOf(st) != 31 {
		t.Errorf("etcd after the state change: %+v", st.Report.Tunnels[0])
	}

	// Figures only: nothing until the summary period has passed since the
	// last write, then one write.
	before = f.revision(t)
	for i := range 29 {
		f.clock.Advance(time.Second)
		sess.Report(ctx, report(40+float64(i), "down"))
	}
	if writes := f.revision(t) - before; writes != 0 {
		t.Errorf("%d writes within the summary period, want 0", writes)
	}
	f.clock.Advance(time.Second) // 30 s after the last write
	if err := sess.Report(ctx, report(77, "down")); err != nil {
		t.Fatal(err)
	}
	if writes := f.revision(t) - before; writes != 1 {
		t.Errorf("%d writes at the summary period, want 1", writes)
	}
	// A restarted controller or another replica sees the last write.
	if st := f.stored(t, "a"); st.State != health.Up || rttOf(st) != 77 || !st.LastSeen.Equal(f.clock.Now()) {
		t.Errorf("another registry sees %v RTT %v last seen %v, want up, 77, %v", st.State, rttOf(st), st.LastSeen, f.clock.Now())
	}

	// An edge that stops reporting (its stream still open) is no longer
	// answered from memory once the lease would have expired: etcd decides,
	// as on every other replica (here the real lease still runs, so etcd
	// still has the last written report).
	sess.Report(ctx, report(78, "down"))
	f.clock.Advance(health.LeaseTTL)
	if st, _ := f.reg.Get(ctx, "a"); rttOf(st) != 77 {
		t.Errorf("a silent edge's stale report (RTT %v) still served from memory, want etcd's 77", rttOf(st))
	}
	if all, _ := f.reg.All(ctx); rttOf(all["a"]) != 77 {
		t.Errorf("All: a silent edge's stale report (RTT %v) still served from memory, want etcd's 77", rttOf(all["a"]))
	}

	// Close: down everywhere at once.
	if err := sess.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.reg.Get(ctx, "a"); st.State != health.Down || len(st.Report.Tunnels) != 0 {
		t.Errorf("after Close: %v with %d tunnels, want down", st.State, len(st.Report.Tunnels))
	}
	if st := f.stored(t, "a"); st.State != health.Down {
		t.Errorf("etcd after Close: %v, want down", st.State)
	}
	// A report racing the close does not bring the edge back.
	if err := sess.Report(ctx, report(1, "up")); !errors.Is(err, health.ErrClosed) {
		t.Errorf("Report after Close: %v, want ErrClosed", err)
	}
	if st, _ := f.reg.Get(ctx, "a"); st.State != health.Down {
		t.Errorf("a late report revived the edge: %v", st.State)
	}
}

// TestSubscribe: every report is announced, coalesced, with whether the
// state changed; Close is a state change.
func TestSubscribe(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ch, cancel := f.reg.Subscribe()
	defer cancel()
	sess, err := f.reg.Connect(ctx, "a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if c := <-ch; !c.StateChanged {
		t.Error("connect: not a state change")
	}
	sess.Report(ctx, report(10, "up"))
	if c := <-ch; !c.StateChanged {
		t.Error("first tunnels: not a state change")
	}
	sess.Report(ctx, report(11, "up"))
	if c := <-ch; c.StateChanged {
		t.Error("an RTT change announced as a state change")
	}
	// Undelivered changes merge: a state change is not lost behind a
	// figures-only one.
	sess.Report(ctx, report(12, "down"))
	sess.Report(ctx, report(13, "down"))
	if c := <-ch; !c.StateChanged {
		t.Error("a coalesced state change was lost")
	}
	select {
	case c := <-ch:
		t.Errorf("more than one coalesced change: %+v", c)
	default:
	}
	sess.Close(ctx)
	if c := <-ch; !c.StateChanged {
		t.Error("close: not a state change")
	}
}

// TestReconnectAndForget: a newer session of the same site survives the
// older one's Close, and a deleted site's status stays deleted when its
// last session closes afterwards.
func TestReconnectAndForget(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	old, err := f.reg.Connect(ctx, "a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := f.reg.Connect(ctx, "a", "v2")
	if err != nil {
		t.Fatal(err)
	}
	cur.Report(ctx, report(10, "up"))
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.reg.Get(ctx, "a"); st.State != health.Up || st.Agent != "v2" || rttOf(st) != 10 {
		t.Errorf("after the old session closed: %v %q RTT %v, want up v2 10", st.State, st.Agent, rttOf(st))
	}
	if st := f.stored(t, "a"); st.State != health.Up || st.Agent != "v2" {
		t.Errorf("etcd after the old session closed: %v %q, want up v2", st.State, st.Agent)
	}
	if err := f.reg.Forget(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	cur.Close(ctx)
	if st, _ := f.reg.Get(ctx, "a"); st.State != health.NeverSeen {
		t.Errorf("deleted site after its session closed: %v, want never_seen", st.State)
	}
}

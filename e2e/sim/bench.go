package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// ScaleConfig configures RunScale (`make bench-scale`).
type ScaleConfig struct {
	ControllerBin string
	Edges         []int // fleet sizes, one fresh controller each
	WorkDir       string
	// Steady is the steady-reporting window (scenario 4); the admin reads
	// run in its second half.
	Steady time.Duration
	// Timeout caps one fleet size's run.
	Timeout time.Duration
	// Workers enroll edges concurrently during onboarding.
	Workers int
	// MeshSites is scenario 6's site count (0 skips it).
	MeshSites int
	Command   string // printed with every table
	Logger    *slog.Logger
	// ControllerArgs are extra flags for the controller (e.g. --pprof to
	// profile it during a run).
	ControllerArgs []string
}

// ErrRefusals is returned by RunScale when an edge refused a state.
var ErrRefusals = errors.New("edges refused desired states")

// RunScale runs the scale scenarios for every fleet size, then the
// full-mesh allocation, and writes each table to out as it completes.
// Goals missed are printed, not errors; refused states and scenarios that
// could not complete are.
func RunScale(ctx context.Context, cfg ScaleConfig, out io.Writer) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	var missed []string
	for _, n := range cfg.Edges {
		tables, err := runFleet(ctx, cfg, n, out)
		for _, t := range tables {
			missed = append(missed, t.Missed()...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("N=%d: %w", n, err))
		}
	}
	if cfg.MeshSites > 0 {
		t, err := runMesh(ctx, cfg, out)
		if t != nil {
			missed = append(missed, t.Missed()...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("full mesh: %w", err))
		}
	}
	fmt.Fprintf(out, "Goals missed: %d", len(missed))
	for _, m := range missed {
		fmt.Fprintf(out, "\n- %s", m)
	}
	fmt.Fprintln(out)
	return errors.Join(errs...)
}

// freshController starts a controller process on new ports with an empty
// data directory under cfg.WorkDir/name.
func freshController(ctx context.Context, cfg ScaleConfig, name string) (*Process, *Admin, error) {
	dir := filepath.Join(cfg.WorkDir, name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	g, err := FreeAddr()
	if err != nil {
		return nil, nil, err
	}
	h, err := FreeAddr()
	if err != nil {
		return nil, nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		return nil, nil, err
	}
	p, err := StartProcess(ctx, ProcessConfig{Bin: cfg.ControllerBin, DataDir: filepath.Join(dir, "data"),
		GRPCListen: g, HTTPListen: h, TunnelPool: "10.128.0.0/10", Log: logf, Args: cfg.ControllerArgs})
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	admin, err := DialAdmin(p.Addr(), p.AdminToken(), p.CAPEM())
	if err != nil {
		p.Stop(ctx)
		logf.Close()
		return nil, nil, err
	}
	cfg.Logger.Info("controller started", "pid", p.PID(), "grpc", g, "data_dir", p.DataDir(), "log", logf.Name())
	return p, admin, nil
}

// runFleet runs scenarios 1-5 against one fresh controller with n edges.
func runFleet(ctx context.Context, cfg ScaleConfig, n int, out io.Writer) (tables []*Table, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	log := cfg.Logger.With("edges", n)
	p, admin, err := freshController(ctx, cfg, fmt.Sprintf("n%d", n))
	if err != nil {
		return nil, err
	}
	defer func() {
		admin.Close()
		if serr := p.Stop(context.WithoutCancel(ctx)); serr != nil {
			log.Warn("controller stop", "err", serr)
		}
	}()
	fleet := NewFleet(ctx, FleetConfig{Controller: p.Addr(), Dir: filepath.Join(cfg.WorkDir, fmt.Sprintf("n%d", n), "edges"), Logger: log})
	defer fleet.Close()
	emit := func(t *Table) {
		t.Command = cfg.Command
		tables = append(tables, t)
		fmt.Fprint(out, t.Markdown())
	}
	defer func() {
		// Whatever else happened, a refused state fails the run.
		if fs := Failures(fleet.Snapshot()); len(fs) > 0 {
			for _, f := range fs[:min(len(fs), 10)] {
				fmt.Fprintf(out, "REFUSED: %v\n", f)
			}
			err = errors.Join(err, fmt.Errorf("%w: %d edges", ErrRefusals, len(fs)))
		}
	}()
	title := func(i int, s string) string { return fmt.Sprintf("N=%d · %d. %s", n, i, s) }

	log.Info("scenario 1: onboarding")
	t, err := scenarioOnboard(ctx, cfg, admin, fleet, n)
	t.Title = title(1, "Onboarding")
	emit(t)
	if err != nil {
		return tables, err
	}
	log.Info("scenario 2: mtu change")
	t, err = scenarioMTU(ctx, admin, fleet, n)
	t.Title = title(2, "A change touching every edge (topology MTU)")
	emit(t)
	if err != nil {
		return tables, err
	}
	log.Info("scenario 3: one-tunnel change")
	t, err = scenarioOneTunnel(ctx, admin, fleet, n)
	t.Title = title(3, "A one-tunnel change (a spoke's transport address)")
	emit(t)
	if err != nil {
		return tables, err
	}
	log.Info("scenario 4: steady reporting", "for", cfg.Steady)
	t, steadyRSS, err := scenarioSteady(ctx, cfg, p, admin, fleet, n)
	t.Title = title(4, "Steady reporting")
	emit(t)
	if err != nil {
		return tables, err
	}
	log.Info("scenario 5: restart")
	t, err = scenarioRestart(ctx, p, admin, fleet, n, steadyRSS)
	t.Title = title(5, "Controller restart with every edge connected")
	emit(t)
	return tables, err
}

func scenarioOnboard(ctx context.Context, cfg ScaleConfig, admin *Admin, fleet *Fleet, n int) (*Table, error) {
	t := &Table{}
	ob, err := Onboard(ctx, admin, fleet, n, cfg.Workers, 1400)
	if err != nil {
		held := 0
		for _, s := range fleet.Snapshot() {
			if s.HasState() {
				held++
			}
		}
		t.Add("did not complete", "%v", err)
		goal := time.Duration(n) * 30 * time.Millisecond
		t.Goal("first CreateSite → every edge holds its first state", "not reached", "≤ "+secs(goal), false)
		t.Add("sites created / edges started / edges holding a state", "%d / %d / %d after %s", ob.Created, fleet.Len(), held, ms(time.Since(ob.Start)))
		if ob.Created > 20 {
			tenth := max(1, ob.Created/10)
			t.Add("CreateSite, first / last 10 % of the sites created", "%s / %s", Summarise(ob.Create[:tenth]), Summarise(ob.Create[ob.Created-tenth:ob.Created]))
		}
		return t, err
	}
	tenth := max(1, n/10)
	first, last := Summarise(ob.Create[:tenth]), Summarise(ob.Create[n-tenth:])
	ratio := float64(last.Mean) / float64(first.Mean)
	t.Add("CreateSite, first 10 % of sites", "%s", first)
	t.Add("CreateSite, last 10 % of sites", "%s", last)
	t.Goal("CreateSite last/first 10 % (means)", fmt.Sprintf("%.2f (p50s: %.2f)", ratio, float64(last.P50)/float64(first.P50)), "≤ 2", ratio <= 2)
	t.Add("all sites created", "%s", ms(ob.SitesDone.Sub(ob.Start)))
	took := ob.AllFirst.Sub(ob.Start)
	goal := time.Duration(n) * 30 * time.Millisecond // 30 s per 1,000 edges
	t.Goal("first CreateSite → every edge holds its first state", ms(took), "≤ "+secs(goal), took <= goal)
	var bytes int64
	var msgs int
	for _, s := range fleet.Snapshot() {
		bytes += s.Bytes
		msgs += s.Messages
	}
	t.Add("desired-state messages / bytes sent during onboarding", "%d / %s", msgs, kb(bytes))
	if err := WaitConverged(ctx, admin, fleet, 1400); err != nil {
		return t, err
	}
	t.Add("converged (every edge holds the tunnels ListTunnels lists)", "%s after the first CreateSite", ms(time.Since(ob.Start)))
	t.Notes = append(t.Notes, fmt.Sprintf("Sites are created one at a time (hubs, topology, spokes); %d workers make each site's token, enroll its edge and start it as soon as the site exists.", cfg.Workers))
	return t, nil
}

func scenarioMTU(ctx context.Context, admin *Admin, fleet *Fleet, n int) (*Table, error) {
	t := &Table{}
	p99Goal := time.Second
	if n > 1000 {
		p99Goal = 2 * time.Second
	}
	for _, c := range [][2]int{{1400, 1380}, {1380, 1400}} {
		r, err := ChangeMTU(ctx, admin, fleet, c[0], c[1])
		if err != nil {
			return t, err
		}
		d := Summarise(r.Latency)
		name := fmt.Sprintf("MTU %d→%d", c[0], c[1])
		t.Add(name+": SetTopology call", "%s", ms(r.Call))
		if n <= 1000 {
			t.Goal(name+": p50 call return → edge holds it", ms(d.P50), "≤ 100 ms", d.P50 <= 100*time.Millisecond)
		} else {
			t.Add(name+": p50 call return → edge holds it", "%s", ms(d.P50))
		}
		t.Goal(name+": p99", ms(d.P99), "≤ "+secs(p99Goal), d.P99 <= p99Goal)
		t.Add(name+": max", "%s (%d edges had it before the call returned)", ms(d.Max), r.Early)
		t.Add(name+": sent to edges", "%s in %d messages (%s per edge)", kb(r.Bytes), r.Messages, kb(r.Bytes/int64(n)))
	}
	return t, nil
}

func scenarioOneTunnel(ctx context.Context, admin *Admin, fleet *Fleet, n int) (*Table, error) {
	t := &Table{}
	r, err := ChangeOneTunnel(ctx, admin, fleet, n/2, 3*time.Second)
	if err != nil {
		return t, err
	}
	t.Add("change", "UpdateSite %s: inet1 address → %s", r.Site, Underlay(n/2, 0, true))
	t.Add("UpdateSite call → spoke and hubs hold it", "%s", ms(r.Took))
	sites := make([]string, 0, len(r.Affected))
	for s := range r.Affected {
		sites = append(sites, s)
	}
	slices.Sort(sites)
	for _, s := range sites {
		t.Goal("bytes received by "+s, kb(r.Affected[s]), "≤ 2 KB", r.Affected[s] <= 2048)
	}
	t.Goal("bytes received by all other edges (3 s window)", fmt.Sprintf("%s (%d edges)", kb(r.OtherB), r.Others), "0", r.OtherB == 0)
	return t, nil
}

func scenarioSteady(ctx context.Context, cfg ScaleConfig, p *Process, admin *Admin, fleet *Fleet, n int) (*Table, int64, error) {
	t := &Table{}
	before := fleet.Snapshot()
	half := cfg.Steady / 2
	u0, err := p.Usage()
	if err != nil {
		return t, 0, err
	}
	self0, _ := ReadUsage(0)
	var rss []int64
	sample := func() {
		if u, err := p.Usage(); err == nil {
			rss = append(rss, u.RSS)
		}
	}
	// First half: reports only.
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < half {
		select {
		case <-tick.C:
			sample()
		case <-ctx.Done():
			return t, 0, ctx.Err()
		}
	}
	u1, err := p.Usage()
	if err != nil {
		return t, 0, err
	}
	t1 := time.Now()
	// Second half: one admin client reads in a loop as well.
	var list, tunnels, get []time.Duration
	sampled := time.Now()
	for time.Since(t1) < cfg.Steady-half {
		if time.Since(sampled) >= time.Second {
			sample()
			sampled = time.Now()
		}
		c := time.Now()
		if _, err := admin.ListSites(ctx, &pb.ListSitesRequest{}); err != nil {
			return t, 0, fmt.Errorf("ListSites: %w", err)
		}
		list = append(list, time.Since(c))
		c = time.Now()
		if _, err := admin.ListTunnels(ctx, &pb.ListTunnelsRequest{}); err != nil {
			return t, 0, fmt.Errorf("ListTunnels: %w", err)
		}
		tunnels = append(tunnels, time.Since(c))
		c = time.Now()
		if _, err := admin.GetSite(ctx, &pb.GetSiteRequest{Name: SiteName(rand.IntN(n))}); err != nil {
			return t, 0, fmt.Errorf("GetSite: %w", err)
		}
		get = append(get, time.Since(c))
	}
	u2, err := p.Usage()
	if err != nil {
		return t, 0, err
	}
	t2 := time.Now()
	self2, _ := ReadUsage(0)
	pct := func(cpu, wall time.Duration) float64 { return 100 * float64(cpu) / float64(wall) }
	cpu := pct(u1.CPU-u0.CPU, t1.Sub(start))
	goal := 20.0
	if n > 1000 {
		goal = 100
	}
	t.Goal(fmt.Sprintf("controller CPU, %s of reports only (%% of one core)", ms(t1.Sub(start))), fmt.Sprintf("%.1f %%", cpu), fmt.Sprintf("≤ %.0f %%", goal), cpu <= goal)
	t.Add(fmt.Sprintf("controller CPU, %s of reports + admin reads", ms(t2.Sub(t1))), "%.1f %%", pct(u2.CPU-u1.CPU, t2.Sub(t1)))
	t.Add("simulator CPU over the window (same 2 cores)", "%.1f %%", pct(self2.CPU-self0.CPU, t2.Sub(start)))
	steady := median(rss)
	t.Add("controller RSS (median of 1 s samples)", "%s", kb(steady))
	for _, r := range []struct {
		name string
		ds   []time.Duration
	}{{"ListSites", list}, {"ListTunnels", tunnels}, {"GetSite", get}} {
		d := Summarise(r.ds)
		t.Goal(r.name+" p50 / p99", fmt.Sprintf("%s / %s (n=%d)", ms(d.P50), ms(d.P99), d.N), "p99 ≤ 100 ms", d.P99 <= 100*time.Millisecond)
	}
	var resets, states int
	for j, s := range fleet.Snapshot() {
		resets += s.Losses - before[j].Losses
		states += s.States - before[j].States
	}
	t.Add("stream resets / states received during the window", "%d / %d", resets, states)
	t.Notes = append(t.Notes, fmt.Sprintf("Every edge reports every second; a report lists at most %d tunnels (all up, RTT 5-25 ms), so the two hubs' reports stay small.", fleet.cfg.MaxReportTunnels))
	return t, steady, nil
}

func scenarioRestart(ctx context.Context, p *Process, admin *Admin, fleet *Fleet, n int, steadyRSS int64) (*Table, error) {
	t := &Table{}
	sigterm := time.Now()
	r, err := Restart(ctx, p, fleet)
	if err != nil {
		return t, err
	}
	took := r.AllCurrent.Sub(sigterm)
	t.Add("SIGTERM → old controller exited", "%s", ms(r.Stopped.Sub(sigterm)))
	t.Add("new controller started → serving", "%s", ms(r.Ready.Sub(r.Stopped)))
	if n <= 1000 {
		t.Goal("SIGTERM → every edge holds a current state", ms(took), "≤ 10 s", took <= 10*time.Second)
	} else {
		t.Add("SIGTERM → every edge holds a current state", "%s", ms(took))
	}
	t.Add("serving → every edge current", "%s", ms(r.AllCurrent.Sub(r.Ready)))
	t.Add("streams reset / failed reconnect attempts / reconnects", "%d / %d / %d", r.Resets, r.Retries, r.Reconnects)
	if err := WaitConverged(ctx, admin, fleet, 1400); err != nil {
		return t, fmt.Errorf("after the restart: %w", err)
	}
	// The peak is read once the reconnect storm is over.
	select {
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
		return t, ctx.Err()
	}
	u, err := p.Usage()
	if err != nil {
		return t, err
	}
	ratio := float64(u.HWM) / float64(steadyRSS)
	t.Add("controller RSS steady before (scenario 4)", "%s", kb(steadyRSS))
	t.Goal("controller peak RSS after the restart (VmHWM)", fmt.Sprintf("%s (%.2f×)", kb(u.HWM), ratio), "≤ 2× steady", ratio <= 2)
	t.Notes = append(t.Notes, "An edge is current when it received a desired-state message after the old controller had exited and has taken it: the controller answers every (re)connecting edge (its state, a delta, or a one-line confirmation when the edge already holds the current state), so that message is from the new controller. WaitConverged then checks every edge's tunnels against ListTunnels.")
	return t, nil
}

func median(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// runMesh is scenario 6: full-mesh allocation on a fresh controller, and
// the raw transaction rate of its embedded etcd.
func runMesh(ctx context.Context, cfg ScaleConfig, out io.Writer) (*Table, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	t := &Table{Title: fmt.Sprintf("6. Full-mesh allocation (%d sites × 2 transports)", cfg.MeshSites), Command: cfg.Command}
	defer func() { fmt.Fprint(out, t.Markdown()) }()
	p, admin, err := freshController(ctx, cfg, "mesh")
	if err != nil {
		return t, err
	}
	defer func() {
		admin.Close()
		p.Stop(context.WithoutCancel(ctx))
	}()
	for i := range cfg.MeshSites {
		if _, err := admin.CreateSite(ctx, &pb.CreateSiteRequest{Site: SiteSpec(i, 2)}); err != nil {
			return t, fmt.Errorf("CreateSite: %w", err)
		}
	}
	want := cfg.MeshSites * (cfg.MeshSites - 1) / 2 * 2
	t0 := time.Now()
	if _, err := admin.SetTopology(ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH}}); err != nil {
		return t, fmt.Errorf("SetTopology: %w", err)
	}
	call := time.Since(t0)
	// The API has no watch: poll ListTunnels.
	var got int
	for {
		r, err := admin.ListTunnels(ctx, &pb.ListTunnelsRequest{})
		if err != nil {
			return t, fmt.Errorf("ListTunnels: %w", err)
		}
		if got = len(r.GetTunnels()); got >= want {
			break
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return t, fmt.Errorf("%d of %d tunnels: %w", got, want, ctx.Err())
		}
	}
	took := time.Since(t0)
	t.Add("SetTopology(full mesh) call", "%s", ms(call))
	t.Goal(fmt.Sprintf("SetTopology → ListTunnels shows all %d", want), ms(took), "≤ 5 s", took <= 5*time.Second)
	alloc := float64(got) / took.Seconds()
	t.Add("allocation rate", "%.0f tunnels/s", alloc)
	rate, err := RawTxnRate(ctx, filepath.Join(p.DataDir(), "etcd", "etcd.sock"), 3*time.Second)
	if err != nil {
		return t, fmt.Errorf("raw etcd rate: %w", err)
	}
	t.Add("raw sequential put-if-absent txns on the same etcd", "%.0f txn/s", rate)
	t.Add("allocation rate / raw txn rate", "%s", strconv.FormatFloat(alloc/rate, 'f', 2, 64))
	return t, nil
}

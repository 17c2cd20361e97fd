//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/e2e/lab"
	"github.com/meshwan/meshwan/e2e/stream"
	"github.com/meshwan/meshwan/edge/dataplane"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// The failover benchmark (docs/benchmarks.md): opt-in, MESHWAN_BENCH=1
// (`make bench-failover` runs it in the VM). Each test prints a markdown
// table and writes it to $MESHWAN_LAB_OUT/bench-*.md.
//
//	MESHWAN_BENCH_REPS           cuts per profile (default 20)
//	MESHWAN_BENCH_PROFILES       the failover test's profiles (default default,fast)
//	MESHWAN_BENCH_SOAK           length of the false-failover run (default 10m)
//	MESHWAN_BENCH_SOAK_LOSS      netem loss on every transport, each way (default 1%)
//	MESHWAN_BENCH_SOAK_PROFILE   the false-failover run's profile (default fast)

func requireBench(t *testing.T) {
	if os.Getenv("MESHWAN_BENCH") != "1" {
		t.Skip("benchmark: set MESHWAN_BENCH=1 (make bench-failover)")
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}

// profile is a probe profile under test.
type profile struct {
	Name     string
	Probe    string // described
	Policy   *pb.PathPolicy
	HoldDown time.Duration
	Goal     time.Duration // p99 failover gap goal
}

// The fast profile meets its goal by construction: the silence that takes
// a tunnel down is 5 x 30 ms = 150 ms after the last answered probe (which
// left at most one interval before the cut), checked every half interval,
// so the verdict comes at most ~165 ms after the cut; the route switch
// (<= 86 ms measured) brings the worst case to ~250 ms < 300 ms. Five
// probes rather than three at 50 ms: at 1 % loss each way a probe round
// trip is lost with p ~ 3.9 %, five in a row with p ~ 9e-8 (three: 6e-5,
// about three false downs in ten minutes on four tunnel ends), and an RTT
// jump of up to 4 x 30 = 120 ms is still no silence.
var profiles = []profile{
	{Name: "default", Probe: "100 ms x 5, up 3, hold-down 2 s", Policy: nil, HoldDown: dataplane.DefaultHoldDown, Goal: time.Second},
	{Name: "fast", Probe: "30 ms x 5, up 3, hold-down 2 s", Policy: &pb.PathPolicy{ProbeIntervalMs: 30, DownAfter: 5}, HoldDown: dataplane.DefaultHoldDown, Goal: 300 * time.Millisecond},
}

// profileNamed returns the profile called name.
func profileNamed(t *testing.T, name string) profile {
	for _, p := range profiles {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no probe profile %q", name)
	return profile{}
}

// appliedVersions returns every site's reported applied version.
func (e *env) appliedVersions() map[string]int64 {
	e.t.Helper()
	out := map[string]int64{}
	for _, s := range e.lab.Order {
		st, err := e.siteStatus(s)
		if err != nil {
			e.t.Fatal(err)
		}
		out[s] = st.GetAppliedVersion()
	}
	return out
}

// setTopologyApplied sets the topology and waits until every edge runs
// a newer desired state than before.
func (e *env) setTopologyApplied(topo *pb.Topology) {
	e.t.Helper()
	before := e.appliedVersions()
	e.setTopology(topo)
	e.waitFor("every edge applied the new topology", converge, func() (bool, string) {
		now := e.appliedVersions()
		for s, v := range before {
			if now[s] <= v {
				return false, fmt.Sprintf("applied versions %v, before %v", now, before)
			}
		}
		return true, ""
	})
}

// ms formats a duration in milliseconds for the tables.
func ms(d time.Duration) string {
	return strconv.FormatInt(d.Round(time.Millisecond).Milliseconds(), 10)
}

// writeTable prints a markdown table and saves it under MESHWAN_LAB_OUT.
func writeTable(t *testing.T, file, table string) {
	fmt.Printf("\n%s\n", table)
	if out := os.Getenv("MESHWAN_LAB_OUT"); out != "" {
		if err := os.WriteFile(filepath.Join(out, file), []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func benchHeader(what string) string {
	kver, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("<!-- %s, %s, kernel %s, %d vCPUs (emulated: figures are relative) -->\n", what, time.Now().UTC().Format(time.RFC3339),
		strings.TrimSpace(string(kver)), runtime.NumCPU())
}

// TestBenchFailover: per probe profile, MESHWAN_BENCH_REPS cuts of the
// transport carrying a 500 pps stream (netem loss 100% both ways, held
// 1 s after the stream moved), each followed by its restore. Reports the
// failover time (the longest hole in the stream's sequence numbers, in
// send times; in receive times alongside) and the time back (restore ->
// the first packet on the primary for good), p50/p99 (nearest rank).
func TestBenchFailover(t *testing.T) {
	requireBench(t)
	reps := envInt(t, "MESHWAN_BENCH_REPS", 20)
	names := os.Getenv("MESHWAN_BENCH_PROFILES")
	if names == "" {
		names = "default,fast"
	}
	var run []profile
	for _, n := range strings.Split(names, ",") {
		run = append(run, profileNamed(t, strings.TrimSpace(n)))
	}
	e := setupLab(t, twoSiteTwoTransports)
	e.declare()
	topo := &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, PathPolicy: run[0].Policy}
	e.setTopology(topo)
	e.enrollAndStart()
	e.waitAllPairs()
	paths := e.pathsBetween("a", "b")
	if len(paths) != 2 {
		t.Fatalf("tunnels a -> b: %v, want one per transport", paths)
	}
	e.waitUsable("a", paths)
	e.waitUsable("b", e.pathsBetween("b", "a"))
	primary, dev := e.routeTransport("a", "b", paths)
	if primary == "" {
		t.Fatalf("a reaches b's LAN via %s, not a tunnel", dev)
	}
	backup := "inet2"
	if primary == "inet2" {
		backup = "inet1"
	}
	if err := e.lab.NetemDir(e.ctx, "a", backup, lab.Up, "delay "+markerDelay.String()); err != nil {
		t.Fatal(err)
	}
	st := e.startStream(lab.StreamSpec{From: "a", To: "b", Port: 5004, Rate: 500})
	defer st.Stop()

	stalls := startStallMonitor(t, stallMin)
	var rows []benchRow
	for i, p := range run {
		if i > 0 {
			topo.PathPolicy = p.Policy
			e.setTopologyApplied(topo)
			e.waitUsable("a", paths)
		}
		from := time.Now()
		row := e.benchCuts(st, "a", primary, paths[primary].ID, p, reps)
		to := time.Now()
		row.stalls, row.longestStall = stalls.between(from, to)
		for _, d := range tunnelDowns(e.lab.EdgeLog("a"), from, to) {
			if d.tunnel == paths[backup].ID {
				row.backupDowns++
			}
		}
		rows = append(rows, row)
	}
	var b strings.Builder
	b.WriteString(benchHeader("make bench-failover: TestBenchFailover"))
	fmt.Fprintf(&b, "Failover, 2 sites x 2 transports, static routing, 500 pps a -> b, cut = both ways of a's %s in one nftables transaction in the WAN router (lab.Cut; backup %s, marker +%v one way); %d cuts per profile; ms, nearest-rank percentiles over the counted cuts.\n\n",
		primary, backup, markerDelay, reps)
	b.WriteString(failoverTable(rows))
	recs, _ := st.Stop()
	fmt.Fprintf(&b, "\nWhole stream: %v\n", stream.Summarize(recs))
	writeTable(t, "bench-failover.md", b.String())
	for _, r := range rows {
		if len(r.sendGaps) == 0 {
			t.Errorf("%s profile: no counted cut", r.profile.Name)
			continue
		}
		if p99 := stream.PercentilesOf(r.sendGaps).P99; p99 > r.profile.Goal {
			t.Errorf("%s profile: failover time (send window) p99 %v, goal %v", r.profile.Name, p99, r.profile.Goal)
		}
	}
}

// benchRow is one profile's results.
type benchRow struct {
	profile                profile
	gaps, sendGaps, backs  []time.Duration
	lost, lostAfterRestore []uint64
	// detect: data cut -> the edge's verdict (its log); switched: verdict
	// -> the send time of the first packet that took the backup; applied:
	// verdict -> the agent's "path decisions applied" log line (the route
	// write returned). early counts the cuts whose verdict came before the
	// data cut: they are left out of every other column.
	detect, switched, applied []time.Duration
	early, noVerdict          int
	// backupDowns counts the times the uncut backup's probes went down
	// (a's log); stalls the VM stalls of at least stallMin meanwhile.
	backupDowns, stalls int
	longestStall        time.Duration
}

// stallMin is the shortest VM stall the benchmarks count: about what the
// fast profile's silence rule (5 x 50 ms) cannot ride out.
const stallMin = 200 * time.Millisecond

// benchCuts cuts and restores a's primary transport reps times under a
// running stream a -> b, with the profile already applied; tunnel is the
// primary's tunnel id (a's log names it in the verdict).
func (e *env) benchCuts(st *lab.Stream, a, primary, tunnel string, p profile, reps int) benchRow {
	e.t.Helper()
	row := benchRow{profile: p}
	e.waitSustained(st, "stream on "+primary+" ("+p.Name+" profile)", time.Now(), onPrimary, time.Second, converge)
	for r := range reps {
		c := e.benchCut(st, a, primary, tunnel, time.Second, p.HoldDown+time.Minute)
		f := c.failover
		switch {
		case !c.hasVerdict:
			row.noVerdict++
		case c.verdict.Before(c.dataCut):
			row.early++
		}
		e.t.Logf("%s #%d: gap %s; data cut -> verdict %v, verdict -> applied %v, -> first packet on the backup %v%s; back after %v; after the restore %d lost, longest %s",
			p.Name, r+1, fmtGap(f.Gap, f.HasGap), c.verdict.Sub(c.dataCut).Round(time.Millisecond), c.applied.Sub(c.verdict).Round(time.Millisecond),
			c.onBackup.Sub(c.verdict).Round(time.Millisecond), map[bool]string{true: " (EARLY: not counted)"}[c.hasVerdict && c.verdict.Before(c.dataCut)],
			f.Back.Round(time.Millisecond), f.ReturnLost, fmtGap(f.ReturnGap, f.HasReturn))
		if !c.hasVerdict || c.verdict.Before(c.dataCut) {
			time.Sleep(time.Second) // pacing between cuts, not a synchronisation
			continue
		}
		var g, sg time.Duration
		var lost uint64
		if f.HasGap {
			g, sg, lost = f.Gap.Recv(), f.Gap.Send(), f.Gap.Lost()
		}
		row.gaps, row.sendGaps, row.backs = append(row.gaps, g), append(row.sendGaps, sg), append(row.backs, f.Back)
		row.lost, row.lostAfterRestore = append(row.lost, lost), append(row.lostAfterRestore, f.ReturnLost)
		row.detect = append(row.detect, c.verdict.Sub(c.dataCut))
		row.switched = append(row.switched, c.onBackup.Sub(c.verdict))
		if !c.applied.IsZero() {
			row.applied = append(row.applied, c.applied.Sub(c.verdict))
		}
		time.Sleep(time.Second) // pacing between cuts, not a synchronisation
	}
	return row
}

// benchCutResult is one atomic cut and its restore, with the edge's
// verdict from its log.
type benchCutResult struct {
	failover
	// dataCut: the send time of the first packet lost to the cut (the
	// stream's own clock, the VM's); verdict: a's log line saying the
	// primary's probes went down; applied: a's next "path decisions
	// applied"; onBackup: the send time of the first packet after the
	// hole, the first to take the backup.
	dataCut, verdict, applied, onBackup time.Time
	hasVerdict                          bool
}

// gapsAround fills a failover's gaps from the stream's records: the
// longest hole from 2 s before the cut until the restore, and the holes
// after the restore (also cutAndRestore's, in paths_test.go).
func gapsAround(recs []stream.Record, cut, restore time.Time) failover {
	var f failover
	var during, after []stream.Gap
	for _, g := range stream.Gaps(stream.SentBetween(recs, cut.Add(-2*time.Second), time.Time{})) {
		if g.Before.SentAt().Before(restore) {
			during = append(during, g)
		} else {
			after = append(after, g)
		}
	}
	f.Gap, f.HasGap = stream.LongestBy(during, stream.Gap.Send)
	f.ReturnGap, f.HasReturn = stream.LongestBy(after, stream.Gap.Send)
	for _, g := range after {
		f.ReturnLost += g.Lost()
	}
	return f
}

// pathsApplied is the edge's log line written right after a route write
// (link.Manager.ApplyRoutes): the first one at or after the verdict is the
// route switch.
var pathsApplied = regexp.MustCompile(`^time=(\S+) .*msg="route installed"`)

// benchCut is cutAndRestore with the cut made by lab.Cut (one nftables
// transaction for both directions) and the edge's verdict read back, so
// that a verdict preceding the data cut can be told.
func (e *env) benchCut(st *lab.Stream, a, primary, tunnel string, hold, backBound time.Duration) benchCutResult {
	e.t.Helper()
	var c benchCutResult
	start := time.Now()
	if err := e.lab.Cut(e.ctx, a, primary); err != nil {
		e.t.Fatal(err)
	}
	cut := time.Now()
	r := e.waitSustained(st, "stream on the backup after cutting "+primary, cut, onBackup, time.Second, converge)
	detected := r.SentAt().Sub(cut)
	time.Sleep(hold) // keep the transport down a while: not a synchronisation
	if err := e.lab.Uncut(e.ctx, a, primary); err != nil {
		e.t.Fatal(err)
	}
	restore := time.Now()
	r = e.waitSustained(st, "stream back on "+primary+" after the restore", restore, onPrimary, time.Second, backBound)
	recs, _ := st.Records()
	c.failover = gapsAround(recs, start, restore)
	c.Detected, c.Back = detected, r.SentAt().Sub(restore)
	if !c.HasGap {
		return c
	}
	// The first lost packet left one sending interval after the last one
	// delivered; 500 pps: 2 ms.
	c.dataCut = c.Gap.Before.SentAt().Add(2 * time.Millisecond)
	c.onBackup = c.Gap.After.SentAt()
	// The verdict that moved the stream is the primary's last down
	// before the first packet on the backup (log times are whole
	// milliseconds: 5 ms of slack). An earlier down that came back up
	// before the cut (the emulated guest stalls, and both tunnels blink
	// at once) is not this cut's verdict.
	log := e.lab.EdgeLog(a)
	for _, d := range tunnelDowns(log, start.Add(-2*time.Second), c.onBackup.Add(5*time.Millisecond)) {
		if d.tunnel == tunnel {
			c.verdict, c.hasVerdict = d.at, true
		}
	}
	if c.hasVerdict {
		sc := bufio.NewScanner(strings.NewReader(log))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := pathsApplied.FindStringSubmatch(sc.Text()); m != nil {
				if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && !ts.Before(c.verdict) {
					c.applied = ts
					break
				}
			}
		}
	}
	return c
}

// failoverTable renders the rows, in milliseconds. The failover time is
// the hole's send window: its receive-time length ("gap") also holds the
// backup's marker delay, since the first packet after it took the backup.
func failoverTable(rows []benchRow) string {
	var b strings.Builder
	b.WriteString("| profile | probe | cuts counted (early, no verdict) | failover (send window) p50 | p99 | max | gap (receive) p50 | p99 | lost pkts p50 | cut -> verdict p50 / max | verdict -> route applied p50 / max | verdict -> first packet on backup p50 / p99 / max | time back p50 | time back p99 | time back max | lost after restore (max) | backup false downs | VM stalls >= 200 ms (longest) | p99 goal |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, r := range rows {
		sp, gp, bp := stream.PercentilesOf(r.sendGaps), stream.PercentilesOf(r.gaps), stream.PercentilesOf(r.backs)
		dp, ap, wp := stream.PercentilesOf(r.detect), stream.PercentilesOf(r.applied), stream.PercentilesOf(r.switched)
		lost := slices.Sorted(slices.Values(r.lost))
		verdict := "met"
		if len(r.sendGaps) == 0 || sp.P99 > r.profile.Goal {
			verdict = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %d (%d, %d) | %s | %s | %s | %s | %s | %d | %s / %s | %s / %s | %s / %s / %s | %s | %s | %s | %d | %d | %d (%s) | <= %s: %s |\n", r.profile.Name, r.profile.Probe,
			len(r.gaps), r.early, r.noVerdict,
			ms(sp.P50), ms(sp.P99), ms(sp.Max), ms(gp.P50), ms(gp.P99), stream.Percentile(lost, 50),
			ms(dp.P50), ms(dp.Max), ms(ap.P50), ms(ap.Max), ms(wp.P50), ms(wp.P99), ms(wp.Max),
			ms(bp.P50), ms(bp.P99), ms(bp.Max),
			slices.Max(append([]uint64{0}, r.lostAfterRestore...)), r.backupDowns, r.stalls, ms(r.longestStall), ms(r.profile.Goal), verdict)
	}
	b.WriteString("\ncuts: a cut is counted unless the edge's verdict (its log: the primary's probes down) came before the data cut (the send time of the first lost packet) -- early -- or no verdict was logged; with the atomic cut neither should happen. cut -> verdict: data cut -> the verdict; verdict -> route applied: -> the agent's next \"path decisions applied\" log line (the route write returned); verdict -> first packet on backup: -> the send time of the first packet after the hole (it took the backup): the route switch as the traffic saw it, <= 2 ms late at 500 pps. Log times have millisecond resolution.\n")
	b.WriteString("\nfailover (send window): the longest hole in the stream's sequence numbers per cut, in send times: how long packets went into the dead path; gap (receive): the same hole in receive times, which also holds the backup's marker delay; time back: restore -> the first packet on the primary again for good; backup false downs: the uncut transport's probes declared down meanwhile (a's log); VM stalls: the test process did not run for that long (the whole emulated guest stalls now and then).\n")
	return b.String()
}

// TestBenchFalseFailovers: MESHWAN_BENCH_SOAK (10 min) of netem random
// loss (1%) on every transport of both sites, each way, with
// MESHWAN_BENCH_SOAK_PROFILE (default: fast, the one with the least
// margin; the default profile was measured in earlier runs, see
// docs/benchmarks.md): no tunnel may go down (the probe transitions the edges report
// do not move). A 100 pps stream a -> b shows the loss the traffic saw.
func TestBenchFalseFailovers(t *testing.T) {
	requireBench(t)
	soak := envDuration(t, "MESHWAN_BENCH_SOAK", 10*time.Minute)
	loss := os.Getenv("MESHWAN_BENCH_SOAK_LOSS")
	if loss == "" {
		loss = "1%"
	}
	pname := os.Getenv("MESHWAN_BENCH_SOAK_PROFILE")
	if pname == "" {
		pname = "fast"
	}
	prof := profileNamed(t, pname)
	e := setupLab(t, twoSiteTwoTransports)
	e.declare()
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, PathPolicy: prof.Policy})
	e.enrollAndStart()
	e.waitAllPairs()
	ends := map[string]map[string]path{"a": e.pathsBetween("a", "b"), "b": e.pathsBetween("b", "a")}
	for s, ps := range ends {
		e.waitUsable(s, ps)
	}
	// transitions returns each (site, transport) tunnel end's reported
	// transitions, and the ends not up and usable.
	transitions := func() (map[string]uint64, []string) {
		out := map[string]uint64{}
		var notUp []string
		for s, ps := range ends {
			st, err := e.siteStatus(s)
			if err != nil {
				t.Fatal(err)
			}
			for tr, p := range ps {
				ts := tunnelStatusByID(st, p.ID)
				out[s+"/"+tr] = ts.GetTransitions()
				if ts.GetProbeState() != "up" || !ts.GetUsable() {
					notUp = append(notUp, s+"/"+tr+": "+fmtTunnel(ts))
				}
			}
		}
		return out, notUp
	}
	before, _ := transitions()
	stalls := startStallMonitor(t, stallMin)
	st := e.startStream(lab.StreamSpec{From: "a", To: "b", Port: 5004, Rate: 100})
	defer st.Stop()
	for _, s := range e.lab.Order {
		for _, tr := range twoTransports {
			if err := e.lab.Netem(e.ctx, s, tr, "loss "+loss); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	polls, notUpPolls := 0, 0
	var maxRTTLoss float64
	for time.Since(start) < soak {
		time.Sleep(5 * time.Second) // sampling period of the status, not a synchronisation
		_, notUp := transitions()
		polls++
		if len(notUp) > 0 {
			notUpPolls++
			t.Logf("%v into the soak, not up: %s", time.Since(start).Round(time.Second), strings.Join(notUp, "; "))
		}
		for s, ps := range ends {
			sst, _ := e.siteStatus(s)
			for _, p := range ps {
				maxRTTLoss = max(maxRTTLoss, tunnelStatusByID(sst, p.ID).GetLossPct())
			}
		}
		if err := st.Running(); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	after, _ := transitions()
	// Attribute every probe down the edges logged to a VM stall, or not.
	var downs, stalled int
	for _, s := range e.lab.Order {
		for _, d := range tunnelDowns(e.lab.EdgeLog(s), start, start.Add(elapsed)) {
			downs++
			if stalls.near(d.at, time.Second) {
				stalled++
			}
		}
	}
	nStalls, longestStall := stalls.between(start, start.Add(elapsed))
	for _, s := range e.lab.Order {
		for _, tr := range twoTransports {
			if err := e.lab.ClearNetem(e.ctx, s, tr); err != nil {
				t.Error(err)
			}
		}
	}
	recs, _ := st.Stop()
	sum := stream.Summarize(stream.SentBetween(recs, start, start.Add(elapsed)))
	var total uint64
	var per []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		d := after[k] - before[k]
		total += d
		per = append(per, fmt.Sprintf("%s %d", k, d))
	}
	verdict := "met"
	if total != 0 {
		verdict = "**missed**"
		t.Errorf("%d probe transitions under %s loss (%s); want none", total, loss, strings.Join(per, ", "))
	}
	lossPct := 0.0
	if n := sum.Received + int(sum.Lost); n > 0 {
		lossPct = 100 * float64(sum.Lost) / float64(n)
	}
	var b strings.Builder
	b.WriteString(benchHeader("make bench-failover: TestBenchFalseFailovers"))
	fmt.Fprintf(&b, "False failovers: 2 sites x 2 transports (4 tunnel ends), %s profile (%s), netem loss %s on every transport of both sites, each way (a packet crosses two lossy hops one way, four per probe round trip).\n\n", prof.Name, prof.Probe, loss)
	b.WriteString("| duration | netem loss | tunnel ends | probe transitions | downs (edge logs) | of them within 1 s of a VM stall | VM stalls >= 200 ms (longest) | status polls with a tunnel not up | max reported probe loss | stream loss | stream longest gap | goal: 0 transitions |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	fmt.Fprintf(&b, "| %v | %s each way | %d | %d | %d | %d | %d (%s ms) | %d / %d | %.1f%% | %.2f%% (%d of %d) | %s ms | %s |\n",
		elapsed.Round(time.Second), loss, len(after), total, downs, stalled, nStalls, ms(longestStall), notUpPolls, polls, maxRTTLoss, lossPct,
		sum.Lost, sum.Received+int(sum.Lost), ms(sum.Longest.Recv()), verdict)
	fmt.Fprintf(&b, "\nPer tunnel end: %s. A down within 1 s of a stall of the whole emulated guest is the probes' timers and replies held up together, not lost probes.\n", strings.Join(per, ", "))
	writeTable(t, "bench-false-failovers.md", b.String())
}

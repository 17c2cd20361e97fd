//go:build e2e

package e2e

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/e2e/lab"
	"github.com/meshwan/meshwan/e2e/stream"
	"github.com/meshwan/meshwan/edge/dataplane"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// Probing, failover and SLA steering over two WAN transports per site.
//
// Telling the paths apart: the failover scenarios put a marker delay on
// the backup transport, one way (site a -> WAN), so every packet of the
// stream a -> b says at the receiver which transport carried it: one-way
// latency under markerThreshold means the primary, above it the backup.
// That times the return to the primary to the packet, without polling the
// kernel. The emulated VM stalls now and then, and packets on the primary
// then arrive late too (up to ~150 ms seen under load): a state counts
// from the first packet after which a majority (sustainFrac) of the
// packets of the next second agree. A packet on the backup is never
// early, so the switch itself is never misread; a stall only delays the
// verdict.
const (
	markerDelay     = 100 * time.Millisecond
	markerThreshold = markerDelay / 2
	sustainFrac     = 0.6
	// ciGapBound is the CI bound on a failover's outage, the hole's send
	// window (the goal is 1 s at the default profile; the emulated VM is
	// slow and shared).
	ciGapBound = 3 * time.Second
)

var twoTransports = []string{"inet1", "inet2"}

// twoSiteTwoTransports is the lab of the path scenarios: sites a and b,
// each with transports inet1 and inet2, and a management link so that no
// transport fault cuts an edge off the controller (which of the parallel
// tunnels is the primary is the agent's choice).
var twoSiteTwoTransports = lab.Config{Sites: []string{"a", "b"}, Transports: twoTransports, ManagementLink: true}

// path is one tunnel between two sites, seen from the first.
type path struct {
	Transport string // the local transport
	ID        string // the controller's tunnel id
	Link      string // the GRE link's name on the local site
}

// pathsBetween returns the tunnels from site a to site b by a's transport.
func (e *env) pathsBetween(a, b string) map[string]path {
	e.t.Helper()
	ts, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	res := map[string]path{}
	for _, tn := range ts.Tunnels {
		for _, end := range [][2]*pb.TunnelEnd{{tn.A, tn.B}, {tn.B, tn.A}} {
			me, peer := end[0], end[1]
			if me.Site == a && peer.Site == b {
				res[me.Transport] = path{Transport: me.Transport, ID: tn.Id,
					Link: dataplane.LinkName(netip.MustParsePrefix(me.InnerAddress))}
			}
		}
	}
	return res
}

// transportOf maps a GRE link name back to its transport ("" if none).
func transportOf(paths map[string]path, link string) string {
	for tr, p := range paths {
		if p.Link == link {
			return tr
		}
	}
	return ""
}

// waitFor polls cond every 250 ms until it reports done or timeout
// passes (then the test fails with desc and cond's last state), and
// returns how long it took.
func (e *env) waitFor(desc string, timeout time.Duration, cond func() (bool, string)) time.Duration {
	e.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		done, state := cond()
		if done {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not after %v: %s", desc, timeout, state)
		}
		for _, s := range e.lab.Order {
			if e.lab.EdgeExited(s) {
				e.t.Fatalf("%s: edge %s exited:\n%s", desc, s, tail(e.lab.EdgeLog(s), 40))
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// siteStatus returns what a site's edge last reported to the controller.
func (e *env) siteStatus(site string) (*pb.SiteStatus, error) {
	s, err := e.admin.GetSite(e.actx, &pb.GetSiteRequest{Name: site})
	return s.GetStatus(), err
}

func tunnelStatusByID(st *pb.SiteStatus, id string) *pb.TunnelStatus {
	for _, ts := range st.GetTunnels() {
		if ts.TunnelId == id {
			return ts
		}
	}
	return nil
}

func fmtTunnel(ts *pb.TunnelStatus) string {
	if ts == nil {
		return "not reported"
	}
	return fmt.Sprintf("state %v probed %v probe_state %q usable %v rtt %.1f ms loss %.1f%% transitions %d",
		ts.State, ts.Probed, ts.ProbeState, ts.Usable, ts.RttMs, ts.LossPct, ts.Transitions)
}

// waitUsable waits until site reports every one of its paths probed up
// and usable.
func (e *env) waitUsable(site string, paths map[string]path) {
	e.t.Helper()
	e.waitFor(site+": every tunnel probed up and usable", time.Minute, func() (bool, string) {
		st, err := e.siteStatus(site)
		if err != nil {
			return false, err.Error()
		}
		var bad []string
		for _, tr := range slices.Sorted(maps.Keys(paths)) {
			ts := tunnelStatusByID(st, paths[tr].ID)
			if ts == nil || ts.ProbeState != "up" || !ts.Usable {
				bad = append(bad, tr+": "+fmtTunnel(ts))
			}
		}
		return len(bad) == 0, strings.Join(bad, "; ")
	})
}

// routeTransport returns the transport whose tunnel the kernel of site
// from uses to reach site to's LAN host (ip route get).
func (e *env) routeTransport(from, to string, paths map[string]path) (string, string) {
	e.t.Helper()
	dev, err := e.lab.RouteDev(e.ctx, from, e.lab.Sites[to].Host)
	if err != nil {
		e.t.Fatal(err)
	}
	return transportOf(paths, dev), dev
}

// startStream starts a measurement stream, stopped at the end of the test.
func (e *env) startStream(spec lab.StreamSpec) *lab.Stream {
	e.t.Helper()
	st, err := e.lab.StartStream(e.ctx, spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// waitSustained waits until, among st's packets sent from `from` on, ok
// holds from some packet on for at least sustainFrac of the packets of
// the following window (stream.FirstSustained), and returns that packet.
func (e *env) waitSustained(st *lab.Stream, desc string, from time.Time, ok func(stream.Record) bool, window, timeout time.Duration) stream.Record {
	e.t.Helper()
	var found stream.Record
	e.waitFor(desc, timeout, func() (bool, string) {
		recs, err := st.Records()
		if err != nil {
			return false, err.Error()
		}
		if err := st.Running(); err != nil {
			e.t.Fatal(err)
		}
		r, done := stream.FirstSustained(recs, from, ok, window, sustainFrac)
		found = r
		recent := stream.SentBetween(recs, time.Now().Add(-2*time.Second), time.Time{})
		return done, fmt.Sprintf("stream %s -> %s port %d, packets sent in the last 2 s: %v", st.Spec.From, st.Spec.To, st.Spec.Port, stream.Summarize(recent))
	})
	return found
}

func onPrimary(r stream.Record) bool { return r.Latency() < markerThreshold }
func onBackup(r stream.Record) bool  { return r.Latency() >= markerThreshold }

// failover is one cut and restore of a transport carrying a stream.
type failover struct {
	// Gap is the longest hole in the stream's sequence numbers from 2 s
	// before the cut until the restore, by send window (Gap.Send): the
	// outage. Its receive-time length also holds the backup's marker.
	Gap       stream.Gap
	HasGap    bool          // false: not a packet was lost
	Detected  time.Duration // cut -> the first packet on the backup for good
	Back      time.Duration // restore -> the first packet on the primary for good
	ReturnGap stream.Gap    // the longest hole after the restore, by send window
	HasReturn bool          // false: nothing was lost after the restore
	// ReturnLost counts the packets lost after the restore (until the
	// stream had been back on the primary for a second).
	ReturnLost uint64
}

// fmtGap describes a gap, or its absence.
func fmtGap(g stream.Gap, ok bool) string {
	if !ok {
		return "none (no packet lost)"
	}
	return g.String()
}

// cutAndRestore cuts transport primary of site a (netem loss 100% both
// ways) while st (a -> b) runs, waits until the stream is on the backup,
// keeps the cut for hold more, then restores it and waits until the
// stream is back on the primary. check, if not nil, runs during the cut.
func (e *env) cutAndRestore(st *lab.Stream, a, primary string, hold, backBound time.Duration, check func()) failover {
	e.t.Helper()
	var f failover
	// Event times are taken when tc has returned: the kernel changed the
	// qdiscs during the command (~0.1-0.5 s in the VM), so the times from
	// them are slight underestimates, by tc's exit. The gaps come from the
	// packets alone.
	if err := e.lab.Netem(e.ctx, a, primary, "loss 100%"); err != nil {
		e.t.Fatal(err)
	}
	cut := time.Now()
	r := e.waitSustained(st, "stream on the backup after cutting "+primary, cut, onBackup, time.Second, converge)
	f.Detected = r.SentAt().Sub(cut)
	if check != nil {
		check()
	}
	time.Sleep(hold) // keep the transport down a while: not a synchronisation
	if err := e.lab.ClearNetem(e.ctx, a, primary); err != nil {
		e.t.Fatal(err)
	}
	restore := time.Now()
	r = e.waitSustained(st, "stream back on "+primary+" after the restore", restore, onPrimary, time.Second, backBound)
	f.Back = r.SentAt().Sub(restore)
	recs, _ := st.Records()
	g := gapsAround(recs, cut, restore)
	f.Gap, f.HasGap, f.ReturnGap, f.HasReturn, f.ReturnLost = g.Gap, g.HasGap, g.ReturnGap, g.HasReturn, g.ReturnLost
	return f
}

// TestLabTwoTransports checks the lab itself, whatever the agent does
// with probes: two sites with two transports get a tunnel per transport,
// each carrying traffic over its own uplink; the measurement stream runs
// between the LANs; netem on a transport delays exactly the traffic on
// it, and loss 100% cuts it.
func TestLabTwoTransports(t *testing.T) {
	e := setupLab(t, twoSiteTwoTransports)
	e.declare()
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH})
	start := time.Now()
	e.enrollAndStart()
	e.waitAllPairs()
	t.Logf("two sites x two transports converged after %v", time.Since(start).Round(time.Millisecond))
	paths := e.pathsBetween("a", "b")
	if len(paths) != 2 {
		t.Fatalf("tunnels a -> b: %v, want one per transport", paths)
	}
	b := e.lab.Sites["b"]
	if dev, err := e.lab.RouteDev(e.ctx, "a", lab.ControllerAddr); err != nil || dev != "mgmt0" {
		t.Errorf("a reaches the controller via %q (%v), want the management link mgmt0", dev, err)
	}
	for _, tr := range twoTransports {
		// Each transport's underlay leaves through its own uplink.
		if dev, err := e.lab.RouteDev(e.ctx, "a", b.Transport(tr).Addr); err != nil || dev != e.lab.Sites["a"].Transport(tr).Dev {
			t.Errorf("a -> b's %s address %s leaves via %q (%v), want %s", tr, b.Transport(tr).Addr, dev, err, e.lab.Sites["a"].Transport(tr).Dev)
		}
		// Each tunnel carries traffic: ping b's end of its /30.
		e.waitFor("a pings b over the "+tr+" tunnel", converge, func() (bool, string) {
			out, err := lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites["a"].NS, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2", e.innerAddr("b", paths[tr].ID))
			return err == nil, out
		})
	}
	e.expectEncrypted()
	primary, dev := e.routeTransport("a", "b", paths)
	if primary == "" {
		t.Fatalf("a reaches b's LAN via %s, not a tunnel %v", dev, paths)
	}
	backup := "inet2"
	if primary == "inet2" {
		backup = "inet1"
	}
	st := e.startStream(lab.StreamSpec{From: "a", To: "b", Port: 5004, Rate: 500})
	defer st.Stop()
	from := time.Now()
	e.waitSustained(st, "stream a -> b flowing", from, onPrimary, time.Second, converge)
	e.waitFor("5 s of stream", time.Minute, func() (bool, string) { return time.Since(from) > 5*time.Second, "" })
	recs, _ := st.Records()
	t.Logf("stream a -> b over %s, baseline: %v", primary, stream.Summarize(stream.SentBetween(recs, from, time.Time{})))

	// A marker delay on the stream's transport shows in its latency.
	mark := time.Now()
	if err := e.lab.NetemDir(e.ctx, "a", primary, lab.Up, "delay "+markerDelay.String()); err != nil {
		t.Fatal(err)
	}
	e.waitSustained(st, "stream delayed by the marker on "+primary, mark, onBackup, time.Second, time.Minute)
	if q, err := e.lab.Qdiscs(e.ctx, "a", primary); err == nil {
		t.Logf("qdiscs:\n%s", q)
	}
	if err := e.lab.ClearNetem(e.ctx, "a", primary); err != nil {
		t.Fatal(err)
	}
	e.waitSustained(st, "stream undelayed", time.Now(), onPrimary, time.Second, time.Minute)

	// Loss 100% on the other transport cuts its tunnel, both ways, and
	// not the stream's; cleared, the tunnel carries traffic again. Pings
	// over the tunnels' /30s check this whatever the agent does with its
	// routes (the stream's own losses are only reported: an edge whose
	// probes stumble in a VM stall may route the stream over the cut
	// tunnel for a moment).
	ping := func(from, to, tunnelID string, wait string) (string, error) {
		return lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites[from].NS, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", wait, e.innerAddr(to, tunnelID))
	}
	if err := e.lab.Netem(e.ctx, "a", backup, "loss 100%"); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if out, err := ping("a", "b", paths[backup].ID, "1"); err == nil {
		t.Errorf("ping over the cut %s tunnel worked: %s", backup, out)
	}
	if out, err := ping("b", "a", paths[backup].ID, "1"); err == nil {
		t.Errorf("ping from b over the cut %s tunnel worked: %s", backup, out)
	}
	if out, err := ping("a", "b", paths[primary].ID, "2"); err != nil {
		t.Errorf("cutting %s also cut the %s tunnel: %s", backup, primary, out)
	}
	if err := e.lab.ClearNetem(e.ctx, "a", backup); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	e.waitFor("a pings b over the restored "+backup+" tunnel", converge, func() (bool, string) {
		out, err := ping("a", "b", paths[backup].ID, "2")
		return err == nil, out
	})
	recs, err := st.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream a -> b while %s was cut: %v", backup, stream.Summarize(stream.SentBetween(recs, cut, restored)))
	t.Logf("stream a -> b, whole: %v", stream.Summarize(recs))
}

// innerAddr returns site's address on a tunnel's /30.
func (e *env) innerAddr(site, tunnelID string) string {
	e.t.Helper()
	tn, err := e.admin.GetTunnel(e.actx, &pb.GetTunnelRequest{Id: tunnelID})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, end := range []*pb.TunnelEnd{tn.A, tn.B} {
		if end.Site == site {
			addr, _, _ := strings.Cut(end.InnerAddress, "/")
			return addr
		}
	}
	e.t.Fatalf("tunnel %s has no end at %s", tunnelID, site)
	return ""
}

// TestFailoverTwoTransports: two sites with two transports each (two
// parallel tunnels, static routing, the default probe profile). A 500 pps
// stream crosses from a to b; its transport is cut at a (netem loss 100%
// both ways): the stream moves to the other transport within the CI bound
// and the controller shows the cut tunnel down; restored, the stream goes
// back after the hold-down.
func TestFailoverTwoTransports(t *testing.T) {
	e := setupLab(t, twoSiteTwoTransports)
	e.declare()
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH})
	e.enrollAndStart()
	e.waitAllPairs()
	paths := e.pathsBetween("a", "b")
	if len(paths) != 2 {
		t.Fatalf("tunnels a -> b: %v, want one per transport", paths)
	}
	e.waitUsable("a", paths)
	e.waitUsable("b", e.pathsBetween("b", "a"))
	// The primary of parallel tunnels is the agent's choice (the lowest
	// route metric; equal metrics go by link name): cut whichever it is.
	primary, dev := e.routeTransport("a", "b", paths)
	if primary == "" {
		t.Fatalf("a reaches b's LAN via %s, not a tunnel %v", dev, paths)
	}
	t.Logf("a reaches b's LAN over %s (link %s): that transport is cut", primary, dev)
	backup := "inet2"
	if primary == "inet2" {
		backup = "inet1"
	}
	if err := e.lab.NetemDir(e.ctx, "a", backup, lab.Up, "delay "+markerDelay.String()); err != nil {
		t.Fatal(err)
	}
	st := e.startStream(lab.StreamSpec{From: "a", To: "b", Port: 5004, Rate: 500})
	defer st.Stop()
	e.waitSustained(st, "stream a -> b flowing on "+primary, time.Now(), onPrimary, time.Second, converge)

	holdDown := dataplane.DefaultHoldDown
	f := e.cutAndRestore(st, "a", primary, time.Second, holdDown+time.Minute, func() {
		took := e.waitFor("the controller shows a's "+primary+" tunnel down", converge, func() (bool, string) {
			st, err := e.siteStatus("a")
			if err != nil {
				return false, err.Error()
			}
			ts := tunnelStatusByID(st, paths[primary].ID)
			return ts != nil && (ts.ProbeState == "down" || ts.State == pb.TunnelState_TUNNEL_STATE_DOWN), fmtTunnel(ts)
		})
		t.Logf("controller reported the %s tunnel down %v after the stream moved", primary, took.Round(time.Millisecond))
	})
	t.Logf("cut %s: stream on %s %v after the cut; longest gap %s", primary, backup, f.Detected.Round(time.Millisecond), fmtGap(f.Gap, f.HasGap))
	t.Logf("restored %s: stream back on it %v after the restore (hold-down %v); longest gap on the way back %s",
		primary, f.Back.Round(time.Millisecond), holdDown, fmtGap(f.ReturnGap, f.HasReturn))
	if f.HasGap && f.Gap.Send() > ciGapBound {
		t.Errorf("failover gap %v: send window over %v", f.Gap, ciGapBound)
	}
	if f.Back < holdDown/2 {
		t.Errorf("stream back on %s %v after the restore, before the %v hold-down could pass", primary, f.Back, holdDown)
	}
	if now, dev := e.routeTransport("a", "b", paths); now != primary {
		t.Errorf("after the restore a reaches b's LAN over %s (link %s), want %s", now, dev, primary)
	}
	recs, err := st.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream a -> b: %v", stream.Summarize(recs))
}

// TestDegradationMovesRealtimeClass: with SLA steering, a realtime class
// (voice, udp/5004; rtt <= 150 ms, prefers inet1 then inet2) and a bulk
// class (udp/5005; rtt <= 2 s, prefers inet1) both start on inet1. 200 ms
// of delay on a's inet1, one way (a -> WAN: the streams' direction; the
// probes' RTT grows by 200 ms), breaks realtime's SLA: voice moves to
// inet2 (its one-way latency drops back under 100 ms) while bulk stays on
// inet1 (still >= 200 ms), and the edge's reported class paths agree.
//
// One way on purpose: 200 ms each way is a 400 ms RTT step, at the limit
// of what the probes' silence rule tolerates ((down_after - 1) x interval
// = 400 ms); in the VM lab it read as inet1 going down for a moment, and
// every class left inet1 for the hold-down, bulk included.
func TestDegradationMovesRealtimeClass(t *testing.T) {
	e := setupLab(t, twoSiteTwoTransports)
	e.declare()
	const damping = 2 * time.Second
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, PathPolicy: &pb.PathPolicy{
		SlaClasses: []*pb.SLAClass{
			{Name: "realtime", MaxRttMs: 150, TransportPreference: []string{"inet1", "inet2"}, DampingMs: uint32(damping.Milliseconds())},
			{Name: "bulk", MaxRttMs: 2000, TransportPreference: []string{"inet1"}},
		},
		TrafficClasses: []*pb.TrafficClass{
			{Name: "voice", SlaClass: "realtime", Protocol: "udp", Ports: []string{"5004"}},
			{Name: "bulk", SlaClass: "bulk", Protocol: "udp", Ports: []string{"5005"}},
		},
	}})
	e.enrollAndStart()
	e.waitAllPairs()
	paths := e.pathsBetween("a", "b")
	if len(paths) != 2 {
		t.Fatalf("tunnels a -> b: %v, want one per transport", paths)
	}
	e.waitUsable("a", paths)
	e.waitClassPaths("a", "b", paths, map[string]string{"voice": "inet1", "bulk": "inet1"})

	voice := e.startStream(lab.StreamSpec{From: "a", To: "b", Port: 5004, Rate: 200})
	defer voice.Stop()
	bulk := e.startStream(lab.StreamSpec{From: "a", To: "b", Port: 5005, Rate: 200})
	defer bulk.Stop()
	fast := func(r stream.Record) bool { return r.Latency() < 100*time.Millisecond }
	e.waitSustained(voice, "voice flowing", time.Now(), fast, time.Second, converge)
	e.waitSustained(bulk, "bulk flowing", time.Now(), fast, time.Second, converge)

	if err := e.lab.NetemDir(e.ctx, "a", "inet1", lab.Up, "delay 200ms"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := e.waitSustained(voice, "voice back under 100 ms one-way (moved to inet2)", start, fast, 2*time.Second, 2*time.Minute)
	moved := r.SentAt().Sub(start)
	t.Logf("voice moved off the delayed inet1 %v after the delay was added (damping %v)", moved.Round(time.Millisecond), damping)
	e.waitClassPaths("a", "b", paths, map[string]string{"voice": "inet2", "bulk": "inet1"})
	// Bulk kept its path: its packets still take the delay.
	recs, _ := bulk.Records()
	late := stream.Summarize(stream.SentBetween(recs, start.Add(time.Second), time.Time{}))
	if late.Received == 0 || late.Latency.P50 < 200*time.Millisecond {
		t.Errorf("bulk after the delay: %v; want it to stay on inet1 (one-way >= 200 ms)", late)
	}
	t.Logf("bulk after the delay: %v", late)
	vr, _ := voice.Stop()
	br, _ := bulk.Stop()
	t.Logf("voice: %v", stream.Summarize(vr))
	t.Logf("bulk: %v", stream.Summarize(br))
}

// waitClassPaths waits until site reports, towards remote, each traffic
// class on the tunnel of the given transport.
func (e *env) waitClassPaths(site, remote string, paths map[string]path, want map[string]string) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("%s's class paths to %s: %v", site, remote, want), time.Minute, func() (bool, string) {
		st, err := e.siteStatus(site)
		if err != nil {
			return false, err.Error()
		}
		got := map[string]string{}
		var all []string
		for _, cp := range st.GetClassPaths() {
			all = append(all, fmt.Sprintf("%s->%s: %s (%s, meets_sla %v)", cp.TrafficClass, cp.RemoteSite, transportOfID(paths, cp.TunnelId), cp.TunnelId, cp.MeetsSla))
			if cp.RemoteSite == remote {
				got[cp.TrafficClass] = transportOfID(paths, cp.TunnelId)
			}
		}
		for class, tr := range want {
			if got[class] != tr {
				return false, "class paths: " + strings.Join(all, "; ")
			}
		}
		return true, ""
	})
}

func transportOfID(paths map[string]path, id string) string {
	for tr, p := range paths {
		if p.ID == id {
			return tr
		}
	}
	return "?"
}

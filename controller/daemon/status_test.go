package daemon_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/controller/store"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/meshwan/meshwan/web"
)

func probedReport(version int64, tunnel string, state pb.TunnelState, rtt float64) *pb.SyncRequest {
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Report{Report: &pb.EdgeReport{AppliedVersion: version,
		Tunnels: []*pb.TunnelStatus{{TunnelId: tunnel, State: state, LinkUp: true, IkeState: "ESTABLISHED", ChildState: "INSTALLED",
			Probed: true, ProbeState: "up", RttMs: rtt, RttP99Ms: 2 * rtt, JitterMs: rtt / 10, LossPct: 1.5, Transitions: 2,
			Usable: state == pb.TunnelState_TUNNEL_STATE_UP, BytesIn: uint64(rtt * 100)}},
		ClassPaths: []*pb.ClassPath{{TrafficClass: "voice", RemoteSite: "hub", TunnelId: tunnel, MeetsSla: true}}}}}
}

// dashboardTunnel reads the dashboard's view of one tunnel.
func dashboardTunnel(t *testing.T, e *env, id string) (web.Tunnel, bool) {
	t.Helper()
	resp, err := http.Get("http://" + e.d.HTTPAddr.String() + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st web.State
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return web.Tunnel{}, false
	}
	for _, tn := range st.Tunnels {
		if tn.ID == id {
			return tn, true
		}
	}
	return web.Tunnel{}, false
}

// revision is etcd's current revision, read from the embedded etcd (not
// from the controller's view, which follows it asynchronously).
// keyHolds reports whether key exists in the controller's etcd and its
// value contains sub.
func (e *env) keyHolds(t *testing.T, key, sub string) bool {
	t.Helper()
	cli, err := store.NewClient([]string{"unix://" + filepath.Join(e.dataDir, "etcd", "etcd.sock")}, store.ClientOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count > 0 && strings.Contains(string(resp.Kvs[0].Value), sub)
}

func (e *env) revision(t *testing.T) int64 {
	t.Helper()
	cli, err := store.NewClient([]string{"unix://" + filepath.Join(e.dataDir, "etcd", "etcd.sock")}, store.ClientOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/meshwan/intent/rev")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestEdgeReportsFromMemory: an edge's per-second reports are served by
// GetSite and the dashboard from memory with their probe figures and class
// paths; figures-only reports write nothing to etcd, and reach the
// dashboard within about a second; a state change is written and shown at
// once.
func TestEdgeReportsFromMemory(t *testing.T) {
	e := startWith(t, "10.255.0.0/16", func(c *daemon.Config) {
		c.DashboardNoAuth = true
		c.ReportSummaryPeriod = time.Hour // only state changes write
	})
	e.mustCreate(t, site("hub", true, 1), site("br1", false, 2))
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}}); err != nil {
		t.Fatal(err)
	}
	stream := syncStream(t, e, e.enroll(t, "br1"))
	ds, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	id := ds.Tunnels[0].Id
	up := pb.TunnelState_TUNNEL_STATE_UP
	if err := stream.Send(probedReport(ds.Version, id, up, 10)); err != nil {
		t.Fatal(err)
	}
	var got *pb.SiteStatus
	waitFor(t, "GetSite shows the probed tunnel", func() bool {
		s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "br1"})
		got = s.GetStatus()
		return err == nil && len(got.GetTunnels()) == 1 && got.Tunnels[0].RttMs == 10
	})
	tun := got.Tunnels[0]
	if !tun.Probed || tun.ProbeState != "up" || tun.RttP99Ms != 20 || tun.JitterMs != 1 || tun.LossPct != 1.5 || tun.Transitions != 2 || !tun.Usable {
		t.Errorf("GetSite tunnel status: %v", tun)
	}
	if len(got.ClassPaths) != 1 || got.ClassPaths[0].TrafficClass != "voice" || got.ClassPaths[0].TunnelId != id || !got.ClassPaths[0].MeetsSla {
		t.Errorf("GetSite class paths: %v", got.ClassPaths)
	}

	// 20 figures-only reports: GetSite and the dashboard follow, etcd
	// does not change. The first report's state change is written after
	// GetSite already serves it from memory: wait for that write first.
	waitFor(t, "the first report's state is written", func() bool { return e.keyHolds(t, "/meshwan/health/live/br1", id) })
	before := e.revision(t)
	for i := range 20 {
		if err := stream.Send(probedReport(ds.Version, id, up, 11+float64(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "GetSite shows the last RTT", func() bool {
		s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "br1"})
		return err == nil && len(s.GetStatus().GetTunnels()) == 1 && s.Status.Tunnels[0].RttMs == 30
	})
	if after := e.revision(t); after != before {
		t.Errorf("figures-only reports wrote to etcd: revision %d -> %d", before, after)
	}
	waitFor(t, "the dashboard shows the last RTT", func() bool {
		tn, ok := dashboardTunnel(t, e, id)
		return ok && tn.RTTMillis != nil && *tn.RTTMillis == 30
	})
	tn, _ := dashboardTunnel(t, e, id)
	if tn.JitterMillis == nil || *tn.JitterMillis != 3 || tn.LossPercent == nil || *tn.LossPercent != 1.5 || tn.State != web.TunnelUp {
		t.Errorf("dashboard tunnel: state %s jitter %v loss %v", tn.State, tn.JitterMillis, tn.LossPercent)
	}

	// One more figures-only report reaches the dashboard within about a
	// second (the refresh pacing), without any etcd write.
	sent := time.Now()
	stream.Send(probedReport(ds.Version, id, up, 42))
	waitFor(t, "the dashboard shows RTT 42", func() bool {
		tn, ok := dashboardTunnel(t, e, id)
		return ok && tn.RTTMillis != nil && *tn.RTTMillis == 42
	})
	if took := time.Since(sent); took > 2500*time.Millisecond {
		t.Errorf("an RTT change took %v to reach the dashboard, want about a second at most", took)
	}

	// A state change (degraded) is written to etcd and shown at once.
	before = e.revision(t)
	sent = time.Now()
	stream.Send(probedReport(ds.Version, id, pb.TunnelState_TUNNEL_STATE_DEGRADED, 43))
	waitFor(t, "the dashboard shows the tunnel degraded", func() bool {
		tn, ok := dashboardTunnel(t, e, id)
		return ok && tn.State == web.TunnelDegraded
	})
	if took := time.Since(sent); took > time.Second {
		t.Errorf("a state change took %v to reach the dashboard", took)
	}
	// The write follows the in-memory update (the dashboard may show it
	// first): wait for it rather than read the revision once.
	waitFor(t, "the state change is written to etcd", func() bool { return e.revision(t) > before })
}

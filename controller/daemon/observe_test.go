package daemon_test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/daemon"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

func (e *env) get(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.d.HTTPAddr.String()+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var dashboardBuilds = regexp.MustCompile(`(?m)^meshwan_dashboard_builds_total (\d+)$`)

func (e *env) dashboardBuilds(t *testing.T) int {
	t.Helper()
	code, body := e.get(t, "/metrics", "")
	m := dashboardBuilds.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("/metrics: %d, no meshwan_dashboard_builds_total", code)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestMetrics: /metrics carries the embedded etcd's server metrics and the
// Go runtime's besides the controller's own.
func TestMetrics(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hq", false, 1))
	code, body := e.get(t, "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{"meshwan_sites 1", "etcd_server_has_leader 1", "etcd_mvcc_db_total_size_in_bytes", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestPProf: /debug/pprof/ is absent without --pprof, and needs the admin
// token with it.
func TestPProf(t *testing.T) {
	off := start(t, "10.255.0.0/16")
	if code, _ := off.get(t, "/debug/pprof/", off.d.AdminToken); code != http.StatusNotFound {
		t.Errorf("without --pprof: %d, want 404", code)
	}
	on := startWith(t, "10.255.0.0/16", func(c *daemon.Config) { c.PProf = true })
	if code, _ := on.get(t, "/debug/pprof/", ""); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", code)
	}
	if code, _ := on.get(t, "/debug/pprof/", "wrong-token-0123456789"); code != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d, want 401", code)
	}
	if code, body := on.get(t, "/debug/pprof/", on.d.AdminToken); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("with the token: %d, want 200 and the profile index", code)
	}
	if code, body := on.get(t, "/debug/pprof/goroutine?debug=1", on.d.AdminToken); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d", code)
	}
}

// TestNoDashboardWorkWithoutBrowser: with no browser connected, an edge's
// reports and an intent change build the dashboard's model not once; a
// request builds it once and shows the latest report.
func TestNoDashboardWorkWithoutBrowser(t *testing.T) {
	e := startWith(t, "10.255.0.0/16", func(c *daemon.Config) { c.DashboardNoAuth = true })
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
	before := e.dashboardBuilds(t)
	const n = 30
	for i := range n {
		state := pb.TunnelState_TUNNEL_STATE_UP
		if i%10 == 5 {
			state = pb.TunnelState_TUNNEL_STATE_DOWN // state changes too
		}
		if err := stream.Send(probedReport(ds.Version, id, state, 10+float64(i))); err != nil {
			t.Fatal(err)
		}
	}
	e.mustCreate(t, site("br2", false, 3))
	waitFor(t, "the last report", func() bool {
		s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "br1"})
		return err == nil && len(s.GetStatus().GetTunnels()) == 1 && s.Status.Tunnels[0].RttMs == 10+n-1
	})
	if got := e.dashboardBuilds(t); got != before {
		t.Errorf("%d reports and an intent change with no browser: %d dashboard builds, want 0", n, got-before)
	}
	tn, ok := dashboardTunnel(t, e, id)
	if !ok || tn.RTTMillis == nil || *tn.RTTMillis != 10+n-1 {
		t.Errorf("a request's state: %+v, want RTT %d", tn, 10+n-1)
	}
	if got := e.dashboardBuilds(t); got != before+1 {
		t.Errorf("one request: %d builds, want 1", got-before)
	}
}

package daemon_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/meshwan/meshwan/controller/daemon"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/meshwan/meshwan/web"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// lockedBuffer is a log sink the controller's goroutines write to while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// seedSites: the seed's two sites, the remote one unmanaged.
func seedSites() (hub, remote *pb.Site) {
	hub = &pb.Site{Name: "hub", Role: pb.SiteRole_SITE_ROLE_HUB,
		Transports: []*pb.Transport{{Name: "inet1", Address: "96.3.36.10"}}, LanPrefixes: []string{"10.1.1.0/24"}}
	remote = &pb.Site{Name: "remote", Role: pb.SiteRole_SITE_ROLE_SPOKE, Unmanaged: true,
		Transports: []*pb.Transport{{Name: "inet1", Address: "110.19.112.126"}}, LanPrefixes: []string{"10.2.1.0/24"}}
	return hub, remote
}

// TestExportSiteConfig: an operator exports the unmanaged site in both
// formats over gRPC and REST; the exported key is the one the managed end
// receives; a managed site's export, a read-only caller, an unmanaged
// site's enrollment and a dynamic transport on it are refused; every
// export is audited (log line with the credential, dashboard event) and
// no log line holds the key.
func TestExportSiteConfig(t *testing.T) {
	logs := &lockedBuffer{}
	e := startWith(t, "10.255.0.0/24", func(c *daemon.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	hub, remote := seedSites()
	e.mustCreate(t, hub, remote)
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE,
		Ipsec: &pb.IPsecPolicy{IkeProposal: "aes128-sha1-modp2048", EspProposal: "aes128-sha1-modp2048"}}}); err != nil {
		t.Fatal(err)
	}
	if s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "remote"}); err != nil || !s.GetUnmanaged() {
		t.Fatalf("GetSite remote: %v %v, want unmanaged", s, err)
	}

	// The managed end's key, from its desired state.
	stream := syncStream(t, e, e.enroll(t, "hub"))
	ds, err := stream.Recv()
	if err != nil || len(ds.Tunnels) != 1 {
		t.Fatalf("hub's desired state: %v %v", ds, err)
	}
	psk := ds.Tunnels[0].Psk

	op, err := e.admin.CreateCredential(e.ctx, &pb.CreateCredentialRequest{Name: "ops", Role: pb.AdminRole_ADMIN_ROLE_OPERATOR})
	if err != nil {
		t.Fatal(err)
	}
	opCtx := metadata.NewOutgoingContext(e.ctx, metadata.Pairs("authorization", "Bearer "+op.GetSecret()))
	resp, err := e.admin.ExportSiteConfig(opCtx, &pb.ExportSiteConfigRequest{Site: "remote", Format: pb.ExportFormat_EXPORT_FORMAT_LINUX})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range resp.GetFiles() {
		files[f.GetName()] = f.GetContent()
	}
	if len(files) != 3 || !strings.Contains(files["swanctl.conf"], "secret = 0x"+hex.EncodeToString(psk)+"\n") {
		t.Fatalf("linux export: %d files, swanctl.conf without the hub's key:\n%s", len(files), files["swanctl.conf"])
	}
	if !strings.Contains(files["swanctl.conf"], "remote_addrs = 96.3.36.10") || !strings.Contains(files["meshwan-gre.sh"], "ip route replace 10.1.1.0/24 via ") {
		t.Errorf("linux export:\n%s\n%s", files["swanctl.conf"], files["meshwan-gre.sh"])
	}
	if resp.GetVersion() < ds.GetVersion() || resp.GetSite() != "remote" {
		t.Errorf("export version %d (site %q), hub's state version %d", resp.GetVersion(), resp.GetSite(), ds.GetVersion())
	}

	// REST, RansNet format.
	code, body := restAs(t, e, "POST", "/v1/sites/remote:export", `{"format":"EXPORT_FORMAT_RANSNET"}`, op.GetSecret())
	var rest struct {
		Files []struct{ Name, Content string } `json:"files"`
	}
	if err := json.Unmarshal([]byte(body), &rest); code != 200 || err != nil || len(rest.Files) != 2 || rest.Files[0].Name != "mbox.cli" {
		t.Fatalf("REST export: %d %s", code, body)
	}
	if !strings.Contains(rest.Files[0].Content, "ipsec ike-policy 10 authentication psk policy AES SHA 14 keylife 28800 version 2\n") {
		t.Errorf("mbox.cli:\n%s", rest.Files[0].Content)
	}

	// Refusals.
	ro, err := e.admin.CreateCredential(e.ctx, &pb.CreateCredentialRequest{Name: "ro", Role: pb.AdminRole_ADMIN_ROLE_READ_ONLY})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := restAs(t, e, "POST", "/v1/sites/remote:export", `{"format":"EXPORT_FORMAT_LINUX"}`, ro.GetSecret()); code != 403 {
		t.Errorf("read-only export: %d, want 403", code)
	}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"managed site", func() error {
			_, err := e.admin.ExportSiteConfig(opCtx, &pb.ExportSiteConfigRequest{Site: "hub", Format: pb.ExportFormat_EXPORT_FORMAT_LINUX})
			return err
		}, codes.FailedPrecondition, `site "hub" is managed`},
		{"no format", func() error {
			_, err := e.admin.ExportSiteConfig(opCtx, &pb.ExportSiteConfigRequest{Site: "remote"})
			return err
		}, codes.InvalidArgument, "format"},
		{"unknown site", func() error {
			_, err := e.admin.ExportSiteConfig(opCtx, &pb.ExportSiteConfigRequest{Site: "nope", Format: pb.ExportFormat_EXPORT_FORMAT_LINUX})
			return err
		}, codes.NotFound, "nope"},
		{"enrollment token for the unmanaged site", func() error {
			_, err := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: "remote"})
			return err
		}, codes.FailedPrecondition, `site "remote" is unmanaged`},
		{"dynamic transport on an unmanaged site", func() error {
			s := &pb.Site{Name: "lte", Unmanaged: true, Transports: []*pb.Transport{{Name: "inet1", Address: "dynamic"}}, LanPrefixes: []string{"10.3.1.0/24"}}
			_, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: s})
			return err
		}, codes.InvalidArgument, "site.transports[0].address"},
	} {
		if err := tc.call(); status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("%s: %v, want %v with %q", tc.name, err, tc.code, tc.want)
		}
	}

	// Audit: both exports logged with the credential, the refused one too;
	// dashboard events; the key in no log line, in any encoding.
	log := logs.String()
	if n := strings.Count(log, "site configuration exported"); n != 2 || !strings.Contains(log, "credential_id="+op.GetCredential().GetId()) {
		t.Errorf("%d export log lines, credential %s in them: %v", n, op.GetCredential().GetId(), strings.Contains(log, op.GetCredential().GetId()))
	}
	if !strings.Contains(log, "site configuration export refused") {
		t.Error("the refused export of the managed site is not logged")
	}
	for _, enc := range []string{string(psk), hex.EncodeToString(psk)} {
		if strings.Contains(log, enc) {
			t.Fatal("a log line holds the pre-shared key")
		}
	}
	var events int
	for _, ev := range e.d.Events.Recent() {
		if strings.Contains(ev.What, "configuration of unmanaged site remote exported") && strings.Contains(ev.What, op.GetCredential().GetId()) {
			events++
		}
	}
	if events != 2 {
		t.Errorf("%d export events in the dashboard feed, want 2: %v", events, e.d.Events.Recent())
	}
}

// TestUnmanagedSiteHealth: an unmanaged site is shown as such (never as
// never seen or down) by GetSite, ListSites and the dashboard, with its
// tunnel's state as the managed end reports it; nothing waits for a
// report from the unmanaged end.
func TestUnmanagedSiteHealth(t *testing.T) {
	e := startWith(t, "10.255.0.0/24", func(c *daemon.Config) { c.DashboardNoAuth = true })
	hub, remote := seedSites()
	e.mustCreate(t, hub, remote)
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}}); err != nil {
		t.Fatal(err)
	}
	s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "remote"})
	if err != nil || s.Status.GetState() != pb.EdgeState_EDGE_STATE_UNSPECIFIED || !s.GetUnmanaged() ||
		len(s.Status.GetTunnels()) != 1 || s.Status.GetTunnels()[0].GetState() != pb.TunnelState_TUNNEL_STATE_UNSPECIFIED {
		t.Fatalf("remote before the hub reports: %v %v", s, err)
	}
	if !strings.Contains(s.Status.GetTunnels()[0].GetDetail(), "edge of hub is not connected") {
		t.Errorf("detail: %q", s.Status.GetTunnels()[0].GetDetail())
	}

	stream := syncStream(t, e, e.enroll(t, "hub"))
	ds, err := stream.Recv()
	if err != nil || len(ds.Tunnels) != 1 {
		t.Fatalf("hub's desired state: %v %v", ds, err)
	}
	id := ds.Tunnels[0].Id
	if err := stream.Send(probedReport(ds.Version, id, pb.TunnelState_TUNNEL_STATE_UP, 12)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "remote's tunnel up as the hub reports it", func() bool {
		s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "remote"})
		if err != nil || len(s.Status.GetTunnels()) != 1 {
			return false
		}
		ts := s.Status.GetTunnels()[0]
		return ts.GetState() == pb.TunnelState_TUNNEL_STATE_UP && ts.GetRttMs() == 12 && strings.Contains(ts.GetDetail(), "as reported by hub")
	})
	list, err := e.admin.ListSites(e.ctx, &pb.ListSitesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Sites {
		if s.Name == "remote" && (s.Status.GetState() == pb.EdgeState_EDGE_STATE_NEVER_SEEN || !s.GetUnmanaged() || len(s.Status.GetTunnels()) != 1 || s.Status.GetTunnels()[0].GetState() != pb.TunnelState_TUNNEL_STATE_UP) {
			t.Errorf("ListSites shows remote as %v", s)
		}
	}
	_, body := e.get(t, "/api/state", "")
	var st web.State
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	var state string
	for _, s := range st.Sites {
		if s.Name == "remote" {
			state = s.State
		}
	}
	if state != web.SiteUnmanaged || st.Summary.SitesUnmanaged != 1 || st.Summary.SitesNeverSeen != 0 {
		t.Errorf("dashboard: remote is %q, summary %+v", state, st.Summary)
	}
	if tn, ok := dashboardTunnel(t, e, id); !ok || tn.State != web.TunnelUp {
		t.Errorf("dashboard tunnel %s: %+v", id, tn)
	}
}

// TestExportUnmanagedHub: an unmanaged hub answers in its export and the
// managed spoke initiates (topology.Initiator: the managed end wherever one
// end is unmanaged, whatever the roles), as the spoke's desired state says;
// a tunnel to a
// spoke whose dynamic address is not reported yet makes the export
// refuse, naming the tunnel, rather than leave it out.
func TestExportUnmanagedHub(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	hub := &pb.Site{Name: "hq", Role: pb.SiteRole_SITE_ROLE_HUB, Unmanaged: true,
		Transports: []*pb.Transport{{Name: "inet1", Address: "96.3.36.10"}}, LanPrefixes: []string{"10.1.1.0/24"}}
	e.mustCreate(t, hub, site("br1", false, 2))
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}}); err != nil {
		t.Fatal(err)
	}
	resp, err := e.admin.ExportSiteConfig(e.ctx, &pb.ExportSiteConfigRequest{Site: "hq", Format: pb.ExportFormat_EXPORT_FORMAT_LINUX})
	if err != nil {
		t.Fatal(err)
	}
	if sw := resp.GetFiles()[0].GetContent(); !strings.Contains(sw, "start_action = trap\n") || strings.Contains(sw, "trap|start") || !strings.Contains(sw, "mw-br1_inet1~hq_inet1 {") {
		t.Errorf("the unmanaged hub does not answer only:\n%s", sw)
	}
	tn, err := e.admin.GetTunnel(e.ctx, &pb.GetTunnelRequest{Id: "br1.inet1~hq.inet1"})
	if err != nil || tn.GetInitiator() != "a" || tn.GetA().GetSite() != "br1" {
		t.Errorf("tunnel br1.inet1~hq.inet1: the managed spoke (a) should initiate: %v %v", tn, err)
	}
	lte := site("br2", false, 3)
	lte.Transports[0].Address = "dynamic"
	e.mustCreate(t, lte)
	_, err = e.admin.ExportSiteConfig(e.ctx, &pb.ExportSiteConfigRequest{Site: "hq", Format: pb.ExportFormat_EXPORT_FORMAT_LINUX})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "br2.inet1~hq.inet1") || !strings.Contains(err.Error(), "dynamic address") {
		t.Errorf("export with a spoke's address unknown: %v", err)
	}
}

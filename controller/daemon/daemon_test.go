package daemon_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/controller/etcdtest"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type env struct {
	d     *daemon.Daemon
	admin pb.AdminServiceClient
	ctx   context.Context
	// dataDir holds the embedded etcd (etcd/etcd.sock).
	dataDir string
}

func start(t *testing.T, pool string) *env { return startWith(t, pool, nil) }

// startWith starts a controller whose config tweak may adjust first.
func startWith(t *testing.T, pool string, tweak func(*daemon.Config)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cfg := daemon.Config{
		DataDir: t.TempDir(), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: pool, ASNPool: "4200000000-4200099999", UnsafeNoFsync: true,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	conn := dial(t, d, nil)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.AdminToken)
	return &env{d: d, admin: pb.NewAdminServiceClient(conn), ctx: actx, dataDir: cfg.DataDir}
}

// dial connects over TLS, verifying the controller against its CA,
// presenting cert when given.
func dial(t *testing.T, d *daemon.Daemon, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.CAPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(d.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func site(name string, hub bool, i int) *pb.Site {
	role := pb.SiteRole_SITE_ROLE_SPOKE
	if hub {
		role = pb.SiteRole_SITE_ROLE_HUB
	}
	return &pb.Site{Name: name, Role: role,
		Transports:  []*pb.Transport{{Name: "inet1", Address: fmt.Sprintf("198.51.100.%d", i)}},
		LanPrefixes: []string{fmt.Sprintf("10.%d.0.0/24", i)}}
}

func (e *env) mustCreate(t *testing.T, sites ...*pb.Site) {
	t.Helper()
	for _, s := range sites {
		if _, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: s}); err != nil {
			t.Fatalf("CreateSite %s: %v", s.Name, err)
		}
	}
}

func TestAdminAPIStatusCodes(t *testing.T) {
	e := start(t, "10.255.0.0/29") // room for two tunnels
	e.mustCreate(t, site("hq", false, 1), site("br1", false, 2))
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH}}); err != nil {
		t.Fatal(err)
	}
	overlap := site("br2", false, 3)
	overlap.LanPrefixes = []string{"10.1.0.128/25"}
	badCIDR := site("br2", false, 3)
	badCIDR.LanPrefixes = []string{"10.3.0.0/33"}
	badAddr := site("br2", false, 3)
	badAddr.Transports[0].Address = "198.51.100.300"
	cases := []struct {
		name  string
		call  func() error
		code  codes.Code
		field string
	}{
		{"invalid CIDR", func() error { _, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: badCIDR}); return err }, codes.InvalidArgument, "site.lan_prefixes[0]"},
		{"invalid address", func() error { _, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: badAddr}); return err }, codes.InvalidArgument, "site.transports[0].address"},
		{"missing site", func() error { _, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{}); return err }, codes.InvalidArgument, "site"},
		{"duplicate name", func() error {
			_, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: site("hq", false, 9)})
			return err
		}, codes.AlreadyExists, "site.name"},
		{"overlapping LAN", func() error { _, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: overlap}); return err }, codes.FailedPrecondition, "site.lan_prefixes[0]"},
		{"unknown site", func() error { _, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "nope"}); return err }, codes.NotFound, "nope"},
		{"unknown tunnel", func() error { _, err := e.admin.GetTunnel(e.ctx, &pb.GetTunnelRequest{Id: "x"}); return err }, codes.NotFound, "tunnel"},
		{"token for unknown site", func() error {
			_, err := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: "nope"})
			return err
		}, codes.NotFound, "site"},
		{"hub-and-spoke without hub", func() error {
			_, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}})
			return err
		}, codes.FailedPrecondition, "topology.mode"},
		{"pool too small", func() error {
			_, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: site("br3", false, 4)})
			return err
		}, codes.ResourceExhausted, "tunnel pool"},
	}
	before, _ := e.admin.ListSites(e.ctx, &pb.ListSitesRequest{})
	tunsBefore, _ := e.admin.ListTunnels(e.ctx, &pb.ListTunnelsRequest{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Fatalf("got %v, want %v naming %q", err, tc.code, tc.field)
			}
		})
	}
	after, _ := e.admin.ListSites(e.ctx, &pb.ListSitesRequest{})
	tunsAfter, _ := e.admin.ListTunnels(e.ctx, &pb.ListTunnelsRequest{})
	if len(after.Sites) != len(before.Sites) || len(tunsAfter.Tunnels) != len(tunsBefore.Tunnels) || len(tunsAfter.Tunnels) != 1 {
		t.Errorf("refused calls changed state: sites %d -> %d, tunnels %d -> %d", len(before.Sites), len(after.Sites), len(tunsBefore.Tunnels), len(tunsAfter.Tunnels))
	}
	// No token: refused.
	if _, err := pb.NewAdminServiceClient(dial(t, e.d, nil)).ListSites(context.Background(), &pb.ListSitesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("admin call without token: %v, want Unauthenticated", err)
	}
	// Health service answers without a token (grpc_health_probe).
	hr, err := healthpb.NewHealthClient(dial(t, e.d, nil)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check: %v %v", hr, err)
	}
}

func TestRESTGateway(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	base := "http://" + e.d.HTTPAddr.String()
	req, _ := http.NewRequest("POST", base+"/v1/sites", strings.NewReader(`{"name":"hq","role":"SITE_ROLE_HUB","transports":[{"name":"inet1","address":"203.0.113.1"}],"lan_prefixes":["10.1.0.0/24"]}`))
	req.Header.Set("Authorization", "Bearer "+e.d.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /v1/sites: %d %s", resp.StatusCode, body)
	}
	var got struct {
		Name string `json:"name"`
		ASN  uint32 `json:"asn"`
	}
	json.Unmarshal(body, &got)
	if got.Name != "hq" || got.ASN != 4200000000 {
		t.Errorf("created site: %s", body)
	}
	// Bad input over REST: 400 naming the field.
	req, _ = http.NewRequest("POST", base+"/v1/sites", strings.NewReader(`{"name":"x","transports":[{"name":"inet1","address":"dynamic"}],"lan_prefixes":["10.1.0.0/33"]}`))
	req.Header.Set("Authorization", "Bearer "+e.d.AdminToken)
	resp, _ = http.DefaultClient.Do(req)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "site.lan_prefixes[0]") {
		t.Errorf("bad CIDR over REST: %d %s", resp.StatusCode, body)
	}
	// Without a token: 401.
	resp, _ = http.Get(base + "/v1/sites")
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("GET /v1/sites without token: %d, want 401", resp.StatusCode)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get(base + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if path == "/metrics" && !strings.Contains(string(body), "meshwan_sites 1") {
			t.Errorf("/metrics lacks meshwan_sites 1")
		}
	}
}

// newCSR makes a key and a CSR the way an edge does.
func newCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "whatever"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func (e *env) enroll(t *testing.T, siteName string) tls.Certificate {
	t.Helper()
	tok, err := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: siteName})
	if err != nil {
		t.Fatal(err)
	}
	key, csr := newCSR(t)
	edge := pb.NewEdgeServiceClient(dial(t, e.d, nil))
	resp, err := edge.Enroll(context.Background(), &pb.EnrollRequest{Token: tok.Secret, CsrPem: csr})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if resp.Site != siteName {
		t.Fatalf("enrolled as %q, want %q", resp.Site, siteName)
	}
	block, _ := pem.Decode(resp.CertificatePem)
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
}

func TestEnrollmentTokens(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hq", true, 1))
	edge := pb.NewEdgeServiceClient(dial(t, e.d, nil))
	tok, err := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: "hq", TtlSeconds: 600})
	if err != nil || tok.Secret == "" || !strings.HasPrefix(tok.Secret, tok.Id+".") {
		t.Fatalf("CreateEnrollmentToken: %v %v", tok, err)
	}
	_, csr := newCSR(t)
	if _, err := edge.Enroll(context.Background(), &pb.EnrollRequest{Token: tok.Secret, CsrPem: csr}); err != nil {
		t.Fatalf("first Enroll: %v", err)
	}
	// Replay: refused.
	_, err = edge.Enroll(context.Background(), &pb.EnrollRequest{Token: tok.Secret, CsrPem: csr})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "already used") {
		t.Errorf("replayed token: %v, want PermissionDenied 'already used'", err)
	}
	// Revoked: refused.
	tok2, _ := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: "hq"})
	if _, err := e.admin.RevokeEnrollmentToken(e.ctx, &pb.RevokeEnrollmentTokenRequest{Id: tok2.Id}); err != nil {
		t.Fatal(err)
	}
	_, err = edge.Enroll(context.Background(), &pb.EnrollRequest{Token: tok2.Secret, CsrPem: csr})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked token: %v, want PermissionDenied 'revoked'", err)
	}
	// Wrong secret and garbage: Unauthenticated.
	for _, bad := range []string{tok2.Id + ".0000", "garbage", ""} {
		if _, err := edge.Enroll(context.Background(), &pb.EnrollRequest{Token: bad, CsrPem: csr}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("token %q: %v, want Unauthenticated", bad, err)
		}
	}
	// Bad CSR: InvalidArgument, and the token stays unused.
	tok3, _ := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: "hq"})
	if _, err := edge.Enroll(context.Background(), &pb.EnrollRequest{Token: tok3.Secret, CsrPem: []byte("nope")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad CSR: %v, want InvalidArgument", err)
	}
	list, _ := e.admin.ListEnrollmentTokens(e.ctx, &pb.ListEnrollmentTokensRequest{})
	for _, tk := range list.Tokens {
		if tk.Secret != "" {
			t.Errorf("ListEnrollmentTokens returned a secret for %s", tk.Id)
		}
		if tk.Id == tok3.Id && tk.Used {
			t.Errorf("a refused CSR consumed token %s", tk.Id)
		}
	}
}

func syncStream(t *testing.T, e *env, cert tls.Certificate) pb.EdgeService_SyncClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := pb.NewEdgeServiceClient(dial(t, e.d, &cert)).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A server that refuses the caller may end the stream before the
	// hello is sent; Send then returns io.EOF and the refusal's status is
	// what the caller's Recv returns (grpc-go's documented contract).
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{AgentVersion: "test"}}}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return stream
}

func TestSyncDesiredStateAndStatus(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hub", true, 1), site("br1", false, 2), site("br2", false, 3))
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}}); err != nil {
		t.Fatal(err)
	}
	br1 := e.enroll(t, "br1")
	stream := syncStream(t, e, br1)
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("first desired state: %v", err)
	}
	if first.Site != "br1" || len(first.Tunnels) != 1 || first.Tunnels[0].RemoteSite != "hub" || len(first.Tunnels[0].Psk) != 32 {
		t.Fatalf("br1's desired state: %v", first)
	}
	if first.Mtu != 1400 || first.Ipsec.GetIkeProposal() != "aes256-sha256-modp2048" || first.Ipsec.GetEspProposal() != "aes256gcm16-modp2048" {
		t.Errorf("defaults not applied: mtu %d ipsec %v", first.Mtu, first.Ipsec)
	}
	// A change that affects br1 (topology to full mesh) arrives as a new
	// version within a second.
	changed := time.Now()
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH}}); err != nil {
		t.Fatal(err)
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(changed); took > time.Second {
		t.Errorf("new version arrived after %v, want < 1s", took)
	}
	if next.Version <= first.Version || len(next.Tunnels) != 2 {
		t.Errorf("after mesh: version %d -> %d, %d tunnels (want 2)", first.Version, next.Version, len(next.Tunnels))
	}
	// Status up, with the reported tunnel.
	stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Report{Report: &pb.EdgeReport{AppliedVersion: next.Version,
		Tunnels: []*pb.TunnelStatus{{TunnelId: next.Tunnels[0].Id, State: pb.TunnelState_TUNNEL_STATE_UP, LinkUp: true}}}}})
	waitFor(t, "br1 reported up with its tunnel", func() bool {
		s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "br1"})
		return err == nil && s.Status.GetState() == pb.EdgeState_EDGE_STATE_UP && s.Status.GetAppliedVersion() == next.Version && len(s.Status.GetTunnels()) == 1
	})
	if s, _ := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "br2"}); s.Status.GetState() != pb.EdgeState_EDGE_STATE_NEVER_SEEN {
		t.Errorf("br2 state %v, want NEVER_SEEN", s.Status.GetState())
	}
	// Disconnect: down.
	stream.CloseSend()
	waitFor(t, "br1 down after disconnect", func() bool {
		s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "br1"})
		return err == nil && s.Status.GetState() == pb.EdgeState_EDGE_STATE_DOWN
	})
}

// TestSyncServesOnlyOwnSite: br1's certificate yields br1's state and no
// PSK of tunnels it is not part of; a superseded certificate, a
// certificate from another CA and no certificate are all refused.
func TestSyncServesOnlyOwnSite(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hub", true, 1), site("br1", false, 2), site("br2", false, 3))
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}}); err != nil {
		t.Fatal(err)
	}
	old := e.enroll(t, "br1")
	cur := e.enroll(t, "br1") // re-enrollment supersedes old
	hubCert := e.enroll(t, "hub")
	hub, err := syncStream(t, e, hubCert).Recv()
	if err != nil {
		t.Fatal(err)
	}
	br1, err := syncStream(t, e, cur).Recv()
	if err != nil {
		t.Fatal(err)
	}
	if br1.Site != "br1" {
		t.Fatalf("certificate of br1 served site %q", br1.Site)
	}
	mine := map[string]bool{}
	for _, tn := range br1.Tunnels {
		mine[string(tn.Psk)] = true
	}
	for _, tn := range hub.Tunnels {
		if tn.RemoteSite == "br2" && mine[string(tn.Psk)] {
			t.Errorf("br1 received the PSK of tunnel %s", tn.Id)
		}
	}
	_, err = syncStream(t, e, old).Recv()
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("superseded certificate: %v, want Unauthenticated", err)
	}
	// A self-made certificate claiming br2 is rejected by TLS or the server.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "br2", OrganizationalUnit: []string{"meshwan-edge"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	forged := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	stream, err := pb.NewEdgeServiceClient(dial(t, e.d, &forged)).Sync(context.Background())
	if err == nil {
		stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{}}})
		_, err = stream.Recv()
	}
	if err == nil {
		t.Error("a certificate from another CA was accepted")
	}
	_, err = syncStream(t, e, tls.Certificate{}).Recv()
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("no certificate: %v, want Unauthenticated", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartKeepsEverything stops the controller and starts it again on
// the same data directory: sites, ASNs, tunnels, /30s, PSKs, the CA and
// the admin token are all the same, and an edge certificate issued before
// still works.
func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := daemon.Config{DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true}
	ctx := context.Background()
	d1, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{d: d1, admin: pb.NewAdminServiceClient(dial(t, d1, nil)), ctx: metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d1.AdminToken)}
	e.mustCreate(t, site("hub", true, 1), site("br1", false, 2), site("br2", false, 3))
	if _, err := e.admin.SetTopology(e.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH}}); err != nil {
		t.Fatal(err)
	}
	cert := e.enroll(t, "br1")
	before, err := syncStream(t, e, cert).Recv()
	if err != nil {
		t.Fatal(err)
	}
	sitesBefore, _ := e.admin.ListSites(e.ctx, &pb.ListSitesRequest{})
	d1.Close()

	d2, err := daemon.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer d2.Close()
	if d2.AdminToken != d1.AdminToken || string(d2.CAPEM) != string(d1.CAPEM) {
		t.Fatal("admin token or CA changed across restart")
	}
	e2 := &env{d: d2, admin: pb.NewAdminServiceClient(dial(t, d2, nil)), ctx: e.ctx}
	sitesAfter, err := e2.admin.ListSites(e2.ctx, &pb.ListSitesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sitesAfter.Sites {
		if s.Name != sitesBefore.Sites[i].Name || s.Asn != sitesBefore.Sites[i].Asn {
			t.Errorf("site %d: %s/%d before, %s/%d after", i, sitesBefore.Sites[i].Name, sitesBefore.Sites[i].Asn, s.Name, s.Asn)
		}
	}
	after, err := syncStream(t, e2, cert).Recv()
	if err != nil {
		t.Fatalf("pre-restart certificate after restart: %v", err)
	}
	if len(after.Tunnels) != len(before.Tunnels) {
		t.Fatalf("%d tunnels before, %d after", len(before.Tunnels), len(after.Tunnels))
	}
	for i := range after.Tunnels {
		b, a := before.Tunnels[i], after.Tunnels[i]
		if a.Id != b.Id || a.LocalInner != b.LocalInner || string(a.Psk) != string(b.Psk) {
			t.Errorf("tunnel %s changed across restart: %s -> %s, same PSK %v", b.Id, b.LocalInner, a.LocalInner, string(a.Psk) == string(b.Psk))
		}
	}
}

// TestReplicasShareExternalEtcd runs two controllers against one external
// etcd (--etcd-endpoints) with the same master key and admin token, as an
// HA pair would: what one writes the other serves, they share the CA, an
// edge enrolled through one syncs through the other, and concurrent site
// creation through both never hands out a /30 twice.
func TestReplicasShareExternalEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	shared := t.TempDir()
	key, tok := filepath.Join(shared, "master.key"), filepath.Join(shared, "admin.token")
	var envs []*env
	for range 2 {
		d, err := daemon.Start(context.Background(), daemon.Config{DataDir: t.TempDir(), EtcdEndpoints: []string{etcd.Endpoint},
			GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999",
			MasterKeyFile: key, AdminTokenFile: tok})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		envs = append(envs, &env{d: d, admin: pb.NewAdminServiceClient(dial(t, d, nil)),
			ctx: metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+d.AdminToken)})
	}
	a, b := envs[0], envs[1]
	if string(a.d.CAPEM) != string(b.d.CAPEM) {
		t.Fatal("replicas created different CAs")
	}
	if _, err := a.admin.SetTopology(a.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH}}); err != nil {
		t.Fatal(err)
	}
	// Create 20 sites, alternating replicas, two at a time.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		e := envs[i%2]
		wg.Go(func() {
			_, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: site(fmt.Sprintf("s%02d", i), false, i+1)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("CreateSite: %v", err)
		}
	}
	waitFor(t, "190 tunnels visible on both replicas", func() bool {
		for _, e := range envs {
			ts, err := e.admin.ListTunnels(e.ctx, &pb.ListTunnelsRequest{})
			if err != nil || len(ts.Tunnels) != 190 {
				return false
			}
		}
		return true
	})
	ts, _ := b.admin.ListTunnels(b.ctx, &pb.ListTunnelsRequest{})
	seen := map[string]string{}
	for _, tn := range ts.Tunnels {
		if other, dup := seen[tn.Prefix]; dup {
			t.Fatalf("tunnels %s and %s share %s", tn.Id, other, tn.Prefix)
		}
		seen[tn.Prefix] = tn.Id
	}
	// Enrolled through a, synced through b.
	cert := a.enroll(t, "s03")
	st, err := syncStream(t, b, cert).Recv()
	if err != nil || st.Site != "s03" || len(st.Tunnels) != 19 {
		t.Fatalf("sync through the other replica: %v, %v", st, err)
	}
}

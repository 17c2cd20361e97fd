package browsertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// controller is a live controller on loopback with an admin client.
type controller struct {
	d     *daemon.Daemon
	admin pb.AdminServiceClient
	ctx   context.Context // carries the admin token
	base  string          // http://127.0.0.1:PORT
}

func startController(t *testing.T) *controller {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	d, err := daemon.Start(ctx, daemon.Config{
		DataDir: t.TempDir(), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.AdminToken)
	return &controller{d: d, admin: pb.NewAdminServiceClient(dial(t, d, nil)), ctx: actx, base: "http://" + d.HTTPAddr.String()}
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

// siteSpec declares a site: transports as name=address pairs.
type siteSpec struct {
	name       string
	hub        bool
	transports [][2]string
	lan        []string
}

func (c *controller) seed(t *testing.T, mode pb.TopologyMode, sites ...siteSpec) {
	t.Helper()
	for _, s := range sites {
		site := &pb.Site{Name: s.name, Role: pb.SiteRole_SITE_ROLE_SPOKE, LanPrefixes: s.lan}
		if s.hub {
			site.Role = pb.SiteRole_SITE_ROLE_HUB
		}
		for _, tr := range s.transports {
			site.Transports = append(site.Transports, &pb.Transport{Name: tr[0], Address: tr[1]})
		}
		if _, err := c.admin.CreateSite(c.ctx, &pb.CreateSiteRequest{Site: site}); err != nil {
			t.Fatalf("CreateSite %s: %v", s.name, err)
		}
	}
	if _, err := c.admin.SetTopology(c.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: mode}}); err != nil {
		t.Fatal(err)
	}
}

func (c *controller) tunnels(t *testing.T) []*pb.Tunnel {
	t.Helper()
	resp, err := c.admin.ListTunnels(c.ctx, &pb.ListTunnelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Tunnels
}

// enrollWith enrolls an edge key with a token secret, as meshwan-edge does.
func enrollWith(t *testing.T, d *daemon.Daemon, secret string) (string, tls.Certificate, error) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "edge"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	resp, err := pb.NewEdgeServiceClient(dial(t, d, nil)).Enroll(context.Background(), &pb.EnrollRequest{Token: secret, CsrPem: csr})
	if err != nil {
		return "", tls.Certificate{}, err
	}
	block, _ := pem.Decode(resp.CertificatePem)
	return resp.Site, tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}, nil
}

// edge is an enrolled edge holding a Sync stream. Like meshwan-edge it
// reports its tunnels' status again every few seconds, which keeps its
// status lease alive however long the test takes.
type edge struct {
	site   string
	stream pb.EdgeService_SyncClient
	mu     sync.Mutex
	report *pb.EdgeReport
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// connectEdge enrolls site and opens its Sync stream; it reports no
// tunnels until report is called.
func (c *controller) connectEdge(t *testing.T, site string) *edge {
	t.Helper()
	tok, err := c.admin.CreateEnrollmentToken(c.ctx, &pb.CreateEnrollmentTokenRequest{Site: site})
	if err != nil {
		t.Fatal(err)
	}
	_, cert, err := enrollWith(t, c.d, tok.Secret)
	if err != nil {
		t.Fatalf("enroll %s: %v", site, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewEdgeServiceClient(dial(t, c.d, &cert)).Sync(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e := &edge{site: site, stream: stream, cancel: cancel, report: &pb.EdgeReport{}}
	t.Cleanup(e.stop)
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{AgentVersion: "v0.1.0-test"}}}); err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("%s: first desired state: %v", site, err)
	}
	e.report.AppliedVersion = first.Version
	e.wg.Go(func() { // drain later desired states
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	})
	e.wg.Go(func() { // re-report, as a real edge does
		tick := time.NewTicker(4 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				e.send()
			}
		}
	})
	return e
}

type tunnelReport struct {
	state      pb.TunnelState
	ike, child string
	detail     string
}

var (
	reportUp       = tunnelReport{state: pb.TunnelState_TUNNEL_STATE_UP, ike: "ESTABLISHED", child: "INSTALLED"}
	reportDegraded = tunnelReport{state: pb.TunnelState_TUNNEL_STATE_DEGRADED, ike: "ESTABLISHED", child: "INSTALLED", detail: "BFD flapping"}
	reportDown     = tunnelReport{state: pb.TunnelState_TUNNEL_STATE_DOWN, ike: "CONNECTING", detail: "IKE SA not established: peer does not answer"}
)

// setReport replaces the edge's report (tunnel id -> status) and sends it.
func (e *edge) setReport(t *testing.T, tunnels map[string]tunnelReport) {
	t.Helper()
	e.mu.Lock()
	rep := &pb.EdgeReport{AppliedVersion: e.report.AppliedVersion}
	for id, r := range tunnels {
		rep.Tunnels = append(rep.Tunnels, &pb.TunnelStatus{TunnelId: id, State: r.state, LinkUp: r.state != pb.TunnelState_TUNNEL_STATE_DOWN,
			IkeState: r.ike, ChildState: r.child, Detail: r.detail, BytesIn: 123456789, BytesOut: 98765432})
	}
	e.report = rep
	e.mu.Unlock()
	if err := e.send(); err != nil {
		t.Fatalf("%s: send report: %v", e.site, err)
	}
}

func (e *edge) send() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Report{Report: e.report}})
}

func (e *edge) stop() {
	e.cancel()
	e.wg.Wait()
}

package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/edge/agent"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/identity"
	"github.com/meshwan/meshwan/edge/syncer"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"crypto/tls"
	"crypto/x509"
)

// recorder is a stand-in link backend that remembers what it was told:
// the control path (enroll, sync, cache, reconcile) is under test here;
// the real kernel data plane is proven in the VM lab.
type recorder struct {
	mu      sync.Mutex
	applied []dataplane.Desired
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 100)} }

func (r *recorder) Apply(_ context.Context, d dataplane.Desired) error {
	r.mu.Lock()
	r.applied = append(r.applied, d)
	r.mu.Unlock()
	r.changed <- struct{}{}
	return nil
}

func (r *recorder) ApplyRoutes(context.Context, []kernel.Route) error { return nil }
func (r *recorder) Routes(context.Context) ([]kernel.Route, error)    { return nil, nil }
func (r *recorder) Retiring(dataplane.Desired) ([]link.Retiring, map[string]bool, error) {
	return nil, nil, nil
}

func (r *recorder) Status(context.Context) ([]link.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []link.Status
	if n := len(r.applied); n > 0 {
		for _, t := range r.applied[n-1].Tunnels {
			out = append(out, link.Status{TunnelID: t.ID, Link: t.LinkName, Present: true, Up: true})
		}
	}
	return out, nil
}

// nop stands in for the firewall and for charon.
type nop struct{}

func (nop) Apply(context.Context, dataplane.Desired) error     { return nil }
func (nop) TidyStatus(context.Context) ([]ipsec.Status, error) { return nil, nil }
func (nop) Cleanup(context.Context) error                      { return nil }

func (r *recorder) Cleanup(context.Context) error { return nil }

func (r *recorder) last() dataplane.Desired {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied[len(r.applied)-1]
}

// waitTunnels waits until the last applied state has the given tunnel ids.
func (r *recorder) waitTunnels(t *testing.T, want ...string) dataplane.Desired {
	t.Helper()
	slices.Sort(want)
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		var got []string
		if n := len(r.applied); n > 0 {
			for _, tn := range r.applied[n-1].Tunnels {
				got = append(got, tn.ID)
			}
		}
		r.mu.Unlock()
		slices.Sort(got)
		if slices.Equal(got, want) {
			return r.last()
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("applied tunnels %v, want %v", got, want)
		}
	}
}

type lab struct {
	d     *daemon.Daemon
	admin pb.AdminServiceClient
	ctx   context.Context
}

func startController(t *testing.T, dir string) *lab {
	t.Helper()
	d, err := daemon.Start(context.Background(), daemon.Config{DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.CAPEM)
	conn, err := grpc.NewClient(d.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &lab{d: d, admin: pb.NewAdminServiceClient(conn), ctx: metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+d.AdminToken)}
}

func (l *lab) site(t *testing.T, name string, hub bool, i int) {
	role := pb.SiteRole_SITE_ROLE_SPOKE
	if hub {
		role = pb.SiteRole_SITE_ROLE_HUB
	}
	_, err := l.admin.CreateSite(l.ctx, &pb.CreateSiteRequest{Site: &pb.Site{Name: name, Role: role,
		Transports: []*pb.Transport{{Name: "inet1", Address: fmt.Sprintf("198.51.100.%d", i)}}, LanPrefixes: []string{fmt.Sprintf("10.%d.0.0/24", i)}}})
	if err != nil {
		t.Fatal(err)
	}
}

func (l *lab) topology(t *testing.T, m pb.TopologyMode) {
	if _, err := l.admin.SetTopology(l.ctx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: m}}); err != nil {
		t.Fatal(err)
	}
}

// runEdge runs syncer + agent like meshwan-edge does, until the returned
// stop is called.
func runEdge(t *testing.T, controller string, id *identity.Identity, stateDir string, rec *recorder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	a := agent.New(agent.Config{StateDir: stateDir, Links: rec, Firewall: nop{}, IPsec: nop{}, StatusEvery: 200 * time.Millisecond, Logger: log})
	s, err := syncer.New(syncer.Config{Controller: controller, Identity: id, AgentVersion: "test", Applied: a.Applied, Logger: log,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	wg.Go(func() { a.Run(ctx, s.Updates(), s.Report) })
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

// TestEdgeControlPath: an edge enrolls with a token and pinned CA hash,
// receives its tunnels, follows a topology change, reports status, keeps
// its state while the controller is down, and comes back from its cache
// when restarted without a controller.
func TestEdgeControlPath(t *testing.T) {
	dir := t.TempDir()
	l := startController(t, filepath.Join(dir, "ctl"))
	l.site(t, "hub", true, 1)
	l.site(t, "br1", false, 2)
	l.site(t, "br2", false, 3)
	l.topology(t, pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE)

	tok, err := l.admin.CreateEnrollmentToken(l.ctx, &pb.CreateEnrollmentTokenRequest{Site: "br1"})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.d.GRPCAddr.String()
	stateDir := filepath.Join(dir, "br1")
	ctx := context.Background()
	// A wrong CA pin is refused before the token is spent.
	if _, err := identity.Enroll(ctx, stateDir, identity.EnrollOptions{Controller: addr, Token: tok.Secret, CAHash: strings.Repeat("0", 64)}); err == nil {
		t.Fatal("enrollment succeeded with a wrong CA pin")
	}
	id, err := identity.Enroll(ctx, stateDir, identity.EnrollOptions{Controller: addr, Token: tok.Secret, CAHash: tok.CaSha256})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if id.Site != "br1" {
		t.Fatalf("enrolled as %q", id.Site)
	}
	if _, err := identity.Enroll(ctx, filepath.Join(dir, "again"), identity.EnrollOptions{Controller: addr, Token: tok.Secret, CAHash: tok.CaSha256}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("re-using the token: %v, want 'already used'", err)
	}
	if loaded, err := identity.Load(stateDir); err != nil || loaded.Site != "br1" {
		t.Fatalf("Load after enroll: %v", err)
	}

	rec := newRecorder()
	stop := runEdge(t, addr, id, stateDir, rec)
	d := rec.waitTunnels(t, "br1.inet1~hub.inet1")
	tun := d.Tunnels[0]
	if tun.LocalUnderlay != netip.MustParseAddr("198.51.100.2") || tun.RemoteUnderlay != netip.MustParseAddr("198.51.100.1") ||
		tun.LocalInner != netip.MustParsePrefix("10.255.0.1/30") || tun.RemoteInner != netip.MustParseAddr("10.255.0.2") || !tun.Passive ||
		len(tun.PSK) != 32 || tun.MTU != 1400 || tun.IPsec.ESPProposal != "aes256gcm16-modp2048" || !strings.HasPrefix(tun.LinkName, "mw-") {
		t.Errorf("tunnel as applied: %+v", tun)
	}
	l.topology(t, pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH)
	rec.waitTunnels(t, "br1.inet1~br2.inet1", "br1.inet1~hub.inet1")

	// Status reaches the controller.
	waitFor(t, "br1 up with 2 tunnels", func() bool {
		s, err := l.admin.GetSite(l.ctx, &pb.GetSiteRequest{Name: "br1"})
		return err == nil && s.Status.GetState() == pb.EdgeState_EDGE_STATE_UP && len(s.Status.GetTunnels()) == 2
	})

	// Controller gone: the edge keeps its state (nothing is torn down).
	l.d.Close()
	applies := len(rec.applied)
	stop()
	if got := rec.last(); len(got.Tunnels) != 2 {
		t.Fatalf("after the controller left, last applied state has %d tunnels", len(got.Tunnels))
	}
	// Restart the edge with no controller: it applies the cached state.
	rec2 := newRecorder()
	runEdge(t, addr, id, stateDir, rec2)
	rec2.waitTunnels(t, "br1.inet1~br2.inet1", "br1.inet1~hub.inet1")
	if applies == 0 {
		t.Fatal("nothing was applied before the restart")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

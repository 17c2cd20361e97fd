package syncer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/identity"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// These tests drive a real Syncer against a small EdgeService on a
// loopback port with real mutual TLS, configured like the controller's
// (TLS 1.3, client certificates verified when given): what the syncer does
// depends on what the transport and the server answer, so both are real.

// testCA issues the controller's and the edges' certificates.
type testCA struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	pem   []byte
	pool  *x509.CertPool
	index atomic.Int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
	ca.index.Store(1)
	return ca
}

func (ca *testCA) issue(t *testing.T, cn string, notBefore, notAfter time.Time, usage x509.ExtKeyUsage, ips ...net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.index.Add(1)), Subject: pkix.Name{CommonName: cn}, NotBefore: notBefore, NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// edgeIdentity returns an identity for site valid from notBefore to notAfter.
func (ca *testCA) edgeIdentity(t *testing.T, site string, notBefore, notAfter time.Time) *identity.Identity {
	return &identity.Identity{Site: site, Cert: ca.issue(t, site, notBefore, notAfter, x509.ExtKeyUsageClientAuth), CA: ca.pool, CAPEM: ca.pem}
}

func (ca *testCA) validIdentity(t *testing.T) *identity.Identity {
	return ca.edgeIdentity(t, "hq", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

// syncCall is one Sync stream as the test server sees it. The test ends it
// by sending the RPC's result on end.
type syncCall struct {
	hello   *pb.Hello
	serial  *big.Int // of the client certificate
	stream  pb.EdgeService_SyncServer
	reports chan *pb.EdgeReport
	end     chan error
}

type edgeServer struct {
	pb.UnimplementedEdgeServiceServer
	calls chan *syncCall
}

func (s *edgeServer) Sync(stream pb.EdgeService_SyncServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	c := &syncCall{hello: first.GetHello(), stream: stream, reports: make(chan *pb.EdgeReport, 64), end: make(chan error, 1)}
	if p, ok := peer.FromContext(stream.Context()); ok {
		if ti, ok := p.AuthInfo.(grpccreds.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			c.serial = ti.State.PeerCertificates[0].SerialNumber
		}
	}
	go func() { // owned by this RPC: ends when the stream does
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if r := m.GetReport(); r != nil {
				select {
				case c.reports <- r:
				default: // a test that stopped reading does not block the RPC
				}
			}
		}
	}()
	select {
	case s.calls <- c:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	select {
	case err := <-c.end:
		return err
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

// startServer serves EdgeService on 127.0.0.1 with a certificate from ca
// and returns its address.
func startServer(t *testing.T, ca *testCA) (string, *edgeServer) {
	t.Helper()
	srvCert := ca.issue(t, "controller", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.pool, MinVersion: tls.VersionTLS13}
	gs := grpc.NewServer(grpc.Creds(grpccreds.NewTLS(tlsCfg)))
	es := &edgeServer{calls: make(chan *syncCall)}
	pb.RegisterEdgeServiceServer(gs, es)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln) // owned by the test: Stop at cleanup ends it
	t.Cleanup(gs.Stop)
	return ln.Addr().String(), es
}

// running is a Syncer whose Run goroutine the test owns.
type running struct {
	s      *Syncer
	cancel context.CancelFunc
	done   chan error
}

func run(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 20 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 100 * time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

const wait = 20 * time.Second

func nextCall(t *testing.T, es *edgeServer) *syncCall {
	t.Helper()
	select {
	case c := <-es.calls:
		return c
	case <-time.After(wait):
		t.Fatal("no Sync stream reached the server")
		return nil
	}
}

func nextReport(t *testing.T, c *syncCall) *pb.EdgeReport {
	t.Helper()
	select {
	case r := <-c.reports:
		return r
	case <-time.After(wait):
		t.Fatal("no report received")
		return nil
	}
}

func minimalState(version int64, hash string) *pb.DesiredState {
	return &pb.DesiredState{Version: version, Site: "hq", Asn: 65001, StateHash: []byte(hash)}
}

// TestUnauthenticatedIsPermanent: when the controller ends the stream with
// Unauthenticated (revoked, superseded or deleted identity) or
// PermissionDenied, Run returns ErrPermanent and does not reconnect.
func TestUnauthenticatedIsPermanent(t *testing.T) {
	for _, code := range []codes.Code{codes.Unauthenticated, codes.PermissionDenied} {
		t.Run(code.String(), func(t *testing.T) {
			ca := newTestCA(t)
			addr, es := startServer(t, ca)
			r := run(t, Config{Controller: addr, Identity: ca.validIdentity(t)})
			c := nextCall(t, es)
			c.end <- status.Error(code, "identity revoked")
			select {
			case err := <-r.done:
				r.done <- err // for the cleanup
				if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "identity revoked") {
					t.Fatalf("Run = %v, want ErrPermanent with the controller's reason", err)
				}
			case <-time.After(wait):
				t.Fatal("Run did not return after a permanent refusal")
			}
			select {
			case c := <-es.calls:
				t.Errorf("reconnected after %v (hello %v)", code, c.hello)
			default:
			}
		})
	}
}

// TestUnavailableReconnects: a stream ended with Unavailable (controller
// restarting, leadership moving) is retried; the new stream's Hello
// carries the version applied and the hash of the state held, so the
// controller can skip resending it, and desired states flow again.
func TestUnavailableReconnects(t *testing.T) {
	ca := newTestCA(t)
	addr, es := startServer(t, ca)
	var applied atomic.Int64
	events := make(chan string, 16)
	r := run(t, Config{Controller: addr, Identity: ca.validIdentity(t), AgentVersion: "v-test", Applied: applied.Load,
		OnStream: func(up bool, err error) {
			ev := "up"
			if !up {
				ev = "down " + status.Code(err).String()
			}
			select {
			case events <- ev:
			default:
			}
		}})

	c := nextCall(t, es)
	if c.hello.GetAgentVersion() != "v-test" || len(c.hello.GetStateHash()) != 0 || !c.hello.GetDeltas() {
		t.Errorf("first hello = %v, want agent v-test, no state hash, deltas", c.hello)
	}
	if err := c.stream.Send(minimalState(7, "h7")); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-r.s.Updates():
		if st.Version != 7 || string(st.Hash) != "h7" {
			t.Fatalf("update = version %d hash %q", st.Version, st.Hash)
		}
	case <-time.After(wait):
		t.Fatal("no update")
	}
	applied.Store(7)
	c.end <- status.Error(codes.Unavailable, "controller shutting down")

	c = nextCall(t, es)
	if c.hello.GetAppliedVersion() != 7 || string(c.hello.GetStateHash()) != "h7" {
		t.Errorf("hello after reconnect = %v, want applied 7 and state hash h7", c.hello)
	}
	if err := c.stream.Send(minimalState(8, "h8")); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-r.s.Updates():
		if st.Version != 8 {
			t.Fatalf("update after reconnect = version %d, want 8", st.Version)
		}
	case <-time.After(wait):
		t.Fatal("no update after reconnect")
	}
	select {
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned %v after Unavailable", err)
	default:
	}
	for _, want := range []string{"up", "down Unavailable", "up"} {
		select {
		case got := <-events:
			if got != want {
				t.Errorf("stream event %q, want %q", got, want)
			}
		case <-time.After(wait):
			t.Fatalf("no stream event %q", want)
		}
	}
}

// TestDeltaOnUnknownBaseReconnectsWithoutHash: a delta whose base is not
// the state held cannot be applied; the syncer ends the stream and
// reconnects claiming no state, so the controller sends a full one.
func TestDeltaOnUnknownBaseReconnectsWithoutHash(t *testing.T) {
	ca := newTestCA(t)
	addr, es := startServer(t, ca)
	r := run(t, Config{Controller: addr, Identity: ca.validIdentity(t),
		Initial: &State{Version: 3, Site: "hq", Hash: []byte("h3")}})
	c := nextCall(t, es)
	if string(c.hello.GetStateHash()) != "h3" {
		t.Fatalf("hello state hash = %q, want the initial state's h3", c.hello.GetStateHash())
	}
	delta := minimalState(5, "h5")
	delta.BaseHash = []byte("h4")
	if err := c.stream.Send(delta); err != nil {
		t.Fatal(err)
	}
	c2 := nextCall(t, es)
	if len(c2.hello.GetStateHash()) != 0 {
		t.Errorf("hello after a delta on another base claims state %q, want none", c2.hello.GetStateHash())
	}
	select {
	case st := <-r.s.Updates():
		t.Errorf("a delta on an unknown base was delivered: version %d", st.Version)
	default:
	}
}

// TestExpiredCertificateTriggersRenewal: an edge whose certificate has
// expired is refused by the controller's TLS; that is not a permanent
// refusal: the syncer calls Renew at once (RenewAt is past) and reconnects
// with whatever identity it returns. (The real controller's TLS refuses
// identity.Renew over an expired certificate too, so in production this
// renewal fails and the edge keeps retrying: see
// TestExpiredCertificateWithoutRenewalRetries.)
func TestExpiredCertificateTriggersRenewal(t *testing.T) {
	ca := newTestCA(t)
	addr, es := startServer(t, ca)
	expired := ca.edgeIdentity(t, "hq", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute))
	fresh := ca.validIdentity(t)
	renewed := make(chan *identity.Identity, 1)
	r := run(t, Config{Controller: addr, Identity: expired,
		Renew: func(ctx context.Context, cur *identity.Identity) (*identity.Identity, error) {
			select {
			case renewed <- cur:
			default:
			}
			return fresh, nil
		}})
	select {
	case cur := <-renewed:
		if cur != expired {
			t.Error("Renew was not handed the expired identity")
		}
	case <-time.After(wait):
		t.Fatal("no renewal of an expired certificate")
	}
	c := nextCall(t, es)
	if c.serial == nil || c.serial.Cmp(fresh.Cert.Leaf.SerialNumber) != 0 {
		t.Errorf("stream opened with certificate serial %v, want the renewed %v", c.serial, fresh.Cert.Leaf.SerialNumber)
	}
	if r.s.Identity() != fresh {
		t.Error("Identity() is not the renewed identity")
	}
}

// TestExpiredCertificateWithoutRenewalRetries: without a way to renew, an
// expired certificate never opens a stream; the syncer keeps retrying
// (the TLS refusal reaches it as Unavailable, not Unauthenticated, so it is
// not treated as permanent) until its context ends, and never panics or
// spins without backoff.
func TestExpiredCertificateWithoutRenewalRetries(t *testing.T) {
	ca := newTestCA(t)
	addr, es := startServer(t, ca)
	var mu sync.Mutex
	var errs []error
	downs := make(chan struct{}, 100)
	r := run(t, Config{Controller: addr, Identity: ca.edgeIdentity(t, "hq", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute)),
		OnStream: func(up bool, err error) {
			if up {
				return
			}
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			select {
			case downs <- struct{}{}:
			default:
			}
		}})
	for range 3 {
		select {
		case <-downs:
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run returned %v; want it to keep retrying", err)
		case <-time.After(wait):
			t.Fatal("fewer than 3 failed attempts")
		}
	}
	select {
	case c := <-es.calls:
		t.Fatalf("a stream with an expired certificate reached the server (serial %v)", c.serial)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	for _, err := range errs {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("attempt failed with %v, want Unavailable", err)
		}
	}
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v after cancel, want context.Canceled", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
}

// TestReportsCoalesce: reports queued while no stream is up replace each
// other, so the controller gets only the newest; a heartbeat re-sends the
// last report while nothing changes.
func TestReportsCoalesce(t *testing.T) {
	ca := newTestCA(t)
	addr, es := startServer(t, ca)
	s, err := New(Config{Controller: addr, Identity: ca.validIdentity(t), Heartbeat: 200 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v <= 3; v++ {
		s.Report(Report{AppliedVersion: v, Tunnels: []dataplane.TunnelStatus{{ID: "t1", State: dataplane.TunnelUp}}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c := nextCall(t, es)
	first := nextReport(t, c)
	if first.GetAppliedVersion() != 3 || len(first.GetTunnels()) != 1 || first.GetTunnels()[0].GetState() != pb.TunnelState_TUNNEL_STATE_UP {
		t.Fatalf("first report = %v, want only the newest (applied 3, t1 up)", first)
	}
	// Nothing new: the heartbeat repeats the last report (the controller's
	// status lease needs it), never an older one.
	for range 2 {
		if r := nextReport(t, c); r.GetAppliedVersion() != 3 {
			t.Fatalf("heartbeat report = applied %d, want 3", r.GetAppliedVersion())
		}
	}
	s.Report(Report{AppliedVersion: 4})
	for {
		r := nextReport(t, c)
		if r.GetAppliedVersion() == 4 {
			break
		}
		if r.GetAppliedVersion() != 3 {
			t.Fatalf("report = applied %d, want 3 (heartbeat) until 4", r.GetAppliedVersion())
		}
	}
}

// TestHeartbeatWithoutReport: before the agent has reported anything the
// heartbeat still reports the applied version, so the controller sees the
// edge alive.
func TestHeartbeatWithoutReport(t *testing.T) {
	ca := newTestCA(t)
	addr, es := startServer(t, ca)
	run(t, Config{Controller: addr, Identity: ca.validIdentity(t), Heartbeat: 100 * time.Millisecond, Applied: func() int64 { return 42 }})
	c := nextCall(t, es)
	if r := nextReport(t, c); r.GetAppliedVersion() != 42 || len(r.GetTunnels()) != 0 {
		t.Errorf("heartbeat = %v, want applied 42 and no tunnels", r)
	}
}

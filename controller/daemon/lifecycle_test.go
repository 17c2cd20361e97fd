package daemon_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/edge/identity"
	"github.com/meshwan/meshwan/edge/syncer"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamEnds waits at most 1 s for the stream to end and returns its status.
func streamEnds(t *testing.T, s pb.EdgeService_SyncClient, what string) *status.Status {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		return status.Convert(err)
	case <-time.After(time.Second):
		t.Fatalf("%s: the old stream is still open after 1s", what)
		return nil
	}
}

// TestSyncStreamClosedOnReenrollAndRevoke keeps a Sync stream open while
// the site is re-enrolled (the stream ends: superseded), then keeps the new
// one open while the identity is revoked (ends: revoked).
func TestSyncStreamClosedOnReenrollAndRevoke(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hq", true, 1))
	first := e.enroll(t, "hq")
	s1 := syncStream(t, e, first)
	if _, err := s1.Recv(); err != nil {
		t.Fatal(err)
	}
	second := e.enroll(t, "hq")
	if st := streamEnds(t, s1, "re-enrollment"); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "superseded") {
		t.Errorf("stream after re-enrollment ended with %v, want Unauthenticated 'superseded'", st)
	}
	s2 := syncStream(t, e, second)
	if _, err := s2.Recv(); err != nil {
		t.Fatal(err)
	}
	id, err := e.admin.RevokeSiteIdentity(e.ctx, &pb.RevokeSiteIdentityRequest{Site: "hq"})
	if err != nil || !id.Revoked {
		t.Fatalf("RevokeSiteIdentity: %v %v", id, err)
	}
	if st := streamEnds(t, s2, "revocation"); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "revoked") {
		t.Errorf("stream after revocation ended with %v, want PermissionDenied 'revoked'", st)
	}
	// A new stream with the revoked certificate is refused, as is renewal.
	_, csr := newCSR(t)
	if _, err := pb.NewEdgeServiceClient(dial(t, e.d, &second)).Renew(context.Background(), &pb.RenewRequest{CsrPem: csr}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("renewal of a revoked identity: %v, want PermissionDenied", err)
	}
	if _, err := e.admin.RevokeSiteIdentity(e.ctx, &pb.RevokeSiteIdentityRequest{Site: "nosuch"}); status.Code(err) != codes.NotFound {
		t.Errorf("revoke unknown site: %v, want NotFound", err)
	}
}

// TestEdgeRenewsAndControllerRotates runs a real syncer against a
// controller issuing 3-second certificates: the edge renews at 2/3 of the
// lifetime over its current identity and reconnects with the new one
// without ever giving up, and the controller's own certificate is rotated
// without a restart.
func TestEdgeRenewsAndControllerRotates(t *testing.T) {
	e := startWith(t, "10.255.0.0/16", func(c *daemon.Config) {
		// Renewals every 4 s (2/3 of 6 s): short enough for a test, long
		// enough that a renewal is not still in flight on a busy machine
		// when the next one is due.
		c.EdgeCertValidity = 6 * time.Second
		c.ServerCertValidity = 6 * time.Second
	})
	e.mustCreate(t, site("hq", true, 1))
	tok, err := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: "hq"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctl := e.d.GRPCAddr.String()
	id, err := identity.Enroll(e.ctx, dir, identity.EnrollOptions{Controller: ctl, Token: tok.Secret, CAHash: tok.CaSha256})
	if err != nil {
		t.Fatal(err)
	}
	serverNotAfter := e.d.ServerCertNotAfter()
	var renewals sync.WaitGroup
	renewals.Add(2)
	var mu sync.Mutex
	n := 0
	s, err := syncer.New(syncer.Config{Controller: ctl, Identity: id, AgentVersion: "test", MinBackoff: 50 * time.Millisecond,
		Renew: func(ctx context.Context, cur *identity.Identity) (*identity.Identity, error) {
			nid, err := identity.Renew(ctx, dir, ctl, cur)
			if err == nil {
				mu.Lock()
				if n++; n <= 2 {
					renewals.Done()
				}
				mu.Unlock()
			}
			return nid, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runErr; !errors.Is(err, context.Canceled) {
			t.Errorf("syncer ended with %v", err)
		}
	}()
	<-s.Updates()
	done := make(chan struct{})
	go func() { renewals.Wait(); close(done) }()
	select {
	case <-done:
	case err := <-runErr:
		t.Fatalf("syncer gave up: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("two renewals did not happen within 30s")
	}
	if cur := s.Identity(); cur.Cert.Leaf.SerialNumber.Cmp(id.Cert.Leaf.SerialNumber) == 0 {
		t.Fatal("identity not swapped")
	}
	// Renewals go on every 4 s: the files on disk and the identity in use
	// agree whenever no renewal is between writing one and swapping the
	// other.
	waitFor(t, "the stored identity is the one in use", func() bool {
		loaded, err := identity.Load(dir)
		return err == nil && loaded.Cert.Leaf.SerialNumber.Cmp(s.Identity().Cert.Leaf.SerialNumber) == 0
	})
	waitFor(t, "the edge reconnected with its renewed certificate", func() bool {
		ids, err := e.admin.ListSiteIdentities(e.ctx, &pb.ListSiteIdentitiesRequest{})
		st, err2 := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: "hq"})
		return err == nil && err2 == nil && len(ids.Identities) == 1 && ids.Identities[0].RenewedAt != nil &&
			st.Status.GetState() == pb.EdgeState_EDGE_STATE_UP
	})
	if !e.d.ServerCertNotAfter().After(serverNotAfter) {
		t.Errorf("controller certificate not rotated: still expires %v", serverNotAfter)
	}
	resp, err := http.Get("http://" + e.d.HTTPAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`meshwan_edge_cert_expiry_timestamp_seconds{site="hq"}`, "meshwan_controller_cert_expiry_timestamp_seconds ", `meshwan_devices{state="pending"} 0`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestClaimApproveOverTheAPI: a device with only the claim token, the
// controller address and the CA hash appears as pending, is approved to a
// site, receives its certificate and then its desired state.
func TestClaimApproveOverTheAPI(t *testing.T) {
	e := start(t, "10.255.0.0/16")
	e.mustCreate(t, site("hq", true, 1), site("br1", false, 2))
	tok, err := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Claim: true})
	if err != nil || !tok.Claim {
		t.Fatalf("claim token: %v %v", tok, err)
	}
	if _, err := e.admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Claim: true, Site: "hq"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("claim token bound to a site: %v, want InvalidArgument", err)
	}
	dir := t.TempDir()
	type res struct {
		id  *identity.Identity
		err error
	}
	got := make(chan res, 1)
	go func() {
		id, err := identity.Claim(e.ctx, dir, identity.ClaimOptions{Controller: e.d.GRPCAddr.String(), ClaimToken: tok.Secret,
			DeviceID: "SN-TEST-1", Hostname: "box", CAHash: tok.CaSha256, MaxRetry: 100 * time.Millisecond})
		got <- res{id, err}
	}()
	waitFor(t, "the device is listed as pending", func() bool {
		ds, err := e.admin.ListDevices(e.ctx, &pb.ListDevicesRequest{})
		return err == nil && len(ds.Devices) == 1 && ds.Devices[0].State == pb.DeviceState_DEVICE_STATE_PENDING &&
			ds.Devices[0].PublicKeySha256 == identity.KeyFingerprint(dir)
	})
	// Over REST, as the dashboard and curl do.
	req, _ := http.NewRequest("POST", "http://"+e.d.HTTPAddr.String()+"/v1/devices/SN-TEST-1:approve", strings.NewReader(`{"site":"br1"}`))
	req.Header.Set("Authorization", "Bearer "+e.d.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "DEVICE_STATE_APPROVED") {
		t.Fatalf("approve over REST: %d %s", resp.StatusCode, body)
	}
	var r res
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the device did not get its certificate after approval")
	}
	if r.err != nil || r.id.Site != "br1" {
		t.Fatalf("claim: %v %v", r.id, r.err)
	}
	block, _ := pem.Decode(r.id.CAPEM)
	if ca, _ := x509.ParseCertificate(block.Bytes); ca == nil {
		t.Fatal("no CA stored")
	}
	st := syncStream(t, e, r.id.Cert)
	d, err := st.Recv()
	if err != nil || d.Site != "br1" {
		t.Fatalf("desired state after claim: %v %v", d, err)
	}
	ds, _ := e.admin.ListDevices(e.ctx, &pb.ListDevicesRequest{})
	if ds.Devices[0].State != pb.DeviceState_DEVICE_STATE_ENROLLED {
		t.Errorf("device after claim: %v", ds.Devices[0])
	}
}

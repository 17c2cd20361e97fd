package enroll

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

func parseCert(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func enrollBR1(t *testing.T, s *Service) *x509.Certificate {
	t.Helper()
	_, secret, err := s.CreateToken(context.Background(), "br1", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, p, err := s.Enroll(context.Background(), secret, "", csr(t))
	if err != nil {
		t.Fatal(err)
	}
	return parseCert(t, p)
}

// TestEnrollRacingDeleteSite: a DeleteSite committed between Enroll's
// checks and its transaction makes the enrollment fail and leaves no
// record that a re-created site of that name would accept.
func TestEnrollRacingDeleteSite(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	_, secret, _ := s.CreateToken(ctx, "br1", 0)
	s.beforeCommit = func() {
		// What network.DeleteSite does: the site and its enrollment record.
		s.st.Txn(ctx, nil, []store.Op{store.Delete(siteKey("br1")), store.Delete(EdgeKey("br1"))})
	}
	if _, _, err := s.Enroll(ctx, secret, "", csr(t)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("enroll racing a delete: %v, want ErrNotFound", err)
	}
	if _, ok, _ := s.Edge(ctx, "br1"); ok {
		t.Fatal("an enrollment record outlived its deleted site")
	}
}

func TestRenewSupersedesAndRevokeRefuses(t *testing.T) {
	s := newService(t)
	s.cfg.EdgeCertValidity = 3 * time.Minute
	ctx := context.Background()
	old := enrollBR1(t, s)
	if got := old.NotAfter.Sub(old.NotBefore); got != 3*time.Minute+9*time.Second {
		t.Errorf("lifetime %v, want the configured 3m (+9s backdating)", got)
	}
	site, p, err := s.Renew(ctx, old, csr(t))
	if err != nil || site != "br1" {
		t.Fatalf("renew: %s %v", site, err)
	}
	renewed := parseCert(t, p)
	if _, err := s.Authenticate(ctx, renewed); err != nil {
		t.Errorf("renewed certificate refused: %v", err)
	}
	if _, err := s.Authenticate(ctx, old); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("old certificate after renewal: %v, want ErrNotEnrolled (superseded)", err)
	}
	if _, _, err := s.Renew(ctx, old, csr(t)); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("renew with a superseded certificate: %v, want ErrNotEnrolled", err)
	}
	e, ok, _ := s.Edge(ctx, "br1")
	if !ok || e.RenewedAt.IsZero() || !e.NotAfter.Equal(renewed.NotAfter.UTC()) {
		t.Errorf("record after renewal: %+v", e)
	}
	if _, err := s.Revoke(ctx, "br1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, "br1"); err != nil {
		t.Errorf("second revoke: %v", err)
	}
	if _, err := s.Authenticate(ctx, renewed); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked certificate: %v, want ErrRevoked", err)
	}
	if _, _, err := s.Renew(ctx, renewed, csr(t)); !errors.Is(err, ErrRevoked) {
		t.Errorf("renew of a revoked identity: %v, want ErrRevoked", err)
	}
	if _, err := s.Revoke(ctx, "hq"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke a never-enrolled site: %v, want ErrNotFound", err)
	}
}

func TestRenewRefusedForDeletedSite(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	c := enrollBR1(t, s)
	s.beforeCommit = func() { s.st.Txn(ctx, nil, []store.Op{store.Delete(siteKey("br1"))}) }
	if _, _, err := s.Renew(ctx, c, csr(t)); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("renew racing a site delete: %v, want ErrNotEnrolled", err)
	}
	s.beforeCommit = nil
	if _, _, err := s.Renew(ctx, c, csr(t)); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("renew for a deleted site: %v, want ErrNotEnrolled", err)
	}
}

// TestStreamEndsWhenIdentityChanges: a stream authenticated with a
// certificate hears within a second that it was superseded (renewal,
// re-enrollment), revoked, or that its site was deleted.
func TestStreamEndsWhenIdentityChanges(t *testing.T) {
	s := newService(t)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { s.Run(ctx); close(ran) }() // the one watch serving every stream
	defer func() { cancel(); <-ran }()
	wait := func(ended <-chan error, want error, what string) {
		t.Helper()
		select {
		case err := <-ended:
			if !errors.Is(err, want) {
				t.Errorf("%s: stream ended with %v, want %v", what, err, want)
			}
		case <-time.After(time.Second):
			t.Errorf("%s: stream still accepted after 1s", what)
		}
	}
	open := func(c *x509.Certificate) <-chan error {
		t.Helper()
		_, ended, err := s.AuthenticateStream(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return ended
	}
	c1 := enrollBR1(t, s)
	e1 := open(c1)
	c2 := enrollBR1(t, s) // re-enrollment
	wait(e1, ErrNotEnrolled, "re-enrollment")
	e2 := open(c2)
	_, p, err := s.Renew(ctx, c2, csr(t))
	if err != nil {
		t.Fatal(err)
	}
	wait(e2, ErrNotEnrolled, "renewal")
	c3 := parseCert(t, p)
	e3 := open(c3)
	select {
	case err := <-e3:
		t.Fatalf("an unrelated change ended the stream: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := s.Revoke(ctx, "br1"); err != nil {
		t.Fatal(err)
	}
	wait(e3, ErrRevoked, "revocation")
	c4 := enrollBR1(t, s) // a new enrollment after revocation works
	e4 := open(c4)
	s.st.Txn(ctx, nil, []store.Op{store.Delete(siteKey("br1")), store.Delete(EdgeKey("br1"))})
	wait(e4, ErrNotEnrolled, "site deleted")
}

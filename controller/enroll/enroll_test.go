package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
)

func newService(t *testing.T) *Service {
	t.Helper()
	st := etcdtest.Start(t).NewStore()
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{1}, 32))
	ca, err := LoadOrCreateCA(context.Background(), st, sealer)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"hq", "br1"} {
		if _, _, err := st.Txn(context.Background(), nil, []store.Op{store.Put(siteKey(name), []byte("{}"))}); err != nil {
			t.Fatal(err)
		}
	}
	return NewService(st, ca, Config{SiteKey: siteKey})
}

func siteKey(name string) string { return "intent/sites/" + name }

func csr(t *testing.T) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "br1"}}, key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestExpiredTokenRefused(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	_, secret, err := s.CreateToken(ctx, "hq", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(61 * time.Minute) }
	_, _, err = s.Enroll(ctx, secret, "", csr(t))
	if !errors.Is(err, ErrTokenRefused) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v, want ErrTokenRefused 'expired'", err)
	}
}

func TestTokenBinding(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	_, bound, _ := s.CreateToken(ctx, "hq", 0)
	if _, _, err := s.Enroll(ctx, bound, "br1", csr(t)); !errors.Is(err, ErrTokenRefused) {
		t.Errorf("token bound to hq used for br1: %v, want ErrTokenRefused", err)
	}
	_, free, _ := s.CreateToken(ctx, "", 0)
	if _, _, err := s.Enroll(ctx, free, "", csr(t)); !errors.Is(err, ErrInvalid) {
		t.Errorf("unbound token without a site: %v, want ErrInvalid", err)
	}
	if _, _, err := s.Enroll(ctx, free, "nosuch", csr(t)); !errors.Is(err, ErrNotFound) {
		t.Errorf("unbound token for unknown site: %v, want ErrNotFound", err)
	}
	site, certPEM, err := s.Enroll(ctx, free, "br1", csr(t))
	if err != nil || site != "br1" {
		t.Fatalf("unbound token naming br1: %s %v", site, err)
	}
	block, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	// The certificate names the site from the request, never the CSR's subject.
	if cert.Subject.CommonName != "br1" {
		t.Errorf("certificate CN %q", cert.Subject.CommonName)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: s.CA().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("edge certificate does not verify against the CA: %v", err)
	}
	if got, err := s.Authenticate(ctx, cert); err != nil || got != "br1" {
		t.Errorf("Authenticate = %q, %v", got, err)
	}
}

// TestTokenRedeemedOnceUnderRace: many edges race with one token; exactly
// one wins.
func TestTokenRedeemedOnceUnderRace(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	_, secret, _ := s.CreateToken(ctx, "hq", 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			if _, _, err := s.Enroll(ctx, secret, "", csr(t)); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrTokenRefused) {
				t.Errorf("loser got %v, want ErrTokenRefused", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d enrollments succeeded with one token, want exactly 1", wins)
	}
}

func TestCASharedByReplicas(t *testing.T) {
	srv := etcdtest.Start(t)
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{1}, 32))
	var cas [4]*CA
	var wg sync.WaitGroup
	for i := range cas {
		st := srv.NewStore()
		wg.Go(func() {
			ca, err := LoadOrCreateCA(context.Background(), st, sealer)
			if err != nil {
				t.Error(err)
			}
			cas[i] = ca
		})
	}
	wg.Wait()
	for i := range cas {
		if cas[i] == nil || !bytes.Equal(cas[i].PEM, cas[0].PEM) {
			t.Fatalf("replica %d got a different CA", i)
		}
	}
	other, _ := secrets.NewSealer(bytes.Repeat([]byte{2}, 32))
	if _, err := LoadOrCreateCA(context.Background(), srv.NewStore(), other); err == nil || !strings.Contains(err.Error(), "master-key-file") {
		t.Errorf("CA opened with the wrong master key: %v", err)
	}
}

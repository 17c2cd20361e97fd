package enroll

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/fuzzcorpus"
	"github.com/meshwan/meshwan/controller/secrets"
)

func csrPEM(f *testing.F, key any, subject pkix.Name) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, DNSNames: []string{"evil.example"}}, key)
	if err != nil {
		f.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// FuzzCSR: the CSR an unauthenticated edge sends to Enroll or Claim (and
// an enrolled one to Renew). parseCSR never panics and refuses with
// ErrBadCSR (an InvalidArgument) of bounded length; a CSR it accepts is
// signed (the refusal of a key the CA cannot sign for would otherwise be
// an internal error) into a certificate for the site, never for what the
// CSR's subject asks.
func FuzzCSR(f *testing.F) {
	sealer, err := secrets.NewSealer(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		f.Fatal(err)
	}
	ca, _, err := newCA(sealer)
	if err != nil {
		f.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good := csrPEM(f, ec, pkix.Name{CommonName: "hq", OrganizationalUnit: []string{"meshwan-controller"}})
	tampered := bytes.Clone(good)
	tampered[len(tampered)/2] ^= 1
	fuzzcorpus.Add(f, good, csrPEM(f, ed, pkix.Name{CommonName: string(bytes.Repeat([]byte("x"), 200))}), tampered,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x00}}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x00}}),
		[]byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n"), nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		certPEM, _, _, err := ca.signEdge(b, "site-a", time.Hour)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("a CSR parseCSR accepted could not be signed: %v", err)
			}
			if n := len(err.Error()); n > 512 {
				t.Fatalf("refused with a %d-byte error: %.200s...", n, err)
			}
			return
		}
		block, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.CommonName != "site-a" || len(cert.DNSNames) != 0 || len(cert.Subject.OrganizationalUnit) != 1 || cert.Subject.OrganizationalUnit[0] != EdgeCertOU {
			t.Fatalf("certificate for %v (OU %v, DNS %v), want site-a / %s only", cert.Subject.CommonName, cert.Subject.OrganizationalUnit, cert.DNSNames, EdgeCertOU)
		}
	})
}

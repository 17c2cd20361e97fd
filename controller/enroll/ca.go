// Package enroll owns zero-touch onboarding on the controller side: the
// controller's certificate authority, one-time enrollment tokens, and the
// exchange of a token plus a CSR for an edge client certificate. After
// enrollment an edge authenticates with that certificate (mTLS); its
// subject common name is its site, and only the latest certificate issued
// for a site is accepted (re-enrolling a site retires the previous one).
package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
)

const caKey = "ca"

// EdgeCertOU marks certificates issued to edges.
const EdgeCertOU = "meshwan-edge"

// CA is the controller's certificate authority. Its key is stored in etcd
// sealed with the master key, so every replica sharing the etcd and the
// master key uses the same CA.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
}

type storedCA struct {
	CertPEM   []byte `json:"cert_pem"`
	SealedKey []byte `json:"sealed_key"`
}

// LoadOrCreateCA reads the CA from the store or, on first start, creates
// it. Two replicas starting at once agree: creation is put-if-absent and
// the loser reads the winner's CA.
func LoadOrCreateCA(ctx context.Context, st *store.Store, sealer *secrets.Sealer) (*CA, error) {
	for range 3 {
		kv, ok, err := st.Get(ctx, caKey)
		if err != nil {
			return nil, err
		}
		if ok {
			return openCA(kv.Value, sealer)
		}
		ca, raw, err := newCA(sealer)
		if err != nil {
			return nil, err
		}
		won, _, err := st.Txn(ctx, []store.Cmp{store.Absent(caKey)}, []store.Op{store.Put(caKey, raw)})
		if err != nil {
			return nil, err
		}
		if won {
			return ca, nil
		}
	}
	return nil, errors.New("could not create or read the CA")
}

func newCA(sealer *secrets.Sealer) (*CA, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "meshwan controller CA", Organization: []string{"meshwan"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	raw, err := json.Marshal(storedCA{CertPEM: certPEM, SealedKey: sealer.Seal(keyDER, caKey)})
	if err != nil {
		return nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, key: key, PEM: certPEM}, raw, nil
}

func openCA(raw []byte, sealer *secrets.Sealer) (*CA, error) {
	var s storedCA
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("stored CA: %w", err)
	}
	keyDER, err := sealer.Open(s.SealedKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("stored CA key: %w (is --master-key-file the one this etcd was initialised with?)", err)
	}
	key, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("stored CA key: %w", err)
	}
	block, _ := pem.Decode(s.CertPEM)
	if block == nil {
		return nil, errors.New("stored CA certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("stored CA certificate: %w", err)
	}
	return &CA{Cert: cert, key: key, PEM: s.CertPEM}, nil
}

// backdate is how far before now a certificate starts, for peers whose
// clock is behind: an hour, but at most a twentieth of a short lifetime,
// so "renew at 2/3 of the lifetime" stays in the future.
func backdate(validity time.Duration) time.Duration { return min(time.Hour, validity/20) }

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Fingerprint is the hex SHA-256 of the CA certificate (DER), which an edge
// pins before its first contact (meshwan-edge --ca-hash).
func (ca *CA) Fingerprint() string {
	h := sha256.Sum256(ca.Cert.Raw)
	return hex.EncodeToString(h[:])
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueServer issues the controller's own TLS certificate for the given
// DNS names and IPs, valid for validity (0: one year). It is issued at
// every start and rotated before it expires (see ServerCert); never stored.
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP, validity time.Duration) (tls.Certificate, error) {
	if validity <= 0 {
		validity = 365 * 24 * time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: "meshwan-controller", Organization: []string{"meshwan"}},
		NotBefore:    now.Add(-backdate(validity)),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// parseCSR decodes and checks a PEM CSR.
func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: csr_pem: not a PEM certificate request", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: csr_pem: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: csr_pem: signature: %v", ErrBadCSR, err)
	}
	return csr, nil
}

// keyHash is the hex SHA-256 of a CSR's public key (SubjectPublicKeyInfo).
func keyHash(csr *x509.CertificateRequest) string {
	h := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// signEdge issues a client certificate for site from a PEM CSR.
func (ca *CA) signEdge(csrPEM []byte, site string, validity time.Duration) (certPEM []byte, serial string, notAfter time.Time, err error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	now := time.Now()
	sn := randSerial()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		// The site comes from the token (or the checked request), never
		// from the CSR's own subject.
		Subject:     pkix.Name{CommonName: site, OrganizationalUnit: []string{EdgeCertOU}, Organization: []string{"meshwan"}},
		NotBefore:   now.Add(-backdate(validity)),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("sign edge certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), sn.Text(16), tmpl.NotAfter.UTC().Truncate(time.Second), nil
}

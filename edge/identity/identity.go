// Package identity owns the edge's credentials: its private key (made on
// the edge, never sent), the client certificate the controller signed at
// enrollment, and the controller CA it pins. They live in the state
// directory (key 0600). Enroll exchanges a one-time token for them; Load
// reads them back on later starts.
package identity

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
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

const (
	keyFile  = "edge.key"
	certFile = "edge.crt"
	caFile   = "ca.crt"
)

// ErrNotEnrolled is returned by Load when the state directory holds no
// identity yet.
var ErrNotEnrolled = errors.New("not enrolled")

// Identity is an enrolled edge's credentials.
type Identity struct {
	Site  string
	Cert  tls.Certificate
	CA    *x509.CertPool
	CAPEM []byte
}

// TLSConfig returns the client TLS configuration for the controller at
// serverName (host part of the controller address).
func (id *Identity) TLSConfig(serverName string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{id.Cert}, RootCAs: id.CA, ServerName: serverName, MinVersion: tls.VersionTLS13}
}

// Load reads the identity from dir.
func Load(dir string) (*Identity, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("identity in %s: %s is not a PEM certificate", dir, caFile)
	}
	return &Identity{Site: cert.Leaf.Subject.CommonName, Cert: cert, CA: pool, CAPEM: caPEM}, nil
}

// EnrollOptions controls first contact.
type EnrollOptions struct {
	Controller string // host:port
	Token      string
	Site       string // optional when the token is bound
	// CAHash is the hex SHA-256 of the controller CA certificate; the
	// controller is trusted on first contact only if it presents a chain
	// to that CA. Empty with Insecure set trusts whatever answers (lab
	// use only).
	CAHash   string
	Insecure bool
}

// Enroll creates a key, sends a CSR with the token, verifies the answer
// against the pinned CA hash, and stores the identity in dir.
func Enroll(ctx context.Context, dir string, o EnrollOptions) (*Identity, error) {
	want := strings.TrimPrefix(strings.ToLower(o.CAHash), "sha256:")
	if want == "" && !o.Insecure {
		return nil, errors.New("--ca-hash is required for enrollment (shown with the token), or --insecure-skip-ca-verify for a lab")
	}
	host := o.Controller
	if h, _, ok := strings.Cut(o.Controller, ":"); ok {
		host = h
	}
	// Before enrollment there is no CA to verify against: verify the
	// presented chain against the pinned hash instead.
	tlsCfg := &tls.Config{
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		MinVersion:         tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if want == "" {
				return nil
			}
			return verifyPinned(cs, host, want)
		},
	}
	conn, err := grpc.NewClient(o.Controller, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: o.Site}}, key)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewEdgeServiceClient(conn).Enroll(ctx, &pb.EnrollRequest{
		Token: o.Token, Site: o.Site, CsrPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
	})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return nil, fmt.Errorf("enrollment refused (%s): %s", st.Code(), st.Message())
		}
		return nil, fmt.Errorf("enrollment: %w", err)
	}
	if want != "" {
		if got := fingerprintPEM(resp.GetCaPem()); got != want {
			return nil, fmt.Errorf("controller returned CA %s, but --ca-hash pins %s", got, want)
		}
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
		{caFile, resp.GetCaPem(), 0o644},
		{certFile, resp.GetCertificatePem(), 0o644}, // last: its presence means "enrolled"
	}
	for _, f := range files {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return Load(dir)
}

func verifyPinned(cs tls.ConnectionState, host, want string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("controller presented no certificate")
	}
	for _, c := range cs.PeerCertificates[1:] {
		if fingerprint(c) != want {
			continue
		}
		pool := x509.NewCertPool()
		pool.AddCert(c)
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host})
		if err != nil {
			// The address may be an IP the certificate does not name
			// (NAT, port forward): the pinned CA is what matters.
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool})
		}
		return err
	}
	return fmt.Errorf("controller certificate does not chain to the pinned CA %s", want)
}

func fingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

func fingerprintPEM(p []byte) string {
	b, _ := pem.Decode(p)
	if b == nil {
		return ""
	}
	h := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(h[:])
}

// WriteFileAtomic writes data to path via a temporary file and rename, so
// a crash never leaves a half-written file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Package identity owns the edge's credentials: its private key (made on
// the edge, never sent), the client certificate the controller signed at
// enrollment, and the controller CA it pins. They live in the state
// directory (key 0600). Enroll exchanges a one-time token for them, Claim
// a fleet claim token plus the device id (after an admin's approval),
// Renew the current certificate (new key); Load reads them back on later
// starts.
//
// Files are replaced so that a crash leaves a usable pair: a new key is
// written as edge.key.next, then the certificate, then the key is renamed
// over edge.key; Load falls back to edge.key.next when edge.crt does not
// match edge.key.
package identity

import (
	"bytes"
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
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshwan/meshwan/edge/backoff"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

const (
	keyFile      = "edge.key"
	nextKeyFile  = "edge.key.next"
	claimKeyFile = "claim.key" // the key a claiming device presents until approved
	certFile     = "edge.crt"
	caFile       = "ca.crt"
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

// NotAfter is when the certificate expires.
func (id *Identity) NotAfter() time.Time { return id.Cert.Leaf.NotAfter }

// RenewAt is when the edge should renew: at 2/3 of the certificate's
// lifetime.
func (id *Identity) RenewAt() time.Time {
	l := id.Cert.Leaf
	return l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) * 2 / 3)
}

// Host returns the host part of a controller address HOST:PORT, [V6]:PORT
// or a bare host: the name the controller's certificate must carry.
func Host(controller string) string {
	if h, _, err := net.SplitHostPort(controller); err == nil {
		return h
	}
	return strings.Trim(controller, "[]")
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
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// A renewal interrupted after writing the certificate: its key is
		// still edge.key.next.
		next, nerr := os.ReadFile(filepath.Join(dir, nextKeyFile))
		if nerr != nil {
			return nil, fmt.Errorf("identity in %s: %w", dir, err)
		}
		if cert, err = tls.X509KeyPair(certPEM, next); err != nil {
			return nil, fmt.Errorf("identity in %s: %w", dir, err)
		}
		if err := os.Rename(filepath.Join(dir, nextKeyFile), filepath.Join(dir, keyFile)); err != nil {
			return nil, err
		}
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
	conn, err := grpc.NewClient(o.Controller, grpc.WithTransportCredentials(credentials.NewTLS(pinnedTLS(Host(o.Controller), want))))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	key, csr, err := newKeyCSR(o.Site)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewEdgeServiceClient(conn).Enroll(ctx, &pb.EnrollRequest{Token: o.Token, Site: o.Site, CsrPem: csr})
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
	return save(dir, key, resp.GetCertificatePem(), resp.GetCaPem())
}

// pinnedTLS is the client TLS configuration before the edge has the CA:
// the presented chain must lead to the CA whose hash is pinned (want;
// empty: anything, labs only) and name host, exactly as Sync will later
// require. (Enrollment used to accept a certificate not naming the
// dialled host; it then succeeded and every Sync failed forever.)
func pinnedTLS(host, want string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		MinVersion:         tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if want == "" {
				return nil
			}
			return verifyPinned(cs, host, want)
		},
	}
}

func newKeyCSR(cn string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	return key, csrFor(key, cn), nil
}

func csrFor(key *ecdsa.PrivateKey, cn string) []byte {
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// save writes a key, its certificate and the CA into dir (see the package
// comment for the order) and loads them back.
func save(dir string, key *ecdsa.PrivateKey, certPEM, caPEM []byte) (*Identity, error) {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, fmt.Errorf("controller returned a certificate that does not match our key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{nextKeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
		{caFile, caPEM, 0o644},
		{certFile, certPEM, 0o644}, // its presence means "enrolled"
	}
	for _, f := range files {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	if err := os.Rename(filepath.Join(dir, nextKeyFile), filepath.Join(dir, keyFile)); err != nil {
		return nil, err
	}
	return Load(dir)
}

// Renew asks the controller, over the current identity, for a
// certificate for a new key, and stores it in dir. The controller then
// accepts only the new certificate.
func Renew(ctx context.Context, dir, controller string, id *Identity) (*Identity, error) {
	conn, err := grpc.NewClient(controller, grpc.WithTransportCredentials(credentials.NewTLS(id.TLSConfig(Host(controller)))))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	key, csr, err := newKeyCSR(id.Site)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewEdgeServiceClient(conn).Renew(ctx, &pb.RenewRequest{CsrPem: csr})
	if err != nil {
		return nil, err
	}
	// The CA must stay the one pinned at enrollment.
	if !bytes.Equal(resp.GetCaPem(), id.CAPEM) {
		return nil, errors.New("renewal: the controller returned another CA")
	}
	return save(dir, key, resp.GetCertificatePem(), resp.GetCaPem())
}

// ClaimOptions controls zero-touch onboarding.
type ClaimOptions struct {
	Controller string // host:port
	ClaimToken string
	DeviceID   string
	Hostname   string
	CAHash     string
	Insecure   bool
	// OnPending, when set, hears every pending answer.
	OnPending func()
	// MaxRetry caps the wait between claims (default 30 s).
	MaxRetry time.Duration
}

// Claim presents the device (id, a key made once and kept in dir until
// approved) with a fleet claim token and asks again until an admin has
// approved it, then stores the identity. It returns only on approval,
// refusal (PermissionDenied, Unauthenticated, InvalidArgument) or ctx's end.
func Claim(ctx context.Context, dir string, o ClaimOptions) (*Identity, error) {
	want := strings.TrimPrefix(strings.ToLower(o.CAHash), "sha256:")
	if want == "" && !o.Insecure {
		return nil, errors.New("--ca-hash is required with --claim-token (it is baked into the image with the claim token)")
	}
	if o.DeviceID == "" {
		return nil, errors.New("no device id (--device-id, or a readable machine-id or hardware serial)")
	}
	if o.MaxRetry == 0 {
		o.MaxRetry = 30 * time.Second
	}
	key, err := loadOrCreateKey(dir, claimKeyFile)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(o.Controller, grpc.WithTransportCredentials(credentials.NewTLS(pinnedTLS(Host(o.Controller), want))))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cli := pb.NewEdgeServiceClient(conn)
	req := &pb.ClaimRequest{ClaimToken: o.ClaimToken, DeviceId: o.DeviceID, CsrPem: csrFor(key, o.DeviceID), Hostname: o.Hostname}
	// Errors (controller unreachable) are retried with backoff up to
	// MaxRetry; a pending claim waits what the controller asks.
	bo := backoff.Policy{Min: min(time.Second, o.MaxRetry), Max: o.MaxRetry, Jitter: 0.2}.New()
	for {
		var wait time.Duration
		resp, err := cli.Claim(ctx, req)
		switch status.Code(err) {
		case codes.OK:
			if resp.GetState() == pb.ClaimState_CLAIM_STATE_APPROVED {
				if want != "" {
					if got := fingerprintPEM(resp.GetCaPem()); got != want {
						return nil, fmt.Errorf("controller returned CA %s, but --ca-hash pins %s", got, want)
					}
				}
				id, err := save(dir, key, resp.GetCertificatePem(), resp.GetCaPem())
				if err == nil {
					os.Remove(filepath.Join(dir, claimKeyFile))
				}
				return id, err
			}
			if o.OnPending != nil {
				o.OnPending()
			}
			bo.Reset()
			wait = min(max(time.Duration(resp.GetRetryAfterSeconds())*time.Second, time.Second), o.MaxRetry)
		case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
			return nil, fmt.Errorf("claim refused (%s): %s", status.Code(err), status.Convert(err).Message())
		default:
			wait = bo.Next()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func loadOrCreateKey(dir, name string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, name)
	if raw, err := os.ReadFile(path); err == nil {
		if b, _ := pem.Decode(raw); b != nil {
			if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
				return k, nil
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, _ := x509.MarshalECPrivateKey(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return key, WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// KeyFingerprint is the hex SHA-256 of the public key a claiming device
// presents (what the admin sees as public_key_sha256), or "" before the key
// exists.
func KeyFingerprint(dir string) string {
	raw, err := os.ReadFile(filepath.Join(dir, claimKeyFile))
	if err != nil {
		return ""
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		return ""
	}
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return ""
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
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
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			return err
		}
		if err := cs.PeerCertificates[0].VerifyHostname(host); err != nil {
			return fmt.Errorf("%w: the controller's certificate does not name %q, the address dialled; start the controller with --tls-san %s (Sync would refuse it too)", err, host, host)
		}
		return nil
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

// DeviceID returns this box's device identity for claims: the hardware
// serial (DMI product serial) when the firmware sets a real one, else the
// systemd machine-id. Both files are read from root (normally "/").
func DeviceID(root string) (string, error) {
	if raw, err := os.ReadFile(filepath.Join(root, "sys/class/dmi/id/product_serial")); err == nil {
		s := strings.TrimSpace(string(raw))
		switch strings.ToLower(s) {
		case "", "0", "none", "default string", "to be filled by o.e.m.", "not specified", "system serial number":
		default:
			return "serial-" + sanitizeID(s), nil
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "etc/machine-id"))
	if err != nil {
		return "", fmt.Errorf("device id: no hardware serial and %w", err)
	}
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return "", errors.New("device id: /etc/machine-id is empty")
	}
	return "machine-" + sanitizeID(s), nil
}

func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			b[i] = '-'
		}
	}
	if len(b) > 100 {
		b = b[:100]
	}
	return string(b)
}

package etcdtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/store"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// TLSServer is a test etcd serving clients over TLS on a loopback port,
// as an external production cluster would.
type TLSServer struct {
	// Endpoint is https://127.0.0.1:PORT.
	Endpoint string
	// CAFile signed the server's and the client's certificates.
	CAFile string
	// CertFile and KeyFile are a client certificate (CN "meshwan") that
	// the server accepts.
	CertFile, KeyFile string
	// OtherCAFile is a CA that signed nothing the server uses: a client
	// trusting only it must refuse the server.
	OtherCAFile string
}

// TLSOptions tunes StartTLS.
type TLSOptions struct {
	// ClientCertAuth makes the server require a client certificate
	// signed by CAFile (etcd --client-cert-auth).
	ClientCertAuth bool
}

// StartTLS starts an etcd for t whose client port serves TLS with a
// certificate for 127.0.0.1 and localhost, signed by a CA made for the
// test. The certificates are ECDSA P-256, valid for an hour.
func StartTLS(t testing.TB, opts TLSOptions) *TLSServer {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCA(t, "meshwan-test-etcd-ca")
	other, _ := newCA(t, "some-other-ca")
	s := &TLSServer{
		CAFile:      writePEM(t, dir, "ca.crt", "CERTIFICATE", ca.Raw),
		OtherCAFile: writePEM(t, dir, "other-ca.crt", "CERTIFICATE", other.Raw),
	}
	srvCert, srvKey := issue(t, ca, caKey, "etcd-server", x509.ExtKeyUsageServerAuth)
	srvCertFile := writePEM(t, dir, "server.crt", "CERTIFICATE", srvCert)
	srvKeyFile := writePEM(t, dir, "server.key", "PRIVATE KEY", srvKey)
	cliCert, cliKey := issue(t, ca, caKey, "meshwan", x509.ExtKeyUsageClientAuth)
	s.CertFile = writePEM(t, dir, "client.crt", "CERTIFICATE", cliCert)
	s.KeyFile = writePEM(t, dir, "client.key", "PRIVATE KEY", cliKey)

	cfg := embed.NewConfig()
	cfg.Name = "tls"
	cfg.Dir = filepath.Join(dir, "member-data")
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(store.ZapLogger(nil, slog.LevelWarn))
	client := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: srvCertFile, KeyFile: srvKeyFile}
	if opts.ClientCertAuth {
		// etcd requires a client certificate as soon as it has a CA to
		// verify one with, so the CA is only set together with the flag.
		cfg.ClientTLSInfo.TrustedCAFile = s.CAFile
		cfg.ClientTLSInfo.ClientCertAuth = true
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("embedded TLS etcd: %v", err)
	}
	t.Cleanup(e.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("embedded TLS etcd: %v", err)
	case <-ctx.Done():
		t.Fatal("embedded TLS etcd did not become ready within 2m")
	}
	// The listener was opened on port 0: its real address is the endpoint.
	s.Endpoint = "https://" + e.Clients[0].Addr().String()
	return s
}

func newCA(t testing.TB, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// issue signs a leaf certificate for cn valid for 127.0.0.1 and localhost
// and returns its DER and its PKCS#8 key.
func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) (certDER, keyDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey); err != nil {
		t.Fatal(err)
	}
	if keyDER, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
		t.Fatal(err)
	}
	return certDER, keyDER
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHost(t *testing.T) {
	for in, want := range map[string]string{
		"ctl.example.net:7400": "ctl.example.net",
		"192.0.2.1:7400":       "192.0.2.1",
		"[2001:db8::1]:7400":   "2001:db8::1",
		"[::1]:7400":           "::1",
		"ctl":                  "ctl",
	} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q, want %q", in, got, want)
		}
	}
}

// chain returns a connection state as a controller with a CA-issued
// certificate naming dns and ips presents it, and the CA's hash.
func chain(t *testing.T, dns []string, ips []net.IP) (tls.ConnectionState, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ctl"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: dns, IPAddresses: ips, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, lt, ca, &key.PublicKey, caKey)
	leaf, _ := x509.ParseCertificate(der)
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, ca}}, fingerprint(ca)
}

// TestEnrollmentChecksTheNameSyncChecks: first contact refuses a
// controller certificate that does not name the dialled host (Sync would
// refuse it later, forever), accepts one that does, IPv6 included.
func TestEnrollmentChecksTheNameSyncChecks(t *testing.T) {
	cs, hash := chain(t, []string{"ctl.example.net"}, []net.IP{net.ParseIP("2001:db8::1")})
	if err := verifyPinned(cs, "ctl.example.net", hash); err != nil {
		t.Errorf("named host refused: %v", err)
	}
	if err := verifyPinned(cs, Host("[2001:db8::1]:7400"), hash); err != nil {
		t.Errorf("named IPv6 address refused: %v", err)
	}
	err := verifyPinned(cs, "192.0.2.9", hash)
	if err == nil || !strings.Contains(err.Error(), "--tls-san 192.0.2.9") {
		t.Errorf("unnamed address: %v, want a refusal naming --tls-san", err)
	}
	other, _ := chain(t, []string{"ctl.example.net"}, nil)
	if err := verifyPinned(other, "ctl.example.net", hash); err == nil {
		t.Error("certificate of another CA accepted")
	}
}

func TestDeviceID(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(s), 0o644)
	}
	if _, err := DeviceID(root); err == nil {
		t.Error("no id sources: no error")
	}
	write("etc/machine-id", "0123abcd\n")
	write("sys/class/dmi/id/product_serial", "To Be Filled By O.E.M.\n")
	if got, _ := DeviceID(root); got != "machine-0123abcd" {
		t.Errorf("placeholder serial: %q", got)
	}
	write("sys/class/dmi/id/product_serial", "FGT 60F/123\n")
	if got, _ := DeviceID(root); got != "serial-FGT-60F-123" {
		t.Errorf("serial: %q", got)
	}
}

package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/edge/identity"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// These tests enroll and renew against the real controller (controller/
// daemon, in process, on loopback, on its embedded etcd): the identity
// package's contract is with that server.

type ctl struct {
	d     *daemon.Daemon
	admin pb.AdminServiceClient
	ctx   context.Context // carries the admin token
	addr  string
}

func startController(t *testing.T) *ctl {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	d, err := daemon.Start(ctx, daemon.Config{DataDir: t.TempDir(), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.CAPEM)
	conn, err := grpc.NewClient(d.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &ctl{d: d, admin: pb.NewAdminServiceClient(conn), addr: d.GRPCAddr.String(),
		ctx: metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.AdminToken)}
	if _, err := c.admin.CreateSite(c.ctx, &pb.CreateSiteRequest{Site: &pb.Site{Name: "hq", Role: pb.SiteRole_SITE_ROLE_HUB,
		Transports: []*pb.Transport{{Name: "inet1", Address: "198.51.100.1"}}, LanPrefixes: []string{"10.1.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *ctl) token(t *testing.T) *pb.EnrollmentToken {
	t.Helper()
	tok, err := c.admin.CreateEnrollmentToken(c.ctx, &pb.CreateEnrollmentTokenRequest{Site: "hq"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (c *ctl) enroll(t *testing.T, dir string) *identity.Identity {
	t.Helper()
	tok := c.token(t)
	id, err := identity.Enroll(c.ctx, dir, identity.EnrollOptions{Controller: c.addr, Token: tok.Secret, CAHash: tok.CaSha256})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	return id
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestEnrollThenLoad: enrollment stores a key (0600), the certificate for
// it naming the site, and the pinned CA; Load on a later start returns the
// same identity, which the controller accepts on Sync.
func TestEnrollThenLoad(t *testing.T) {
	c := startController(t)
	dir := t.TempDir()
	if _, err := identity.Load(dir); !errors.Is(err, identity.ErrNotEnrolled) {
		t.Fatalf("Load before enrollment = %v, want ErrNotEnrolled", err)
	}
	id := c.enroll(t, dir)
	if id.Site != "hq" || id.Cert.Leaf.Subject.CommonName != "hq" {
		t.Errorf("enrolled as %q (CN %q), want hq", id.Site, id.Cert.Leaf.Subject.CommonName)
	}
	if string(id.CAPEM) != string(c.d.CAPEM) {
		t.Error("stored CA is not the controller's")
	}
	if m := mode(t, filepath.Join(dir, "edge.key")); m != 0o600 {
		t.Errorf("edge.key mode %v, want 0600", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "edge.key.next")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("edge.key.next left after enrollment: %v", err)
	}
	loaded, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Site != "hq" || !loaded.Cert.Leaf.Equal(id.Cert.Leaf) || !id.RenewAt().After(time.Now()) || !id.NotAfter().After(id.RenewAt()) {
		t.Errorf("Load = site %q serial %v, renew at %v, expires %v", loaded.Site, loaded.Cert.Leaf.SerialNumber, id.RenewAt(), id.NotAfter())
	}
	syncOnce(t, c, loaded)
}

// syncOnce opens a Sync stream as id and waits for the first desired
// state: the controller accepts the identity.
func syncOnce(t *testing.T, c *ctl, id *identity.Identity) {
	t.Helper()
	if err := trySync(c, id); err != nil {
		t.Fatalf("Sync as %v: %v", id.Cert.Leaf.SerialNumber, err)
	}
}

func trySync(c *ctl, id *identity.Identity) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(id.TLSConfig(identity.Host(c.addr)))))
	if err != nil {
		return err
	}
	defer conn.Close()
	s, err := pb.NewEdgeServiceClient(conn).Sync(ctx)
	if err != nil {
		return err
	}
	// io.EOF from Send means the server already ended the stream; its
	// status is what Recv returns.
	if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{AgentVersion: "test"}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = s.Recv()
	return err
}

// TestEnrollRefusals: a wrong CA hash (somebody else answers), a bad
// token or a used one all fail with an error saying why, and leave the
// edge not enrolled.
func TestEnrollRefusals(t *testing.T) {
	c := startController(t)
	tok := c.token(t)
	for _, tc := range []struct {
		name string
		o    identity.EnrollOptions
		want string
	}{
		{"wrong CA hash", identity.EnrollOptions{Controller: c.addr, Token: tok.Secret, CAHash: strings.Repeat("ab", 32)}, "CA"},
		{"no CA hash", identity.EnrollOptions{Controller: c.addr, Token: tok.Secret}, "--ca-hash"},
		{"bad token", identity.EnrollOptions{Controller: c.addr, Token: "mwt_not-a-token", CAHash: tok.CaSha256}, "enrollment refused (Unauthenticated)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := identity.Enroll(c.ctx, dir, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Enroll = %v, want an error containing %q", err, tc.want)
			}
			if _, err := identity.Load(dir); !errors.Is(err, identity.ErrNotEnrolled) {
				t.Errorf("after a refused enrollment Load = %v, want ErrNotEnrolled", err)
			}
		})
	}
	// None of the refusals above used the token up: it enrolls once, and
	// only once.
	if _, err := identity.Enroll(c.ctx, t.TempDir(), identity.EnrollOptions{Controller: c.addr, Token: tok.Secret, CAHash: tok.CaSha256}); err != nil {
		t.Fatalf("the token after the refusals: %v", err)
	}
	_, err := identity.Enroll(c.ctx, t.TempDir(), identity.EnrollOptions{Controller: c.addr, Token: tok.Secret, CAHash: tok.CaSha256})
	if err == nil || !strings.Contains(err.Error(), "enrollment refused") {
		t.Errorf("a used token: %v, want a refusal", err)
	}
}

// TestRenewReplacesKeyAndCertificate: Renew gets a certificate for a new
// key, stores both (Load returns them), and the controller then accepts
// the new certificate and no longer the old one.
func TestRenewReplacesKeyAndCertificate(t *testing.T) {
	c := startController(t)
	dir := t.TempDir()
	old := c.enroll(t, dir)
	nid, err := identity.Renew(c.ctx, dir, c.addr, old)
	if err != nil {
		t.Fatal(err)
	}
	if nid.Site != "hq" || nid.Cert.Leaf.SerialNumber.Cmp(old.Cert.Leaf.SerialNumber) == 0 {
		t.Fatalf("renewed identity: site %q, serial %v (old %v)", nid.Site, nid.Cert.Leaf.SerialNumber, old.Cert.Leaf.SerialNumber)
	}
	if string(nid.Cert.Leaf.RawSubjectPublicKeyInfo) == string(old.Cert.Leaf.RawSubjectPublicKeyInfo) {
		t.Error("renewal kept the old key")
	}
	loaded, err := identity.Load(dir)
	if err != nil || !loaded.Cert.Leaf.Equal(nid.Cert.Leaf) {
		t.Fatalf("Load after renewal: %v (same as renewed: %v)", err, err == nil && loaded.Cert.Leaf.Equal(nid.Cert.Leaf))
	}
	syncOnce(t, c, loaded)
	if err := trySync(c, old); err == nil {
		t.Error("the controller still accepts the certificate renewal replaced")
	}
	if _, err := identity.Renew(c.ctx, t.TempDir(), c.addr, old); err == nil {
		t.Error("a second renewal with the replaced certificate succeeded")
	}
}

// TestLoadAfterInterruptedRenewal: a renewal that crashed after writing
// the new certificate but before renaming edge.key.next over edge.key
// leaves a usable pair: Load uses the next key, finishes the rename, and
// the controller accepts the result.
func TestLoadAfterInterruptedRenewal(t *testing.T) {
	c := startController(t)
	dir := t.TempDir()
	old := c.enroll(t, dir)
	oldKey, err := os.ReadFile(filepath.Join(dir, "edge.key"))
	if err != nil {
		t.Fatal(err)
	}
	nid, err := identity.Renew(c.ctx, dir, c.addr, old)
	if err != nil {
		t.Fatal(err)
	}
	// Put the files back as the crash left them: new certificate, new key
	// still under its temporary name, old key in place.
	if err := os.Rename(filepath.Join(dir, "edge.key"), filepath.Join(dir, "edge.key.next")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "edge.key"), oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := identity.Load(dir)
	if err != nil {
		t.Fatalf("Load after an interrupted renewal: %v", err)
	}
	if !loaded.Cert.Leaf.Equal(nid.Cert.Leaf) {
		t.Error("Load did not return the renewed certificate")
	}
	if _, err := os.Stat(filepath.Join(dir, "edge.key.next")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("edge.key.next still there after Load: %v", err)
	}
	if again, err := identity.Load(dir); err != nil || !again.Cert.Leaf.Equal(nid.Cert.Leaf) {
		t.Errorf("second Load: %v", err)
	}
	syncOnce(t, c, loaded)

	// A certificate matching neither key is an error, not a silent use of
	// the wrong key.
	if err := os.WriteFile(filepath.Join(dir, "edge.key"), oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.Load(dir); err == nil {
		t.Error("Load accepted a certificate that matches no key")
	}
}

// TestWriteFileAtomic: the file gets the content and mode asked for,
// replaces an existing one, and no temporary file is left behind.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, content := range []string{"one", "two"} {
		if err := identity.WriteFileAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p); string(got) != content {
			t.Errorf("content %q, want %q", got, content)
		}
	}
	if m := mode(t, p); m != 0o600 {
		t.Errorf("mode %v, want 0600", m)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only f", names)
	}
}

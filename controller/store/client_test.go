package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// roundTrip writes and reads back one key under the meshwan root with a
// bounded context: a refused connection must be an error, never a hang.
func roundTrip(cli *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := store.New(cli, "")
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put("probe", []byte("ok"))}); err != nil {
		return err
	}
	kv, ok, err := st.Get(ctx, "probe")
	if err != nil {
		return err
	}
	if !ok || string(kv.Value) != "ok" {
		return &wrongValue{kv.Value}
	}
	return nil
}

type wrongValue struct{ got []byte }

func (w *wrongValue) Error() string { return "read back " + string(w.got) + ", want ok" }

func newClient(t *testing.T, endpoint string, opts store.ClientOptions) *clientv3.Client {
	t.Helper()
	cli, err := store.NewClient([]string{endpoint}, opts, nil)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestClientTLSWithClientCert: against an etcd that requires client
// certificates, the client with the right CA and certificate can Put/Get;
// without a certificate, or trusting another CA (or only the system pool),
// NewClient refuses at once with an error saying why, not a hang.
func TestClientTLSWithClientCert(t *testing.T) {
	srv := etcdtest.StartTLS(t, etcdtest.TLSOptions{ClientCertAuth: true})

	good := newClient(t, srv.Endpoint, store.ClientOptions{CAFile: srv.CAFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile})
	if err := roundTrip(good); err != nil {
		t.Fatalf("right CA + client certificate: %v", err)
	}

	for _, c := range []struct {
		name string
		opts store.ClientOptions
		want string
	}{
		{"no client certificate", store.ClientOptions{CAFile: srv.CAFile}, "certificate required"},
		{"wrong CA", store.ClientOptions{CAFile: srv.OtherCAFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile}, "unknown authority"},
		// https:// and no --etcd-ca: the system pool, which does not
		// know the test CA.
		{"system pool", store.ClientOptions{CertFile: srv.CertFile, KeyFile: srv.KeyFile}, "unknown authority"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			cli, err := store.NewClient([]string{srv.Endpoint}, c.opts, nil)
			if err == nil {
				defer cli.Close()
				// Refused at the first request at the latest.
				if err := roundTrip(cli); err == nil {
					t.Fatal("served")
				}
				t.Errorf("NewClient accepted it; want a clear %q error up front", c.want)
			} else if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q", err, c.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("refusal took %v", d)
			}
		})
	}
}

// TestClientPasswordAuth: against an etcd with auth enabled (root user
// and role, and a "meshwan" user whose role may read and write only the
// meshwan root), the right password works, a wrong one is refused, and
// the role keeps the user out of other keys.
func TestClientPasswordAuth(t *testing.T) {
	srv := etcdtest.StartTLS(t, etcdtest.TLSOptions{})
	tlsOpts := store.ClientOptions{CAFile: srv.CAFile}
	admin := newClient(t, srv.Endpoint, tlsOpts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	steps := []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "meshwan"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "meshwan", store.Root, clientv3.GetPrefixRangeEnd(store.Root), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "meshwan", "s3cret"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "meshwan", "meshwan"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	dir := t.TempDir()
	pwFile := func(name, pw string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}

	opts := tlsOpts
	opts.Username, opts.PasswordFile = "meshwan", pwFile("good", "s3cret", 0o600)
	cli, err := store.NewClient([]string{srv.Endpoint}, opts, nil)
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	defer cli.Close()
	if err := roundTrip(cli); err != nil {
		t.Fatalf("right password: %v", err)
	}
	octx, ocancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ocancel()
	if _, err := cli.Put(octx, "/other/key", "x"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("write outside the meshwan root: %v, want permission denied", err)
	}

	opts.PasswordFile = pwFile("bad", "guess", 0o600)
	// clientv3 authenticates while connecting, or on the first request.
	if bad, err := store.NewClient([]string{srv.Endpoint}, opts, nil); err == nil {
		defer bad.Close()
		if err := roundTrip(bad); err == nil {
			t.Fatal("a wrong password was accepted")
		}
	} else if !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("wrong password: %v, want authentication failed", err)
	}

	opts.PasswordFile = pwFile("loose", "s3cret", 0o644)
	if _, err := store.NewClient([]string{srv.Endpoint}, opts, nil); err == nil || !strings.Contains(err.Error(), "--etcd-password-file") {
		t.Errorf("world-readable password file: %v, want refused naming --etcd-password-file", err)
	}
}

// TestClientOptionsRefused: inconsistent options are refused before
// connecting, with an error naming the flag.
func TestClientOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := "http://" + strings.Repeat("x", 10000) + ":2379"
	for _, c := range []struct {
		name      string
		endpoints []string
		opts      store.ClientOptions
		want      string
	}{
		{"cert without key", []string{"https://127.0.0.1:2379"}, store.ClientOptions{CertFile: "c.pem"}, "--etcd-cert needs --etcd-key"},
		{"key without cert", []string{"https://127.0.0.1:2379"}, store.ClientOptions{KeyFile: "k.pem"}, "--etcd-key needs --etcd-cert"},
		{"CA not PEM", []string{"https://127.0.0.1:2379"}, store.ClientOptions{CAFile: ca}, "--etcd-ca"},
		{"CA missing", []string{"https://127.0.0.1:2379"}, store.ClientOptions{CAFile: filepath.Join(dir, "none")}, "--etcd-ca"},
		{"TLS with http://", []string{"http://127.0.0.1:2379"}, store.ClientOptions{CAFile: ca}, "--etcd-endpoints"},
		{"mixed schemes", []string{"https://a:2379", "http://b:2379"}, store.ClientOptions{}, "--etcd-endpoints"},
		{"long endpoint", []string{"https://a:2379", long}, store.ClientOptions{}, "--etcd-endpoints"},
		{"user without password", []string{"https://a:2379"}, store.ClientOptions{Username: "u"}, "--etcd-password-file"},
		{"password without user", []string{"https://a:2379"}, store.ClientOptions{PasswordFile: "p"}, "--etcd-user"},
		{"password file missing", []string{"https://a:2379"}, store.ClientOptions{Username: "u", PasswordFile: filepath.Join(dir, "none")}, "--etcd-password-file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli, err := store.NewClient(c.endpoints, c.opts, nil)
			if err == nil {
				cli.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

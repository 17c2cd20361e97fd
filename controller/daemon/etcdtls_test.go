package daemon_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/store"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/metadata"
)

// TestControllerOnTLSEtcd: a whole controller runs against an external
// etcd that serves TLS and requires client certificates
// (--etcd-endpoints https://..., --etcd-ca, --etcd-cert, --etcd-key):
// it starts, stores a site there, and the site is in that etcd. Without
// the client certificate it refuses to start with an error that says
// why; TLS flags without --etcd-endpoints are refused too.
func TestControllerOnTLSEtcd(t *testing.T) {
	srv := etcdtest.StartTLS(t, etcdtest.TLSOptions{ClientCertAuth: true})
	opts := store.ClientOptions{CAFile: srv.CAFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := func(o store.ClientOptions, endpoints ...string) daemon.Config {
		return daemon.Config{DataDir: t.TempDir(), EtcdEndpoints: endpoints, Etcd: o,
			GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999"}
	}

	d, err := daemon.Start(ctx, cfg(opts, srv.Endpoint))
	if err != nil {
		t.Fatalf("controller on a TLS etcd: %v", err)
	}
	t.Cleanup(d.Close)
	admin := pb.NewAdminServiceClient(dial(t, d, nil))
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.AdminToken)
	if _, err := admin.CreateSite(actx, &pb.CreateSiteRequest{Site: site("hq", true, 1)}); err != nil {
		t.Fatal(err)
	}
	cli, err := store.NewClient([]string{srv.Endpoint}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, ok, err := store.New(cli, "").Get(ctx, "intent/sites/hq"); err != nil || !ok {
		t.Errorf("site hq in the TLS etcd: ok=%v err=%v", ok, err)
	}

	noCert := opts
	noCert.CertFile, noCert.KeyFile = "", ""
	if d, err := daemon.Start(ctx, cfg(noCert, srv.Endpoint)); err == nil {
		d.Close()
		t.Error("a controller without the client certificate started")
	} else if !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("without the client certificate: %v, want 'certificate required'", err)
	}

	if d, err := daemon.Start(ctx, cfg(opts)); err == nil {
		d.Close()
		t.Error("TLS flags without --etcd-endpoints were ignored")
	} else if !strings.Contains(err.Error(), "need --etcd-endpoints") {
		t.Errorf("TLS flags without endpoints: %v", err)
	}
}

// Command meshwan-lab brings up an interactive meshwan lab inside the VM
// (`make lab`): a few sites as network namespaces, each with its own
// meshwan-edge and charon, enrolled with a controller that runs on the host
// and is reached through qemu's user network (10.0.2.2). It declares the
// sites and topology through the admin API, starts the edges, waits until
// every LAN reaches every other, prints how to look around, and then keeps
// the lab running until the VM is stopped (Ctrl-C in `make lab`).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshwan/meshwan/e2e/lab"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	controller := flag.String("controller", "10.0.2.2:7400", "controller gRPC address as seen from the VM")
	dataDir := flag.String("controller-data-dir", "data-lab", "the host controller's --data-dir (read for admin.token and ca.crt)")
	sites := flag.String("sites", "hub1,hub2,branch1,branch2", "comma-separated site names")
	hubs := flag.String("hubs", "hub1,hub2", "which of the sites are hubs")
	mode := flag.String("topology", "hub-and-spoke", "full-mesh or hub-and-spoke")
	edgeBin := flag.String("edge-bin", "bin/meshwan-edge", "meshwan-edge binary")
	transports := flag.String("transports", "inet1", "comma-separated WAN transports of every site (at most 3; see e2e/lab)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *controller, *dataDir, strings.Split(*sites, ","), strings.Split(*hubs, ","), strings.Split(*transports, ","), *mode, *edgeBin); err != nil {
		fmt.Fprintln(os.Stderr, "meshwan-lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, controller, dataDir string, sites, hubs, transports []string, mode, edgeBin string) error {
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(dataDir, "ca.crt"))
	if err != nil {
		return err
	}
	edgeBin, _ = filepath.Abs(edgeBin)
	l, err := lab.Build(ctx, lab.Config{Dir: "/tmp/meshwan-lab", EdgeBin: edgeBin, Sites: sites, Transports: transports})
	if err != nil {
		return err
	}
	defer l.Close(context.Background())
	// Edges reach the host controller through the VM's root namespace and
	// qemu's NAT, which only accepts the guest's own address.
	if err := l.RouteToHost(ctx); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	host, _, _ := strings.Cut(controller, ":")
	conn, err := grpc.NewClient(controller, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: host})))
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(token)))
	for _, name := range l.Order {
		s := l.Sites[name]
		role := pb.SiteRole_SITE_ROLE_SPOKE
		for _, h := range hubs {
			if h == name {
				role = pb.SiteRole_SITE_ROLE_HUB
			}
		}
		var trs []*pb.Transport
		for _, t := range s.Transports {
			trs = append(trs, &pb.Transport{Name: t.Name, Address: t.Addr.String()})
		}
		_, err := admin.CreateSite(actx, &pb.CreateSiteRequest{Site: &pb.Site{Name: name, Role: role,
			Transports: trs, LanPrefixes: []string{s.LAN.String()}}})
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("create site %s: %w", name, err)
		}
	}
	topo := pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE
	if mode == "full-mesh" {
		topo = pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH
	}
	if _, err := admin.SetTopology(actx, &pb.SetTopologyRequest{Topology: &pb.Topology{Mode: topo}}); err != nil {
		return fmt.Errorf("set topology: %w", err)
	}
	for _, name := range l.Order {
		tok, err := admin.CreateEnrollmentToken(actx, &pb.CreateEnrollmentTokenRequest{Site: name})
		if err != nil {
			return err
		}
		if err := l.StartEdge(name, controller, "--token", tok.Secret, "--ca-hash", tok.CaSha256); err != nil {
			return err
		}
	}
	fmt.Println("meshwan-lab: edges started, waiting for every LAN to reach every other ...")
	start := time.Now()
	for _, a := range l.Order {
		for _, b := range l.Order {
			for a != b {
				if n, _ := l.Ping(ctx, a, b, 2); n == 2 {
					break
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
	}
	fmt.Printf("meshwan-lab: up after %v. Dashboard: http://localhost:8080 (token in %s/admin.token).\n", time.Since(start).Round(time.Second), dataDir)
	fmt.Println("meshwan-lab: edge logs are in /tmp/meshwan-lab/<site>/edge.log inside the VM. Ctrl-C stops the lab.")
	<-ctx.Done()
	return nil
}

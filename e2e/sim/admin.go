package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Admin is an AdminService client that authenticates with the admin
// bearer token over the controller's TLS, as meshwanctl would.
type Admin struct {
	pb.AdminServiceClient
	conn *grpc.ClientConn
}

// DialAdmin connects to the controller's gRPC address, verifying it
// against caPEM.
func DialAdmin(addr, token string, caPEM []byte) (*Admin, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("admin: controller CA is not PEM")
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})),
		grpc.WithPerRPCCredentials(bearer(token)),
		// ListSites and ListTunnels of a 5,000-site network are a few MB,
		// over gRPC's 4 MB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return nil, err
	}
	return &Admin{AdminServiceClient: pb.NewAdminServiceClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (a *Admin) Close() error { return a.conn.Close() }

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// Token makes a one-time enrollment token for site and returns its secret
// and the CA hash an edge pins.
func (a *Admin) Token(ctx context.Context, site string) (secret, caHash string, err error) {
	t, err := a.CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Site: site, TtlSeconds: 3600})
	if err != nil {
		return "", "", fmt.Errorf("enrollment token for %s: %w", site, err)
	}
	return t.GetSecret(), t.GetCaSha256(), nil
}

// TunnelsBySite lists every tunnel once and returns the ids each site must
// hold, the reference the edges' states are compared with.
func (a *Admin) TunnelsBySite(ctx context.Context) (map[string][]string, int, error) {
	r, err := a.ListTunnels(ctx, &pb.ListTunnelsRequest{})
	if err != nil {
		return nil, 0, fmt.Errorf("list tunnels: %w", err)
	}
	out := map[string][]string{}
	for _, t := range r.GetTunnels() {
		for _, end := range []*pb.TunnelEnd{t.GetA(), t.GetB()} {
			out[end.GetSite()] = append(out[end.GetSite()], t.GetId())
		}
	}
	return out, len(r.GetTunnels()), nil
}

// The simulated network: sites numbered 0..N-1; 0 and 1 are the hubs.
// Every site has one LAN /24 out of TransitPrefix and per transport one
// static public-looking underlay address (validation refuses private,
// shared and benchmark ranges for underlays it routes to).

// TransitPrefix holds every site's LAN; hub-and-spoke topologies name it
// in transit_prefixes so a spoke routes it via its hubs.
const TransitPrefix = "10.0.0.0/9"

// Hubs is how many hubs the hub-and-spoke network has.
const Hubs = 2

// SiteName names site i: hub1, hub2, then s00002, s00003, ...
func SiteName(i int) string {
	if i < Hubs {
		return fmt.Sprintf("hub%d", i+1)
	}
	return fmt.Sprintf("s%05d", i)
}

// LAN is site i's LAN: 10.(i>>8).(i&255).0/24 (i < 32768 stays inside
// TransitPrefix).
func LAN(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
}

// Underlay is site i's address on transport number t (0: inet1 in
// 20.0.0.0/8, 1: inet2 in 30.0.0.0/8); alt selects a second address in
// 21/31.0.0.0/8 for a transport change.
func Underlay(i, t int, alt bool) netip.Addr {
	first := byte(20 + 10*t)
	if alt {
		first++
	}
	return netip.AddrFrom4([4]byte{first, byte(i >> 8), byte(i), 1})
}

// TransportNames are the transports sites get, in order.
var TransportNames = []string{"inet1", "inet2"}

// SiteSpec is site i with its first transports transports.
func SiteSpec(i, transports int) *pb.Site {
	s := &pb.Site{Name: SiteName(i), Role: pb.SiteRole_SITE_ROLE_SPOKE, LanPrefixes: []string{LAN(i).String()}}
	if i < Hubs {
		s.Role = pb.SiteRole_SITE_ROLE_HUB
	}
	for t := range transports {
		s.Transports = append(s.Transports, &pb.Transport{Name: TransportNames[t], Address: Underlay(i, t, false).String()})
	}
	return s
}

// HubAndSpoke is the topology of the simulated fleet.
func HubAndSpoke(mtu uint32) *pb.Topology {
	return &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, Mtu: mtu, TransitPrefixes: []string{TransitPrefix}}
}

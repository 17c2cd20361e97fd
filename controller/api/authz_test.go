package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/credentials"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// serveWith serves the health service behind auth's interceptors on
// loopback and returns a client.
func serveWith(t *testing.T, auth Auth) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(auth.unary), grpc.ChainStreamInterceptor(auth.stream))
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() { s.Serve(lis); close(done) }()
	t.Cleanup(func() { s.Stop(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func fakeAuthenticate(tok string) (credentials.Principal, error) {
	switch tok {
	case "ro":
		return credentials.Principal{ID: "r", Role: credentials.ReadOnly}, nil
	case "op":
		return credentials.Principal{ID: "o", Role: credentials.Operator}, nil
	}
	return credentials.Principal{}, credentials.ErrUnauthenticated
}

// TestMethodMissingFromTableRefused: deny by default, unary and streaming,
// whatever the caller presents.
func TestMethodMissingFromTableRefused(t *testing.T) {
	c := serveWith(t, Auth{Authenticate: fakeAuthenticate, Table: map[string]Access{}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer op")
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("unary: %v, want PermissionDenied", err)
	}
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("streaming: %v, want PermissionDenied", err)
	}
}

// TestRoleRequirement: a streaming method that needs operator refuses no
// credential (Unauthenticated) and read_only (PermissionDenied), and
// passes operator through to the handler.
func TestRoleRequirement(t *testing.T) {
	c := serveWith(t, Auth{Authenticate: fakeAuthenticate, Table: map[string]Access{
		"/grpc.health.v1.Health/Watch": operator, "/grpc.health.v1.Health/Check": readOnly}})
	base, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := func(tok string) error {
		ctx := base
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		ctx, stop := context.WithCancel(ctx)
		defer stop()
		w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return err
	}
	for _, tc := range []struct {
		tok  string
		want codes.Code
	}{{"", codes.Unauthenticated}, {"nope", codes.Unauthenticated}, {"ro", codes.PermissionDenied}, {"op", codes.OK}} {
		if err := watch(tc.tok); status.Code(err) != tc.want {
			t.Errorf("Watch with %q: %v, want %v", tc.tok, err, tc.want)
		}
	}
	ctx := metadata.AppendToOutgoingContext(base, "authorization", "Bearer ro")
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("Check as read_only: %v", err)
	}
	// The principal header is ignored from a network peer.
	ctx = metadata.AppendToOutgoingContext(base, principalHeader, encodePrincipal(credentials.Principal{ID: "x", Role: credentials.Admin}))
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a principal header from the network: %v, want Unauthenticated", err)
	}
}

func TestPrincipalEncoding(t *testing.T) {
	p := credentials.Principal{ID: "0123456789abcdef", Name: "dashboard session of x", Role: credentials.Operator}
	if got, ok := decodePrincipal(encodePrincipal(p)); !ok || got != p {
		t.Errorf("round trip: %+v %v", got, ok)
	}
	for _, bad := range []string{"", "9 a b", "2 a", "x a b", "22 a b"} {
		if _, ok := decodePrincipal(bad); ok {
			t.Errorf("decoded %q", bad)
		}
	}
}

// TestMessageSizesHaveMargin measures the two big messages against the
// limits: a hub's report of 5,000 tunnels (every field filled, BGP sessions
// and class paths too) and a 5,000-site network apply, as protobuf and as
// REST JSON. The limits must leave a margin of at least four.
func TestMessageSizesHaveMargin(t *testing.T) {
	rep := &pb.EdgeReport{AppliedVersion: 1 << 40}
	for i := range 5000 {
		id := fmt.Sprintf("hub-%02d.inet1~branch-%05d.inet1", i%2, i)
		rep.Tunnels = append(rep.Tunnels, &pb.TunnelStatus{TunnelId: id, State: pb.TunnelState_TUNNEL_STATE_DEGRADED,
			LinkUp: true, IkeState: "ESTABLISHED", ChildState: "INSTALLED", BytesIn: 1 << 50, BytesOut: 1 << 50, PacketsIn: 1 << 40, PacketsOut: 1 << 40,
			Detail: "probe loss 12% over the last 100 probes", Probed: true, ProbeState: "up", RttMs: 123.456, RttP99Ms: 234.567, JitterMs: 12.345,
			LossPct: 12.5, Transitions: 1 << 20, Usable: true, PskSerial: 1 << 20})
		rep.BgpPeers = append(rep.BgpPeers, &pb.BGPPeerStatus{Neighbor: "10.255.255.254", Asn: 4200099999, TunnelId: id, State: "established", Received: 1000, Accepted: 1000, Advertised: 1000})
		rep.ClassPaths = append(rep.ClassPaths, &pb.ClassPath{TrafficClass: "voice", RemoteSite: fmt.Sprintf("branch-%05d", i), TunnelId: id, MeetsSla: true})
	}
	reportSize := proto.Size(&pb.SyncRequest{Msg: &pb.SyncRequest_Report{Report: rep}})
	apply := &pb.ApplyNetworkRequest{Topology: &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE}}
	for i := range 5000 {
		apply.Sites = append(apply.Sites, &pb.Site{Name: fmt.Sprintf("branch-%05d", i), Role: pb.SiteRole_SITE_ROLE_SPOKE, Asn: 4200000000 + uint32(i),
			Transports:  []*pb.Transport{{Name: "inet1", Address: fmt.Sprintf("198.%d.%d.1", 18+i/256, i%256)}, {Name: "lte", Address: "dynamic"}},
			LanPrefixes: []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), fmt.Sprintf("172.16.%d.0/28", i%256)}})
	}
	applyProto := proto.Size(apply)
	applyJSON, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(apply)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("5,000-tunnel report: %d bytes protobuf (limit %d); 5,000-site apply: %d bytes protobuf, %d bytes JSON (limit %d)",
		reportSize, MaxGRPCMessage, applyProto, len(applyJSON), MaxApplyBody)
	if 4*reportSize > MaxGRPCMessage || 4*applyProto > MaxGRPCMessage || 4*len(applyJSON) > MaxApplyBody {
		t.Error("a limit leaves less than a margin of four")
	}
}

// TestDocsListTheTable: docs/api.md shows the method table as the code has
// it (regenerate the block from TableMarkdown when this fails).
func TestDocsListTheTable(t *testing.T) {
	raw, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- authz-table:begin (generated from controller/api.MethodTable; TestDocsListTheTable) -->\n", "<!-- authz-table:end -->"
	doc := string(raw)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/api.md lacks the markers %q ... %q", begin, end)
	}
	if got, want := doc[i+len(begin):j], TableMarkdown(); got != want {
		t.Errorf("docs/api.md's method table differs from the code's; put this between the markers:\n%s", want)
	}
}

func TestTruncatedErrors(t *testing.T) {
	huge := strings.Repeat("z", 10<<20)
	err := toStatus(nil, "x", wrapf(errTooLarge, "request of 10485760 bytes"))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("too large: %v", err)
	}
	if _, err := credentials.ParseRole(huge); err == nil || len(err.Error()) > 200 || !errors.Is(err, credentials.ErrInvalid) {
		t.Errorf("huge role: %d bytes", len(err.Error()))
	}
}

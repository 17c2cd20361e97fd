package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"

	"github.com/meshwan/meshwan/controller/enroll"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
)

// NewGRPCServer returns the controller's gRPC server: TLS with the CA's
// server certificate (cert is asked at every handshake, so a rotated
// certificate applies to new connections without a restart), client
// certificates verified when presented (edges), AdminService and
// EdgeService, the standard health service and reflection. Every call,
// unary or streaming, is authorized by auth's method table (authz.go);
// received messages are bounded by MaxGRPCMessage, and unary requests
// other than ApplyNetwork by MaxUnaryRequest.
func NewGRPCServer(cert func() *tls.Certificate, ca *enroll.CA, auth Auth, admin *Admin, edge *Edge) (*grpc.Server, *health.Server) {
	tlsCfg := &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert(), nil },
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      ca.Pool(),
		MinVersion:     tls.VersionTLS13,
	}
	s := grpc.NewServer(grpc.Creds(grpccreds.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(MaxGRPCMessage),
		grpc.ChainUnaryInterceptor(boundUnary, auth.unary, limitUnary),
		grpc.ChainStreamInterceptor(boundStream, auth.stream))
	pb.RegisterAdminServiceServer(s, admin)
	pb.RegisterEdgeServiceServer(s, edge)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs
}

// limitUnary refuses a decoded unary request larger than MaxUnaryRequest
// (ApplyNetwork may use all of MaxGRPCMessage): a 10 MB site name is
// refused before any handler, with an error that does not quote it.
func limitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok && info.FullMethod != applyNetworkRPC {
		if n := proto.Size(m); n > MaxUnaryRequest {
			return nil, toStatus(nil, info.FullMethod, wrapf(errTooLarge, fmt.Sprintf("request of %d bytes: %s takes at most %d", n, shortMethod(info.FullMethod), MaxUnaryRequest)))
		}
	}
	return h(ctx, req)
}

// boundUnary and boundStream cut every error message leaving the server
// (MaxErrorMessage), whichever layer made it.
func boundUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, boundStatus(err)
}

func boundStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return boundStatus(h(srv, ss))
}

func discard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

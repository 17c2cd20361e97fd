package api

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"log/slog"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/meshwan/meshwan/controller/enroll"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"
)

// Auth checks the admin bearer token. The token protects AdminService on
// gRPC and /v1 on HTTP; EdgeService authenticates edges by certificate
// instead, and reflection and health stay open for tooling.
type Auth struct {
	Token string
	// Session, when set, lets /v1 accept a browser request without the
	// bearer header: it reports whether the request carries a valid
	// dashboard session (and, for a state-changing method, the proof
	// against cross-site request forgery the dashboard requires).
	Session func(r *http.Request) bool
}

func (a Auth) check(header string) bool {
	got, ok := strings.CutPrefix(header, "Bearer ")
	return ok && a.Token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) == 1
}

const adminPrefix = "/" + "meshwan.v1.AdminService/"

func (a Auth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, adminPrefix) {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get("authorization"); len(v) != 1 || !a.check(v[0]) {
			return nil, toStatus(nil, info.FullMethod, errUnauthenticatedAdmin)
		}
	}
	return h(ctx, req)
}

var errUnauthenticatedAdmin = wrapf(errUnauthenticated, "admin API: missing or wrong bearer token (header authorization: Bearer <token from --admin-token-file>)")

// Middleware guards an HTTP handler with the admin token, or with the
// dashboard session when the request has no Authorization header.
func (a Auth) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		ok := a.check(header) || header == "" && a.Session != nil && a.Session(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshwan"`)
			http.Error(w, `{"code":16,"message":"`+errUnauthenticatedAdmin.Error()+`"}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// NewGRPCServer returns the controller's gRPC server: TLS with the CA's
// server certificate (cert is asked at every handshake, so a rotated
// certificate applies to new connections without a restart), client
// certificates verified when presented (edges), AdminService and
// EdgeService, the standard health service and reflection.
func NewGRPCServer(cert func() *tls.Certificate, ca *enroll.CA, auth Auth, admin *Admin, edge *Edge) (*grpc.Server, *health.Server) {
	tlsCfg := &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert(), nil },
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      ca.Pool(),
		MinVersion:     tls.VersionTLS13,
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)), grpc.ChainUnaryInterceptor(auth.unary))
	pb.RegisterAdminServiceServer(s, admin)
	pb.RegisterEdgeServiceServer(s, edge)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs
}

// NewGateway returns the REST/JSON handler for AdminService (mounted under
// /v1), calling admin in-process. JSON field names are the proto names
// (snake_case), as in the docs.
func NewGateway(ctx context.Context, admin *Admin) (http.Handler, error) {
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}))
	if err := pb.RegisterAdminServiceHandlerServer(ctx, mux, admin); err != nil {
		return nil, err
	}
	return mux, nil
}

func discard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

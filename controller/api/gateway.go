package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/meshwan/meshwan/controller/credentials"
	"github.com/meshwan/meshwan/controller/intent"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
)

// Why REST goes over gRPC: grpc-gateway's in-process registration
// (RegisterAdminServiceHandlerServer) calls the handlers directly and so
// skips every gRPC interceptor; an authorization check in the HTTP
// middleware would need its own route -> method map, a second truth that
// could drift from the table. Instead /v1 calls the same grpc.Server over
// an in-memory connection: the interceptors, the method table and the
// message-size limits apply to REST exactly as to gRPC. The HTTP side only
// authenticates (bearer token, or dashboard session) and hands the
// principal over in metadata that the interceptors accept from this
// connection alone. The cost is one protobuf encode/decode and an
// in-memory TLS session per call.

// Size limits. Measured by TestMessageSizesHaveMargin: a 5,000-site
// network apply is 1.2 MB of JSON (0.5 MB as protobuf) and a hub's report
// of 5,000 tunnels, every field filled, 1.7 MB; 16 MiB leaves a margin of
// nine or more for the two big messages. Everything else is small and gets
// 1 MiB.
const (
	MaxRESTBody      = 1 << 20  // every /v1 body but network:apply
	MaxApplyBody     = 16 << 20 // POST /v1/network:apply
	MaxGRPCMessage   = 16 << 20 // any gRPC message received (grpc.MaxRecvMsgSize)
	MaxUnaryRequest  = 1 << 20  // a unary request other than ApplyNetwork, once decoded
	applyNetworkPath = "/v1/network:apply"
	applyNetworkRPC  = "/meshwan.v1.AdminService/ApplyNetwork"
)

// Inproc is the in-memory listener the gRPC server also serves, for the
// REST gateway. Its connections' peer address is inprocAddr.
type Inproc struct{ l *bufconn.Listener }

// NewInproc returns an in-memory listener.
func NewInproc() *Inproc { return &Inproc{l: bufconn.Listen(1 << 20)} }

// Accept implements net.Listener.
func (i *Inproc) Accept() (net.Conn, error) {
	c, err := i.l.Accept()
	if err != nil {
		return nil, err
	}
	return inprocConn{c}, nil
}

// Close implements net.Listener.
func (i *Inproc) Close() error { return i.l.Close() }

// Addr implements net.Listener.
func (i *Inproc) Addr() net.Addr { return inprocAddr{} }

type inprocConn struct{ net.Conn }

func (inprocConn) RemoteAddr() net.Addr { return inprocAddr{} }
func (inprocConn) LocalAddr() net.Addr  { return inprocAddr{} }

// DialGateway connects to the server over in (TLS verified against the CA,
// the server certificate covers "localhost"). The caller closes the conn.
func DialGateway(in *Inproc, ca *x509.CertPool) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///inproc",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return in.l.DialContext(ctx) }),
		grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{RootCAs: ca, ServerName: "localhost", MinVersion: tls.VersionTLS13})),
		// Responses (a large network's lists) may exceed gRPC's 4 MB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(MaxGRPCMessage)))
}

type httpPrincipalKey struct{}

// NewGateway returns the REST/JSON handler for AdminService (to mount under
// /v1): it authenticates the request, bounds its body, refuses a site PUT
// whose body names another site than its path, and calls the server over
// conn (see above). JSON field names are the proto names (snake_case), as
// in the docs.
func NewGateway(ctx context.Context, conn *grpc.ClientConn, auth Auth) (http.Handler, error) {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
		// No client header becomes metadata (Grpc-Metadata-* included): the
		// principal below is the only identity the server sees from here.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		// The gateway's own JSON errors quote the offending value: cut them.
		runtime.WithErrorHandler(func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
			runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, boundStatus(err))
		}),
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			if p, ok := r.Context().Value(httpPrincipalKey{}).(credentials.Principal); ok {
				return metadata.Pairs(principalHeader, encodePrincipal(p))
			}
			return nil
		}),
	)
	if err := pb.RegisterAdminServiceHandlerClient(ctx, mux, pb.NewAdminServiceClient(conn)); err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := auth.httpPrincipal(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshwan"`)
			writeError(w, r, err)
			return
		}
		if err := limitBody(w, r); err != nil {
			writeError(w, r, err)
			return
		}
		if err := checkSitePath(r); err != nil {
			writeError(w, r, err)
			return
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), httpPrincipalKey{}, p)))
	}), nil
}

// RequireRole guards a plain HTTP handler (pprof) with a credential of at
// least role, authenticated like /v1.
func (a Auth) RequireRole(role credentials.Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.httpPrincipal(r)
		if err == nil && p.Role < role {
			err = wrapf(errPermission, fmt.Sprintf("credential %s (%s) has role %s; %s needs %s", p.ID, p.Name, p.Role, r.URL.Path, role))
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshwan"`)
			writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// httpPrincipal authenticates an HTTP request: the bearer token when there
// is an Authorization header, else the dashboard session.
func (a Auth) httpPrincipal(r *http.Request) (credentials.Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || a.Authenticate == nil {
			return credentials.Principal{}, errNoCredential
		}
		p, err := a.Authenticate(strings.TrimSpace(tok))
		if err != nil {
			return credentials.Principal{}, errNoCredential
		}
		return p, nil
	}
	if a.Session != nil {
		if p, ok := a.Session(r); ok {
			return p, nil
		}
	}
	return credentials.Principal{}, errNoCredential
}

var errTooLarge = errors.New("request too large")

// limitBody reads the whole body up to its limit (the gateway would
// otherwise read an unbounded one), so a too-large body is refused with
// 413 before anything is decoded, and the error never quotes it.
func limitBody(w http.ResponseWriter, r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	limit := int64(MaxRESTBody)
	if r.URL.Path == applyNetworkPath {
		limit = MaxApplyBody
	}
	tooLarge := wrapf(errTooLarge, fmt.Sprintf("request body: more than %d bytes (%s takes up to %d)", limit, applyNetworkPath, MaxApplyBody))
	if r.ContentLength > limit {
		return tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge
		}
		return wrapf(intent.ErrInvalid, "request body: "+err.Error())
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	return nil
}

// checkSitePath refuses PUT /v1/sites/{name} whose body names another
// site: the gateway would silently apply the body to the path's site.
func checkSitePath(r *http.Request) error {
	if r.Method != http.MethodPut {
		return nil
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/sites/")
	if !ok || rest == "" || strings.ContainsAny(rest, "/:") {
		return nil
	}
	pathName, err := url.PathUnescape(rest)
	if err != nil {
		return wrapf(intent.ErrInvalid, "path: site name is not valid URL encoding")
	}
	body, _ := io.ReadAll(r.Body) // already in memory (limitBody)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var site struct {
		Name *string `json:"name"`
	}
	if json.Unmarshal(body, &site) != nil || site.Name == nil || *site.Name == "" || *site.Name == pathName {
		return nil // malformed JSON is the gateway's to refuse; no name means the path's
	}
	return wrapf(intent.ErrInvalid, fmt.Sprintf("site.name: the body names site %q but the path names site %q; rename a site by deleting and re-creating it",
		credentials.Truncate(*site.Name), credentials.Truncate(pathName)))
}

// writeError writes a domain error as the gateway writes a status: JSON
// {code, message} with the HTTP status of the code from the one table
// (413 rather than 429 for a too-large body).
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	s, _ := status.FromError(toStatus(nil, r.URL.Path, err))
	code := runtime.HTTPStatusFromCode(s.Code())
	if errors.Is(err, errTooLarge) {
		code = http.StatusRequestEntityTooLarge
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{int(s.Code()), s.Message()})
}

package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"

	"github.com/meshwan/meshwan/controller/credentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Authorization is deny-by-default: MethodTable names every gRPC method the
// controller serves and what a caller needs for it. The interceptors look
// the method up for every call, unary and streaming; a method missing from
// the table is refused (PermissionDenied), so an RPC added to a proto
// without a row here cannot be called at all. REST (/v1) reaches the same
// server over an in-process gRPC connection (gateway.go), so this table is
// the one place that decides for both.

// Access is what a method requires.
type Access struct {
	// Public methods are open to anyone who reaches the port (they
	// authenticate by what the request carries, e.g. an enrollment token).
	Public bool
	// Edge methods need a client certificate issued by the controller CA;
	// the handler then checks it is the site's current one.
	Edge bool
	// Role is the least admin role needed (when neither Public nor Edge).
	Role credentials.Role
}

func (a Access) String() string {
	switch {
	case a.Public:
		return "public"
	case a.Edge:
		return "edge certificate"
	}
	return a.Role.String()
}

var (
	public   = Access{Public: true}
	edgeCert = Access{Edge: true}
	readOnly = Access{Role: credentials.ReadOnly}
	operator = Access{Role: credentials.Operator}
	admin    = Access{Role: credentials.Admin}
)

// MethodTable is every method of every service the gRPC server registers.
// TestEveryMethodIsInTheTable (controller/daemon) checks it against the
// real server's services; docs/api.md lists it (TestDocsListTheTable).
var MethodTable = map[string]Access{
	"/meshwan.v1.AdminService/GetSite":               readOnly,
	"/meshwan.v1.AdminService/ListSites":             readOnly,
	"/meshwan.v1.AdminService/GetTopology":           readOnly,
	"/meshwan.v1.AdminService/ListTunnels":           readOnly,
	"/meshwan.v1.AdminService/GetTunnel":             readOnly,
	"/meshwan.v1.AdminService/ListEnrollmentTokens":  readOnly,
	"/meshwan.v1.AdminService/ListDevices":           readOnly,
	"/meshwan.v1.AdminService/CreateSite":            operator,
	"/meshwan.v1.AdminService/UpdateSite":            operator,
	"/meshwan.v1.AdminService/DeleteSite":            operator,
	"/meshwan.v1.AdminService/SetTopology":           operator,
	"/meshwan.v1.AdminService/ApplyNetwork":          operator,
	"/meshwan.v1.AdminService/CreateEnrollmentToken": operator,
	"/meshwan.v1.AdminService/RevokeEnrollmentToken": operator,
	"/meshwan.v1.AdminService/ApproveDevice":         operator,
	"/meshwan.v1.AdminService/RejectDevice":          operator,
	"/meshwan.v1.AdminService/RotateTunnelKeys":      operator,
	// The only way an unmanaged site's keys leave the controller; each
	// call is audited (an event and a log line with the credential).
	"/meshwan.v1.AdminService/ExportSiteConfig": operator,
	// Identities say which certificate each site holds; revoking one cuts
	// a site off: both are for admins.
	"/meshwan.v1.AdminService/ListSiteIdentities": admin,
	"/meshwan.v1.AdminService/RevokeSiteIdentity": admin,
	"/meshwan.v1.AdminService/CreateCredential":   admin,
	"/meshwan.v1.AdminService/ListCredentials":    admin,
	"/meshwan.v1.AdminService/RevokeCredential":   admin,
	// Enroll and Claim authenticate by the token in the request.
	"/meshwan.v1.EdgeService/Enroll": public,
	"/meshwan.v1.EdgeService/Claim":  public,
	"/meshwan.v1.EdgeService/Sync":   edgeCert,
	"/meshwan.v1.EdgeService/Renew":  edgeCert,
	// Tooling: load balancers' health checks and grpcurl.
	"/grpc.health.v1.Health/Check":                                   public,
	"/grpc.health.v1.Health/List":                                    public,
	"/grpc.health.v1.Health/Watch":                                   public,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      public,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": public,
}

// Methods lists the table's methods, sorted.
func Methods() []string {
	out := make([]string, 0, len(MethodTable))
	for m := range MethodTable {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Auth authenticates callers and authorizes them by the method table.
type Auth struct {
	// Authenticate turns a bearer token into a principal (credentials.Service).
	Authenticate func(token string) (credentials.Principal, error)
	// Session, when set, authenticates a /v1 request without an
	// Authorization header by the dashboard session it carries (including,
	// for a state-changing method, the proof against cross-site request
	// forgery the dashboard requires).
	Session func(r *http.Request) (credentials.Principal, bool)
	// Table overrides MethodTable (tests).
	Table map[string]Access
	Log   *slog.Logger
}

type principalKey struct{}

// PrincipalFrom returns who the call authenticated as (ok false for public
// and edge methods).
func PrincipalFrom(ctx context.Context) (credentials.Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(credentials.Principal)
	return p, ok
}

var (
	errNoCredential = wrapf(errUnauthenticated, "admin API: missing or invalid credential (header authorization: Bearer <token from --admin-token-file or meshwanctl credential create>)")
	errNoEdgeCert   = wrapf(errUnauthenticated, "edge API: a client certificate from the controller CA is required")
)

// authorize decides one call. The principal of a /v1 request comes from the
// in-process gateway connection only (principalHeader); any other peer
// must present a bearer token.
func (a Auth) authorize(ctx context.Context, method string) (context.Context, error) {
	table := a.Table
	if table == nil {
		table = MethodTable
	}
	need, ok := table[method]
	switch {
	case !ok:
		discard(a.Log).Warn("call to a method without authorization rule refused", "method", method)
		return nil, toStatus(nil, method, wrapf(errPermission, "method "+method+" is not in the authorization table"))
	case need.Public:
		return ctx, nil
	case need.Edge:
		if peerCert(ctx) == nil {
			return nil, toStatus(nil, method, errNoEdgeCert)
		}
		return ctx, nil
	}
	p, err := a.principal(ctx)
	if err != nil {
		return nil, toStatus(nil, method, err)
	}
	if p.Role < need.Role {
		return nil, toStatus(nil, method, wrapf(errPermission, fmt.Sprintf("credential %s (%s) has role %s; %s needs %s", p.ID, p.Name, p.Role, shortMethod(method), need.Role)))
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

func (a Auth) principal(ctx context.Context) (credentials.Principal, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if pr, ok := peer.FromContext(ctx); ok {
		if _, inproc := pr.Addr.(inprocAddr); inproc {
			if v := md.Get(principalHeader); len(v) == 1 {
				if p, ok := decodePrincipal(v[0]); ok {
					return p, nil
				}
			}
			return credentials.Principal{}, errNoCredential
		}
	}
	v := md.Get("authorization")
	if len(v) != 1 || a.Authenticate == nil {
		return credentials.Principal{}, errNoCredential
	}
	tok, ok := strings.CutPrefix(v[0], "Bearer ")
	if !ok {
		return credentials.Principal{}, errNoCredential
	}
	p, err := a.Authenticate(strings.TrimSpace(tok))
	if err != nil {
		return credentials.Principal{}, errNoCredential
	}
	return p, nil
}

func shortMethod(m string) string { return m[strings.LastIndexByte(m, '/')+1:] }

func (a Auth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a Auth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &authedStream{ServerStream: ss, ctx: ctx})
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }

// principalHeader carries the principal of a /v1 request from the HTTP
// side to the interceptors, over the in-process connection only: it is
// ignored from any other peer, and the gateway forwards no client header
// into metadata (gateway.go), so an HTTP client cannot set it.
const principalHeader = "x-meshwan-principal"

func encodePrincipal(p credentials.Principal) string {
	return fmt.Sprintf("%d %s %s", int(p.Role), p.ID, p.Name)
}

func decodePrincipal(s string) (credentials.Principal, bool) {
	f := strings.SplitN(s, " ", 3)
	if len(f) != 3 || len(f[0]) != 1 {
		return credentials.Principal{}, false
	}
	r := credentials.Role(f[0][0] - '0')
	if !r.Valid() {
		return credentials.Principal{}, false
	}
	return credentials.Principal{Role: r, ID: f[1], Name: f[2]}, true
}

// inprocAddr is the peer address of the in-process gateway connection; no
// network peer can have it.
type inprocAddr struct{}

func (inprocAddr) Network() string { return "inproc" }
func (inprocAddr) String() string  { return "inproc:gateway" }

var _ net.Addr = inprocAddr{}

// TableMarkdown renders the method table for docs/api.md (between the
// markers TestDocsListTheTable checks): one row per requirement, the
// methods that need it.
func TableMarkdown() string {
	order := []Access{public, edgeCert, readOnly, operator, admin}
	var b strings.Builder
	b.WriteString("| needs | methods |\n| --- | --- |\n")
	for _, need := range order {
		var ms []string
		for _, m := range Methods() {
			if MethodTable[m] == need {
				ms = append(ms, "`"+strings.TrimPrefix(m, "/")+"`")
			}
		}
		fmt.Fprintf(&b, "| %s | %s |\n", need, strings.Join(ms, ", "))
	}
	return b.String()
}

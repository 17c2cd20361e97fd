package daemon_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/api"
	"github.com/meshwan/meshwan/controller/credentials"
	"github.com/meshwan/meshwan/controller/daemon"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/meshwan/meshwan/web"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"gopkg.in/yaml.v3"
)

// roleTokens creates one credential per role (and returns the bootstrap
// token as admin's second): index 0 is "no credential".
func roleTokens(t *testing.T, e *env) map[credentials.Role]string {
	t.Helper()
	out := map[credentials.Role]string{}
	for _, r := range []credentials.Role{credentials.ReadOnly, credentials.Operator, credentials.Admin} {
		resp, err := e.admin.CreateCredential(e.ctx, &pb.CreateCredentialRequest{Name: "test-" + r.String(), Role: pb.AdminRole(r)})
		if err != nil {
			t.Fatal(err)
		}
		out[r] = resp.GetSecret()
	}
	return out
}

// TestEveryMethodIsInTheTable enumerates every method of every service the
// real server registers and checks, over real gRPC on loopback, unary and
// streaming alike: the table has a rule for it; without a credential an
// admin method is Unauthenticated and an edge method too (no client
// certificate); with each role below the method's it is PermissionDenied;
// with the method's role it passes authorization (whatever the handler
// then says about the empty request).
func TestEveryMethodIsInTheTable(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	tokens := roleTokens(t, e)
	conn := dial(t, e.d, nil)
	ctx := e.ctx
	call := func(method string, streaming bool, token string) error {
		c := metadata.NewOutgoingContext(ctx, metadata.MD{})
		if token != "" {
			c = metadata.AppendToOutgoingContext(c, "authorization", "Bearer "+token)
		}
		if !streaming {
			return conn.Invoke(c, method, &emptypb.Empty{}, &emptypb.Empty{})
		}
		s, err := conn.NewStream(c, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
		if err != nil {
			return err
		}
		s.SendMsg(&emptypb.Empty{})
		s.CloseSend()
		return s.RecvMsg(&emptypb.Empty{})
	}
	seen := map[string]bool{}
	for svc, info := range e.d.GRPCServices() {
		for _, m := range info.Methods {
			method := "/" + svc + "/" + m.Name
			seen[method] = true
			streaming := m.IsClientStream || m.IsServerStream
			need, ok := api.MethodTable[method]
			if !ok {
				t.Errorf("%s (streaming %v) is served but has no authorization rule", method, streaming)
				continue
			}
			if need.Public {
				continue
			}
			if err := call(method, streaming, ""); status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s without credential: %v, want Unauthenticated", method, err)
			}
			if need.Edge {
				// A bearer token is no edge certificate.
				if err := call(method, streaming, e.d.AdminToken); status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s with the admin token: %v, want Unauthenticated", method, err)
				}
				continue
			}
			if err := call(method, streaming, "0123456789abcdef.not-a-secret"); status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s with a wrong credential: %v, want Unauthenticated", method, err)
			}
			for r := credentials.ReadOnly; r <= credentials.Admin; r++ {
				err := call(method, streaming, tokens[r])
				code := status.Code(err)
				if r < need.Role && code != codes.PermissionDenied {
					t.Errorf("%s as %s (needs %s): %v, want PermissionDenied", method, r, need.Role, err)
				}
				if r >= need.Role && (code == codes.PermissionDenied || code == codes.Unauthenticated) {
					t.Errorf("%s as %s (needs %s): refused: %v", method, r, need.Role, err)
				}
			}
		}
	}
	for m := range api.MethodTable {
		if !seen[m] {
			t.Errorf("the table names %s, which the server does not serve", m)
		}
	}
	if len(seen) < 30 {
		t.Errorf("only %d methods enumerated", len(seen))
	}
}

type gatewayRule struct {
	Selector string `yaml:"selector"`
	Get      string `yaml:"get"`
	Post     string `yaml:"post"`
	Put      string `yaml:"put"`
	Delete   string `yaml:"delete"`
}

// restRoutes reads every /v1 route from the gateway config.
func restRoutes(t *testing.T) []gatewayRule {
	raw, err := os.ReadFile("../../proto/meshwan/v1/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		HTTP struct {
			Rules []gatewayRule `yaml:"rules"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.HTTP.Rules
}

func (r gatewayRule) route() (method, path string) {
	for _, mp := range [][2]string{{"GET", r.Get}, {"POST", r.Post}, {"PUT", r.Put}, {"DELETE", r.Delete}} {
		if mp[1] != "" {
			method, path = mp[0], mp[1]
		}
	}
	// Fill the path parameters with a name that exists nowhere.
	for strings.Contains(path, "{") {
		i, j := strings.Index(path, "{"), strings.Index(path, "}")
		path = path[:i] + "nosuch" + path[j+1:]
	}
	return method, path
}

// TestEveryRESTRouteAuthorized calls every /v1 route of the gateway config
// without a credential (401), with each role below the method's (403) and
// with the method's role (neither), over real HTTP.
func TestEveryRESTRouteAuthorized(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	tokens := roleTokens(t, e)
	rules := restRoutes(t)
	if len(rules) < 20 {
		t.Fatalf("only %d routes in gateway.yaml", len(rules))
	}
	for _, rule := range rules {
		method, path := rule.route()
		rpc := "/" + strings.Replace(rule.Selector, ".AdminService.", ".AdminService/", 1)
		need, ok := api.MethodTable[rpc]
		if !ok {
			t.Errorf("%s %s -> %s: no authorization rule", method, path, rpc)
			continue
		}
		do := func(token string) int {
			code, _ := restAs(t, e, method, path, "{}", token)
			return code
		}
		if code := do(""); code != http.StatusUnauthorized {
			t.Errorf("%s %s without credential: %d, want 401", method, path, code)
		}
		for r := credentials.ReadOnly; r <= credentials.Admin; r++ {
			code := do(tokens[r])
			if r < need.Role && code != http.StatusForbidden {
				t.Errorf("%s %s as %s (needs %s): %d, want 403", method, path, r, need.Role, code)
			}
			if r >= need.Role && (code == http.StatusForbidden || code == http.StatusUnauthorized) {
				t.Errorf("%s %s as %s (needs %s): %d", method, path, r, need.Role, code)
			}
		}
	}
}

func restAs(t *testing.T, e *env, method, path, body, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.d.HTTPURL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCredentialsLifecycle: a credential made through the API works at
// once, lists without its secret, and once revoked is refused over gRPC
// and REST; a client's forged principal header is ignored.
func TestCredentialsLifecycle(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	resp, err := e.admin.CreateCredential(e.ctx, &pb.CreateCredentialRequest{Name: "ci", Role: pb.AdminRole_ADMIN_ROLE_OPERATOR, TtlSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	c, secret := resp.GetCredential(), resp.GetSecret()
	if c.GetExpiresAt() == nil || c.GetRole() != pb.AdminRole_ADMIN_ROLE_OPERATOR {
		t.Errorf("created %+v", c)
	}
	if code, body := restAs(t, e, "POST", "/v1/sites", `{"name":"hq","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/24"]}`, secret); code != 200 {
		t.Fatalf("operator creates a site: %d %s", code, body)
	}
	_, body := restAs(t, e, "GET", "/v1/credentials", "", e.d.AdminToken)
	if !strings.Contains(body, c.GetId()) || strings.Contains(body, strings.SplitN(secret, ".", 2)[1]) {
		t.Errorf("list: %s", body)
	}
	if code, _ := restAs(t, e, "GET", "/v1/credentials", "", secret); code != 403 {
		t.Errorf("operator lists credentials: %d, want 403", code)
	}
	// A forged principal header over REST does not make a read-only caller admin.
	ro, err := e.admin.CreateCredential(e.ctx, &pb.CreateCredentialRequest{Name: "ro", Role: pb.AdminRole_ADMIN_ROLE_READ_ONLY})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.d.HTTPURL+"/v1/credentials", nil)
	req.Header.Set("Authorization", "Bearer "+ro.GetSecret())
	req.Header.Set("Grpc-Metadata-X-Meshwan-Principal", "3 bootstrap admin.token")
	req.Header.Set("X-Meshwan-Principal", "3 bootstrap admin.token")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 403 {
		t.Errorf("forged principal header: %v %v, want 403", r, err)
	}
	// ...nor over gRPC.
	fctx := metadata.AppendToOutgoingContext(e.ctx, "x-meshwan-principal", "3 bootstrap admin.token")
	if _, err := pb.NewAdminServiceClient(dial(t, e.d, nil)).ListCredentials(metadata.NewOutgoingContext(fctx, metadata.Pairs("x-meshwan-principal", "3 bootstrap admin.token")), &pb.ListCredentialsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC with only a forged principal: %v, want Unauthenticated", err)
	}

	if _, err := e.admin.RevokeCredential(e.ctx, &pb.RevokeCredentialRequest{Id: c.GetId()}); err != nil {
		t.Fatal(err)
	}
	if code, _ := restAs(t, e, "GET", "/v1/sites", "", secret); code != 401 {
		t.Errorf("revoked credential over REST: %d, want 401", code)
	}
	octx := metadata.NewOutgoingContext(e.ctx, metadata.Pairs("authorization", "Bearer "+secret))
	if _, err := e.admin.ListSites(octx, &pb.ListSitesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("revoked credential over gRPC: %v", err)
	}
	if _, err := e.admin.CreateCredential(e.ctx, &pb.CreateCredentialRequest{Name: strings.Repeat("n", 100), Role: pb.AdminRole_ADMIN_ROLE_ADMIN}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("long name: %v", err)
	}
	if _, err := e.admin.CreateCredential(e.ctx, &pb.CreateCredentialRequest{Name: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no role: %v", err)
	}
}

// TestOversizedRequests: a 10 MB site name is refused over REST (413) and
// gRPC (ResourceExhausted) with a short error, and nothing is stored.
func TestOversizedRequests(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	huge := strings.Repeat("a", 10<<20)
	code, body := restAs(t, e, "POST", "/v1/sites", `{"name":"`+huge+`"}`, e.d.AdminToken)
	if code != http.StatusRequestEntityTooLarge || len(body) > 300 {
		t.Errorf("REST: %d, %d-byte body %.200q", code, len(body), body)
	}
	// Without Content-Length (chunked) too.
	req, _ := http.NewRequest("PUT", e.d.HTTPURL+"/v1/sites/x", io.MultiReader(strings.NewReader(`{"name":"`), strings.NewReader(huge), strings.NewReader(`"}`)))
	req.Header.Set("Authorization", "Bearer "+e.d.AdminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Error(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || len(b) > 300 {
			t.Errorf("REST chunked: %d, %d bytes", resp.StatusCode, len(b))
		}
	}
	_, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: &pb.Site{Name: huge}})
	if status.Code(err) != codes.ResourceExhausted || len(err.Error()) > 300 {
		t.Errorf("gRPC: %d-byte error %.200v", len(err.Error()), err)
	}
	// Beyond the transport limit the message is refused before decoding.
	_, err = e.admin.ApplyNetwork(e.ctx, &pb.ApplyNetworkRequest{Sites: []*pb.Site{{Name: strings.Repeat("b", api.MaxGRPCMessage)}}}, grpc.MaxCallSendMsgSize(64<<20))
	if status.Code(err) != codes.ResourceExhausted || len(err.Error()) > 300 {
		t.Errorf("gRPC over the message limit: %d-byte error %.200v", len(err.Error()), err)
	}
	if l, err := e.admin.ListSites(e.ctx, &pb.ListSitesRequest{}); err != nil || len(l.GetSites()) != 0 {
		t.Errorf("sites after refused requests: %v %v", l, err)
	}
	// A network apply of a few MB is accepted by the limits.
	big := &pb.ApplyNetworkRequest{DryRun: true}
	for i := range 2000 {
		s := site(fmt.Sprintf("s%04d", i), i == 0, 1)
		s.Transports[0].Address = fmt.Sprintf("198.%d.%d.1", 18+i/256, i%256)
		s.LanPrefixes = []string{fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256)}
		big.Sites = append(big.Sites, s)
	}
	if _, err := e.admin.ApplyNetwork(e.ctx, big); status.Code(err) == codes.ResourceExhausted {
		t.Errorf("2,000-site dry run refused as too large: %v", err)
	}
}

// TestSitePutNamesMustMatch: PUT /v1/sites/a with a body naming b is
// InvalidArgument naming both, and changes nothing.
func TestSitePutNamesMustMatch(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	e.mustCreate(t, site("a", false, 1), site("b", false, 2))
	code, body := restAs(t, e, "PUT", "/v1/sites/a", `{"name":"b","transports":[{"name":"inet1","address":"198.51.100.9"}],"lan_prefixes":["10.9.0.0/24"]}`, e.d.AdminToken)
	if code != 400 || !strings.Contains(body, `\"a\"`) || !strings.Contains(body, `\"b\"`) || !strings.Contains(body, `"code":3`) {
		t.Errorf("mismatch: %d %s", code, body)
	}
	for _, n := range []string{"a", "b"} {
		s, err := e.admin.GetSite(e.ctx, &pb.GetSiteRequest{Name: n})
		if err != nil || s.GetLanPrefixes()[0] == "10.9.0.0/24" {
			t.Errorf("site %s changed: %v %v", n, s, err)
		}
	}
	// The same name, or none, is an ordinary update.
	if code, body := restAs(t, e, "PUT", "/v1/sites/a", `{"name":"a","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/24","10.11.0.0/24"]}`, e.d.AdminToken); code != 200 {
		t.Errorf("matching update: %d %s", code, body)
	}
}

func TestWorldReadableAdminTokenRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(path, []byte("0123456789abcdef0123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := daemon.Start(t.Context(), daemon.Config{DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/24", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true})
	if err == nil || !strings.Contains(err.Error(), "must not be readable by group or others") || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("a world-readable admin.token: %v", err)
	}
	os.Chmod(path, 0o600)
	d, err := daemon.Start(t.Context(), daemon.Config{DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/24", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("0600: %v", err)
	}
	d.Close()
}

// httpsClient trusts the controller CA.
func httpsClient(d *daemon.Daemon) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.CAPEM)
	jar, _ := cookiejar.New(nil)
	return &http.Client{Timeout: 20 * time.Second, Jar: jar,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
}

// TestHTTPSByDefault: on a non-loopback address the HTTP port speaks TLS
// with the controller's certificate, refuses plain HTTP, and sets Secure
// session cookies; --http-plaintext serves plain HTTP.
func TestHTTPSByDefault(t *testing.T) {
	e := startWith(t, "10.255.0.0/24", func(c *daemon.Config) { c.HTTPListen = ":0" })
	port := e.d.HTTPAddr.(*net.TCPAddr).Port
	if !strings.HasPrefix(e.d.HTTPURL, "https://") {
		t.Fatalf("HTTPURL %s", e.d.HTTPURL)
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	c := httpsClient(e.d)
	resp, err := c.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("https healthz: %v %v", resp, err)
	}
	if got := resp.TLS.PeerCertificates[0].NotAfter; !got.Equal(e.d.ServerCertNotAfter()) {
		t.Errorf("served certificate expires %v, the controller's %v", got, e.d.ServerCertNotAfter())
	}
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP answered on the HTTPS port")
	}
	req, _ := http.NewRequest("POST", base+"/api/login", strings.NewReader(`{"token":"`+e.d.AdminToken+`"}`))
	req.Header.Set(web.CSRFHeader, "1")
	resp, err = c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("login: %v %v", resp, err)
	}
	if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly {
		t.Errorf("session cookie %+v, want Secure and HttpOnly", cs)
	}

	// --http-plaintext (a TLS proxy in front): plain HTTP, cookies still Secure.
	p := startWith(t, "10.255.0.0/24", func(c *daemon.Config) { c.HTTPListen = ":0"; c.HTTPPlaintext = true })
	plain := fmt.Sprintf("http://127.0.0.1:%d", p.d.HTTPAddr.(*net.TCPAddr).Port)
	if resp, err := http.Get(plain + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("--http-plaintext: %v %v", resp, err)
	}
	req, _ = http.NewRequest("POST", plain+"/api/login", strings.NewReader(`{"token":"`+p.d.AdminToken+`"}`))
	req.Header.Set(web.CSRFHeader, "1")
	if resp, err := http.DefaultClient.Do(req); err != nil || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Errorf("--http-plaintext login: %v %v, want a Secure cookie", resp, err)
	}
	// Loopback: plain HTTP and a cookie a plain-HTTP browser keeps.
	l := start(t, "10.255.0.0/24")
	if !strings.HasPrefix(l.d.HTTPURL, "http://127.0.0.1:") {
		t.Errorf("loopback HTTPURL %s", l.d.HTTPURL)
	}
	req, _ = http.NewRequest("POST", l.d.HTTPURL+"/api/login", strings.NewReader(`{"token":"`+l.d.AdminToken+`"}`))
	req.Header.Set(web.CSRFHeader, "1")
	if resp, err := http.DefaultClient.Do(req); err != nil || len(resp.Cookies()) != 1 || resp.Cookies()[0].Secure {
		t.Errorf("loopback login: %v %v, want a cookie without Secure", resp, err)
	}
}

// TestDashboardSessionRole: any credential logs in to the dashboard; a
// read-only session reads through /v1 but cannot change anything; an
// operator session can; revoking the credential ends its session.
func TestDashboardSessionRole(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	tokens := roleTokens(t, e)
	login := func(token string) *http.Client {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
		req, _ := http.NewRequest("POST", e.d.HTTPURL+"/api/login", strings.NewReader(`{"token":"`+token+`"}`))
		req.Header.Set(web.CSRFHeader, "1")
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("login: %v %v", resp, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `"role"`) {
			t.Errorf("login answer without role: %s", b)
		}
		return c
	}
	send := func(c *http.Client, method, path, body string) int {
		req, _ := http.NewRequest(method, e.d.HTTPURL+path, strings.NewReader(body))
		req.Header.Set(web.CSRFHeader, "1")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	newSite := `{"name":"hq","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/24"]}`
	ro := login(tokens[credentials.ReadOnly])
	if code := send(ro, "GET", "/v1/sites", ""); code != 200 {
		t.Errorf("read-only session reads: %d", code)
	}
	if code := send(ro, "POST", "/v1/sites", newSite); code != 403 {
		t.Errorf("read-only session creates a site: %d, want 403", code)
	}
	if code := send(ro, "GET", "/api/state", ""); code != 200 {
		t.Errorf("read-only session views the dashboard: %d", code)
	}
	op := login(tokens[credentials.Operator])
	if code := send(op, "POST", "/v1/sites", newSite); code != 200 {
		t.Errorf("operator session creates a site: %d", code)
	}
	if code := send(op, "GET", "/v1/credentials", ""); code != 403 {
		t.Errorf("operator session lists credentials: %d, want 403", code)
	}
	list, err := e.admin.ListCredentials(e.ctx, &pb.ListCredentialsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.GetCredentials(), func(c *pb.Credential) bool { return c.GetRole() == pb.AdminRole_ADMIN_ROLE_OPERATOR })
	if _, err := e.admin.RevokeCredential(e.ctx, &pb.RevokeCredentialRequest{Id: list.GetCredentials()[i].GetId()}); err != nil {
		t.Fatal(err)
	}
	if code := send(op, "GET", "/v1/sites", ""); code != 401 {
		t.Errorf("session of a revoked credential: %d, want 401", code)
	}
	if code := send(op, "GET", "/api/state", ""); code != 401 {
		t.Errorf("dashboard with a session of a revoked credential: %d, want 401", code)
	}
}

// TestErrorsNeverEchoLargeInput: whatever layer refuses a large value (the
// JSON decoder, the intent validation), the error stays short.
func TestErrorsNeverEchoLargeInput(t *testing.T) {
	e := start(t, "10.255.0.0/24")
	big := 500000
	for _, body := range []string{
		`{"name": ` + strings.Repeat("z", big) + `}`,
		`{"name":"a","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["` + strings.Repeat("9", big) + `"]}`,
		`{"name":"a","role":"` + strings.Repeat("Q", big) + `"}`,
		`{"` + strings.Repeat("k", big) + `":1}`,
	} {
		code, out := restAs(t, e, "POST", "/v1/sites", body, e.d.AdminToken)
		if code != 400 || len(out) > 1024 {
			t.Errorf("REST: %d, %d-byte answer %.100q", code, len(out), out)
		}
	}
	_, err := e.admin.CreateSite(e.ctx, &pb.CreateSiteRequest{Site: &pb.Site{Name: "a", LanPrefixes: []string{strings.Repeat("9", big)}}})
	if status.Code(err) != codes.InvalidArgument || len(err.Error()) > 1024 {
		t.Errorf("gRPC: %d-byte error %.100v", len(err.Error()), err)
	}
	if l, err := e.admin.ListSites(e.ctx, &pb.ListSitesRequest{}); err != nil || len(l.GetSites()) != 0 {
		t.Errorf("sites after refused requests: %v %v", l, err)
	}
}

package web

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource serves a settable State.
type fakeSource struct {
	mu      sync.Mutex
	st      State
	changes chan struct{}
	stopped bool
}

func newFakeSource(st State) *fakeSource { return &fakeSource{st: st, changes: make(chan struct{}, 1)} }

func (f *fakeSource) State(context.Context) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Hand out a copy: the server modifies what it gets.
	raw, _ := json.Marshal(f.st)
	var st State
	json.Unmarshal(raw, &st)
	return st, nil
}

func (f *fakeSource) Changes() (<-chan struct{}, func()) {
	return f.changes, func() {
		f.mu.Lock()
		f.stopped = true
		f.mu.Unlock()
	}
}

func (f *fakeSource) set(st State) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

const testToken = "test-admin-token-0123456789"

var testIdentity = Identity{ID: "bootstrap", Role: "admin"}

func twoSites(state string) State {
	return State{
		Topology: "full-mesh", GRPCPort: 7400,
		Sites: []Site{{Name: "a", Role: "hub", State: SiteUp}, {Name: "b", Role: "spoke", State: SiteUp}},
		Tunnels: []Tunnel{{ID: "a.inet~b.inet", A: TunnelEnd{Site: "a", Transport: "inet"}, B: TunnelEnd{Site: "b", Transport: "inet"},
			Reports: []EndReport{{Site: "a", State: state}}}},
	}
}

// serve runs a Server over src until the test ends.
func serve(t *testing.T, src Source, noAuth bool) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(Config{Source: src, Token: testToken, NoAuth: noAuth, Refresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.CloseStreams()
		ts.Close()
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return s, ts
}

func do(t *testing.T, c *http.Client, method, url, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var csrf = map[string]string{CSRFHeader: "1"}

func TestLoginAndSession(t *testing.T) {
	s, ts := serve(t, newFakeSource(twoSites(TunnelUp)), false)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}

	if resp, _ := do(t, c, "GET", ts.URL+"/api/state", "", nil); resp.StatusCode != 401 {
		t.Errorf("state without login: %d, want 401", resp.StatusCode)
	}
	if resp, _ := do(t, c, "POST", ts.URL+"/api/login", `{"token":"`+testToken+`"}`, nil); resp.StatusCode != 403 {
		t.Errorf("login without the CSRF header: %d, want 403", resp.StatusCode)
	}
	if resp, _ := do(t, c, "POST", ts.URL+"/api/login", `{"token":"wrong"}`, csrf); resp.StatusCode != 401 {
		t.Errorf("login with a wrong token: %d, want 401", resp.StatusCode)
	}
	resp, _ := do(t, c, "POST", ts.URL+"/api/login", `{"token":"`+testToken+`"}`, csrf)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 || cookies[0].Name != cookieName || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v, want one HttpOnly SameSite=Strict %s", cookies, cookieName)
	}
	if strings.Contains(cookies[0].Value, testToken) {
		t.Error("the session cookie holds the admin token")
	}
	resp, body := do(t, c, "GET", ts.URL+"/api/state", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"grpc_port":7400`) {
		t.Fatalf("state after login: %d %s", resp.StatusCode, body)
	}

	// Authorized (the REST API's check): cookie, plus the header for writes.
	withCookie := func(method, value string, hdr bool) *http.Request {
		r := httptest.NewRequest(method, "/v1/enrollment-tokens", nil)
		if value != "" {
			r.AddCookie(&http.Cookie{Name: cookieName, Value: value})
		}
		if hdr {
			r.Header.Set(CSRFHeader, "1")
		}
		return r
	}
	v := cookies[0].Value
	for _, tc := range []struct {
		name string
		r    *http.Request
		want bool
	}{
		{"GET with cookie", withCookie("GET", v, false), true},
		{"POST with cookie and header", withCookie("POST", v, true), true},
		{"POST with cookie, no header", withCookie("POST", v, false), false},
		{"DELETE with cookie, no header", withCookie("DELETE", v, false), false},
		{"GET without cookie", withCookie("GET", "", false), false},
		{"POST with header, no cookie", withCookie("POST", "", true), false},
		{"tampered cookie", withCookie("GET", v[:len(v)-2]+"AA", false), false},
		{"forged expiry", withCookie("GET", "v1.99999999999."+v[strings.LastIndexByte(v, '.')+1:], false), false},
		{"raw token as cookie", withCookie("GET", testToken, false), false},
	} {
		if got := s.Authorized(tc.r); got != tc.want {
			t.Errorf("%s: Authorized = %v, want %v", tc.name, got, tc.want)
		}
	}

	// Sessions expire.
	s.now = func() time.Time { return time.Now().Add(SessionTTL + time.Minute) }
	if resp, _ := do(t, c, "GET", ts.URL+"/api/state", "", nil); resp.StatusCode != 401 {
		t.Errorf("state with an expired session: %d, want 401", resp.StatusCode)
	}
	s.now = time.Now

	// Logout clears the cookie.
	if resp, _ := do(t, c, "POST", ts.URL+"/api/logout", "", csrf); resp.StatusCode != 200 {
		t.Errorf("logout: %d", resp.StatusCode)
	}
	if resp, _ := do(t, c, "GET", ts.URL+"/api/state", "", nil); resp.StatusCode != 401 {
		t.Errorf("state after logout: %d, want 401", resp.StatusCode)
	}
}

func TestNoAuth(t *testing.T) {
	s, ts := serve(t, newFakeSource(twoSites(TunnelUp)), true)
	if resp, _ := do(t, http.DefaultClient, "GET", ts.URL+"/api/state", "", nil); resp.StatusCode != 200 {
		t.Errorf("state without login, auth disabled: %d", resp.StatusCode)
	}
	_, body := do(t, http.DefaultClient, "GET", ts.URL+"/api/session", "", nil)
	if !strings.Contains(body, `"auth_required":false`) {
		t.Errorf("session: %s", body)
	}
	// Writes still need the header, so a cross-site form cannot post.
	post := httptest.NewRequest("POST", "/v1/enrollment-tokens", nil)
	if s.Authorized(post) {
		t.Error("POST without the CSRF header authorized with auth disabled")
	}
	post.Header.Set(CSRFHeader, "1")
	if !s.Authorized(post) {
		t.Error("POST with the CSRF header refused with auth disabled")
	}
	if _, err := New(Config{Source: newFakeSource(State{})}); err == nil {
		t.Error("New without a token and without NoAuth succeeded")
	}
}

func TestStaticAssets(t *testing.T) {
	_, ts := serve(t, newFakeSource(State{}), false)
	resp, body := do(t, http.DefaultClient, "GET", ts.URL+"/", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="login-form"`) {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on /")
	}
	if resp, _ := do(t, http.DefaultClient, "GET", ts.URL+"/", "", map[string]string{"If-None-Match": etag}); resp.StatusCode != 304 {
		t.Errorf("revalidation: %d, want 304", resp.StatusCode)
	}
	for _, path := range []string{"/vendor/cytoscape.min.js", "/js/app.js", "/style.css", "/favicon.svg"} {
		if resp, _ := do(t, http.DefaultClient, "GET", ts.URL+path, "", nil); resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	if resp, _ := do(t, http.DefaultClient, "GET", ts.URL+"/api/nope", "", nil); resp.StatusCode != 404 {
		t.Errorf("GET /api/nope: %d", resp.StatusCode)
	}
}

// readEvent reads the next "event: state" of a stream.
func readEvent(t *testing.T, r *bufio.Reader) State {
	t.Helper()
	var event string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "state":
			var st State
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &st); err != nil {
				t.Fatal(err)
			}
			return st
		}
	}
}

func TestStreamFollowsChanges(t *testing.T) {
	src := newFakeSource(twoSites(TunnelUp))
	s, ts := serve(t, src, false)
	value, _ := s.auth.newSession(testIdentity)
	req, _ := http.NewRequest("GET", ts.URL+"/api/stream", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: value})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	first := readEvent(t, r)
	if first.Summary.TunnelsUp != 1 || first.Summary.SitesUp != 2 || first.Tunnels[0].State != TunnelUp {
		t.Fatalf("first state: %+v", first.Summary)
	}
	src.set(twoSites(TunnelDown))
	next := readEvent(t, r)
	tn := next.Tunnels[0]
	if tn.State != TunnelDown || next.Summary.TunnelsDown != 1 || tn.LastChange == nil {
		t.Fatalf("after down: %+v summary %+v", tn, next.Summary)
	}
	if ev := next.Events[len(next.Events)-1]; ev.What != "tunnel a.inet~b.inet down" || ev.Level != LevelError {
		t.Errorf("last event %+v", ev)
	}
	// History has both.
	_, body := do(t, http.DefaultClient, "GET", ts.URL+"/api/history?tunnel=a.inet~b.inet", "", nil)
	if !strings.Contains(body, "log in") {
		t.Errorf("history without login: %s", body)
	}
	samples, ok := s.hist.get(time.Now(), "a.inet~b.inet")
	if !ok || len(samples) != 2 || samples[0].State != TunnelUp || samples[1].State != TunnelDown {
		t.Errorf("history %+v", samples)
	}
	// Shutdown ends the stream.
	s.CloseStreams()
	if _, err := io.ReadAll(r); err != nil {
		t.Errorf("stream after CloseStreams: %v", err)
	}
}

// Signing out ends the streams opened with that session (the browser's
// other tabs), not those of another session.
func TestLogoutEndsStreams(t *testing.T) {
	src := newFakeSource(twoSites(TunnelUp))
	s, ts := serve(t, src, false)
	mine, _ := s.auth.newSession(testIdentity)
	payload := "v2." + strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ".admin.bootstrap"
	other := payload + "." + base64.RawURLEncoding.EncodeToString(s.auth.mac(payload))
	client := &http.Client{Timeout: 10 * time.Second} // a stream left open fails the test
	open := func(value string) *bufio.Reader {
		req, _ := http.NewRequest("GET", ts.URL+"/api/stream", nil)
		req.AddCookie(&http.Cookie{Name: cookieName, Value: value})
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream: %v %v", resp, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		r := bufio.NewReader(resp.Body)
		readEvent(t, r)
		return r
	}
	tab1, tab2, elsewhere := open(mine), open(mine), open(other)

	req, _ := http.NewRequest("POST", ts.URL+"/api/logout", nil)
	req.Header.Set(CSRFHeader, "1")
	req.AddCookie(&http.Cookie{Name: cookieName, Value: mine})
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("logout: %v %v", resp, err)
	}
	for _, r := range []*bufio.Reader{tab1, tab2} {
		if rest, err := io.ReadAll(r); err != nil || strings.TrimSpace(string(rest)) != "" {
			t.Errorf("a stream of the signed-out session: %q %v, want its end and nothing more", rest, err)
		}
	}
	src.set(twoSites(TunnelDown))
	if st := readEvent(t, elsewhere); st.Tunnels[0].State != TunnelDown {
		t.Errorf("the other session's stream: %+v", st.Tunnels[0])
	}
}

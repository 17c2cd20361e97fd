package web

import (
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSessionCarriesCredentialRole: a login with any credential Login
// accepts makes a session with its id and role (a tampered role breaks the
// HMAC); the session ends when the credential stops being usable; with
// SecureCookies the cookie is Secure even on a request without TLS (a
// proxy in front, or the test's plain listener).
func TestSessionCarriesCredentialRole(t *testing.T) {
	var revoked atomic.Bool
	s, err := New(Config{Source: newFakeSource(twoSites(TunnelUp)), Token: testToken, Refresh: time.Hour, SecureCookies: true,
		Login: func(tok string) (Identity, bool) {
			return Identity{ID: "0123456789abcdef", Name: "noc", Role: "read_only"}, tok == "0123456789abcdef.secret"
		},
		Usable: func(id string) bool { return id == "0123456789abcdef" && !revoked.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	if resp, _ := do(t, c, "POST", ts.URL+"/api/login", `{"token":"`+testToken+`"}`, csrf); resp.StatusCode != 401 {
		t.Errorf("the bootstrap token with a Login that refuses it: %d", resp.StatusCode)
	}
	resp, body := do(t, c, "POST", ts.URL+"/api/login", `{"token":"0123456789abcdef.secret"}`, csrf)
	if resp.StatusCode != 200 || !strings.Contains(body, `"role":"read_only"`) {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	ck := resp.Cookies()[0]
	if !ck.Secure {
		t.Error("cookie not Secure with SecureCookies")
	}
	req := httptest.NewRequest("GET", "/v1/sites", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: ck.Value})
	if id, ok := s.Session(req); !ok || id.Role != "read_only" || id.ID != "0123456789abcdef" {
		t.Errorf("Session = %+v %v", id, ok)
	}
	forged := strings.Replace(ck.Value, ".read_only.", ".admin.", 1)
	req = httptest.NewRequest("GET", "/v1/sites", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: forged})
	if id, ok := s.Session(req); ok {
		t.Errorf("a cookie with its role rewritten was accepted as %+v", id)
	}
	post := httptest.NewRequest("POST", "/v1/sites", nil)
	post.AddCookie(&http.Cookie{Name: cookieName, Value: ck.Value})
	if _, ok := s.Session(post); ok {
		t.Error("a state-changing request without the CSRF header has a session")
	}
	revoked.Store(true)
	if resp, _ := do(t, c, "GET", ts.URL+"/api/state", "", nil); resp.StatusCode != 401 {
		t.Errorf("dashboard after the credential was revoked: %d, want 401", resp.StatusCode)
	}
}

package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Browser sessions. Logging in with an admin credential (the bootstrap
// admin token or one made with CreateCredential) sets a cookie holding an
// expiry, the credential's id and role, and an HMAC of them, keyed by a key
// derived from the admin token:
//
//	meshwan_session=v2.<unix expiry>.<role>.<credential id>.<base64url HMAC-SHA256(key, "v2.<expiry>.<role>.<id>")>
//
// The raw token never leaves the login request. The session is stateless,
// so it works across controller replicas that share the admin token and
// survives restarts; changing the token ends every session, and revoking
// (or the expiry of) the credential it was made with ends the sessions made
// with it (Config.Usable, checked on every request). The role is the
// credential's: a read_only session can look, not change. Logging out
// clears the cookie in that browser and ends the event streams this
// replica holds open with it (a copied cookie stays valid until it
// expires, SessionTTL, or its credential is revoked).
//
// The cookie is HttpOnly, SameSite=Strict and, whenever the page is served
// over TLS, Secure. Requests authenticated by it that change state must
// also carry the header X-Meshwan-CSRF: 1, which a cross-site form cannot
// send and a cross-site fetch cannot send without a CORS preflight that
// this server never approves.
const (
	cookieName = "meshwan_session"
	// CSRFHeader must be present (value "1") on state-changing requests
	// authenticated by the session cookie.
	CSRFHeader = "X-Meshwan-CSRF"
	// SessionTTL is how long a login lasts.
	SessionTTL = 12 * time.Hour
)

// Identity is who a session (or a login) stands for: a credential's id,
// name and role ("read_only", "operator" or "admin").
type Identity struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	Role string `json:"role"`
}

// noAuthIdentity is every request's identity with NoAuth: the page may
// change the network (as before roles existed), not manage credentials.
var noAuthIdentity = Identity{ID: "dashboard-no-auth", Name: "dashboard-no-auth", Role: "operator"}

type auth struct {
	key    []byte // HMAC key derived from the admin token; nil when disabled
	token  string
	noAuth bool
	now    func() time.Time
	login  func(token string) (Identity, bool)
	usable func(id string) bool
	secure bool // always set Secure on the cookie
}

func newAuth(cfg Config, now func() time.Time) *auth {
	m := hmac.New(sha256.New, []byte(cfg.Token))
	m.Write([]byte("meshwan dashboard session v2"))
	a := &auth{key: m.Sum(nil), token: cfg.Token, noAuth: cfg.NoAuth, now: now, login: cfg.Login, usable: cfg.Usable, secure: cfg.SecureCookies}
	if a.login == nil { // only the admin token, role admin
		a.login = func(tok string) (Identity, bool) {
			ok := a.token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(a.token)) == 1
			return Identity{ID: "bootstrap", Name: "admin.token", Role: "admin"}, ok
		}
	}
	if a.usable == nil {
		a.usable = func(string) bool { return true }
	}
	return a
}

func (a *auth) mac(payload string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// validPart: a role or credential id goes into the cookie between dots.
func validPart(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (a *auth) newSession(id Identity) (value string, expires time.Time) {
	expires = a.now().Add(SessionTTL).Truncate(time.Second)
	payload := "v2." + strconv.FormatInt(expires.Unix(), 10) + "." + id.Role + "." + id.ID
	return payload + "." + base64.RawURLEncoding.EncodeToString(a.mac(payload)), expires
}

// session checks a cookie value: signature, expiry, and that its
// credential is still usable.
func (a *auth) session(value string) (Identity, bool) {
	i := strings.LastIndexByte(value, '.')
	if i < 0 || !strings.HasPrefix(value, "v2.") {
		return Identity{}, false
	}
	payload, sig := value[:i], value[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, a.mac(payload)) {
		return Identity{}, false
	}
	f := strings.Split(payload, ".")
	if len(f) != 4 {
		return Identity{}, false
	}
	exp, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || !a.now().Before(time.Unix(exp, 0)) || !a.usable(f[3]) {
		return Identity{}, false
	}
	return Identity{ID: f[3], Role: f[2]}, true
}

// identity returns who r's session cookie stands for (noAuthIdentity when
// auth is disabled).
func (a *auth) identity(r *http.Request) (Identity, bool) {
	if a.noAuth {
		return noAuthIdentity, true
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return Identity{}, false
	}
	return a.session(c.Value)
}

// loggedIn reports whether r carries a valid session cookie (always true
// when auth is disabled).
func (a *auth) loggedIn(r *http.Request) bool {
	_, ok := a.identity(r)
	return ok
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func hasCSRFHeader(r *http.Request) bool { return r.Header.Get(CSRFHeader) == "1" }

// authorized is loggedIn plus, for state-changing methods, the CSRF header.
func (a *auth) authorized(r *http.Request) bool {
	return a.loggedIn(r) && (safeMethod(r.Method) || hasCSRFHeader(r))
}

func (a *auth) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: a.secure || r.TLS != nil,
	})
}

// handleLogin: POST {"token": "..."} with the CSRF header.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if !hasCSRFHeader(r) {
		writeError(w, http.StatusForbidden, "missing header "+CSRFHeader+": 1")
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, `body: want {"token": "..."}`)
		return
	}
	if s.auth.noAuth {
		writeJSON(w, http.StatusOK, sessionInfo{Authenticated: true})
		return
	}
	id, ok := s.auth.login(strings.TrimSpace(req.Token))
	if !ok || !validPart(id.ID) || !validPart(id.Role) {
		s.log.Warn("dashboard login refused", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "wrong, revoked or expired admin credential")
		return
	}
	value, expires := s.auth.newSession(id)
	s.auth.setCookie(w, r, value, int(SessionTTL.Seconds()))
	s.log.Info("dashboard login", "remote", r.RemoteAddr, "credential_id", id.ID, "role", id.Role, "expires_at", expires)
	writeJSON(w, http.StatusOK, sessionInfo{Authenticated: true, AuthRequired: true, ExpiresAt: &expires, Role: id.Role})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if !hasCSRFHeader(r) {
		writeError(w, http.StatusForbidden, "missing header "+CSRFHeader+": 1")
		return
	}
	if c, err := r.Cookie(cookieName); err == nil && !s.auth.noAuth {
		s.endSession(c.Value) // before the cookie goes: nothing is sent on them after
	}
	s.auth.setCookie(w, r, "", -1)
	writeJSON(w, http.StatusOK, sessionInfo{AuthRequired: !s.auth.noAuth})
}

type sessionInfo struct {
	Authenticated bool       `json:"authenticated"`
	AuthRequired  bool       `json:"auth_required"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	// Role is the session's role (read_only, operator, admin).
	Role string `json:"role,omitempty"`
}

// handleSession tells the page whether it must show the login form.
func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	id, ok := s.auth.identity(r)
	writeJSON(w, http.StatusOK, sessionInfo{Authenticated: ok, AuthRequired: !s.auth.noAuth, Role: id.Role})
}

// requireLogin guards the dashboard's data endpoints.
func (s *Server) requireLogin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.auth.authorized(r) {
			writeError(w, http.StatusUnauthorized, "log in to the dashboard first")
			return
		}
		next(w, r)
	}
}

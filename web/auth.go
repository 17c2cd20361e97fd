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

// Browser sessions. Logging in with the admin token sets a cookie holding
// an expiry and an HMAC of it, keyed by a key derived from the admin token:
//
//	meshwan_session=v1.<unix expiry>.<base64url HMAC-SHA256(key, "v1.<expiry>")>
//
// The raw token never leaves the login request. The session is stateless,
// so it works across controller replicas that share the admin token and
// survives restarts; changing the token ends every session. Logging out
// clears the cookie in that browser and ends the event streams this
// replica holds open with it (a copied cookie stays valid until it expires,
// SessionTTL).
//
// The cookie is HttpOnly and SameSite=Strict. Requests authenticated by it
// that change state must also carry the header X-Meshwan-CSRF: 1, which a
// cross-site form cannot send and a cross-site fetch cannot send without a
// CORS preflight that this server never approves.
const (
	cookieName = "meshwan_session"
	// CSRFHeader must be present (value "1") on state-changing requests
	// authenticated by the session cookie.
	CSRFHeader = "X-Meshwan-CSRF"
	// SessionTTL is how long a login lasts.
	SessionTTL = 12 * time.Hour
)

type auth struct {
	key    []byte // HMAC key derived from the admin token; nil when disabled
	token  string
	noAuth bool
	now    func() time.Time
}

func newAuth(token string, noAuth bool, now func() time.Time) *auth {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("meshwan dashboard session v1"))
	return &auth{key: m.Sum(nil), token: token, noAuth: noAuth, now: now}
}

func (a *auth) mac(payload string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

func (a *auth) newSession() (value string, expires time.Time) {
	expires = a.now().Add(SessionTTL).Truncate(time.Second)
	payload := "v1." + strconv.FormatInt(expires.Unix(), 10)
	return payload + "." + base64.RawURLEncoding.EncodeToString(a.mac(payload)), expires
}

func (a *auth) validSession(value string) bool {
	i := strings.LastIndexByte(value, '.')
	if i < 0 || !strings.HasPrefix(value, "v1.") {
		return false
	}
	payload, sig := value[:i], value[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, a.mac(payload)) {
		return false
	}
	exp, err := strconv.ParseInt(strings.TrimPrefix(payload, "v1."), 10, 64)
	return err == nil && a.now().Before(time.Unix(exp, 0))
}

// loggedIn reports whether r carries a valid session cookie (always true
// when auth is disabled).
func (a *auth) loggedIn(r *http.Request) bool {
	if a.noAuth {
		return true
	}
	c, err := r.Cookie(cookieName)
	return err == nil && a.validSession(c.Value)
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func hasCSRFHeader(r *http.Request) bool { return r.Header.Get(CSRFHeader) == "1" }

// authorized is loggedIn plus, for state-changing methods, the CSRF header.
func (a *auth) authorized(r *http.Request) bool {
	return a.loggedIn(r) && (safeMethod(r.Method) || hasCSRFHeader(r))
}

func (a *auth) checkToken(got string) bool {
	return a.token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) == 1
}

func (a *auth) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
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
	if !s.auth.checkToken(strings.TrimSpace(req.Token)) {
		s.log.Warn("dashboard login refused", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "wrong admin token")
		return
	}
	value, expires := s.auth.newSession()
	s.auth.setCookie(w, r, value, int(SessionTTL.Seconds()))
	s.log.Info("dashboard login", "remote", r.RemoteAddr, "expires_at", expires)
	writeJSON(w, http.StatusOK, sessionInfo{Authenticated: true, AuthRequired: true, ExpiresAt: &expires})
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
}

// handleSession tells the page whether it must show the login form.
func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, sessionInfo{Authenticated: s.auth.loggedIn(r), AuthRequired: !s.auth.noAuth})
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

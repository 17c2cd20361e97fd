// Package web serves the controller's dashboard: the page (static assets
// embedded in the binary; the built output is committed under dist/ so
// `go build` needs no Node), a login that turns the admin token into a
// session cookie, and JSON endpoints over a Source, with live updates as
// server-sent events.
//
// The package does not import the controller: it defines its own view types
// and the narrow Source interface the controller implements.
//
// Endpoints (all under the handler's root):
//
//	GET  /                  the page and its assets (no login needed)
//	GET  /api/session       {"authenticated", "auth_required", "role"}
//	POST /api/login         {"token"} -> session cookie with the credential's
//	                        role (header X-Meshwan-CSRF: 1)
//	POST /api/logout        clears the cookie and ends the streams opened
//	                        with it (header X-Meshwan-CSRF: 1)
//	GET  /api/state         State (login needed)
//	GET  /api/history?tunnel=ID  the tunnel's samples of the last hour
//	GET  /api/stream        text/event-stream: an "event: state" with the
//	                        whole State at once and after every change
//
// The State is built only for a reader (see Source): while a stream is
// open, and for a request when none is.
package web

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

//go:embed dist
var dist embed.FS

// Config is what a Server needs.
type Config struct {
	Source Source
	// Token is the bootstrap admin token. The session key is derived from
	// it; without Login it is also the only token a login accepts (role
	// admin).
	Token string
	// Login, when set, checks a token presented at login: any valid admin
	// credential, with its role.
	Login func(token string) (Identity, bool)
	// Usable, when set, reports whether the credential a session was made
	// with still authenticates (not revoked, not expired); checked on every
	// request.
	Usable func(id string) bool
	// SecureCookies marks the session cookie Secure (the page is served
	// over TLS; also set per request when it arrived over TLS).
	SecureCookies bool
	// NoAuth disables the login (lab only): every request is treated as
	// logged in.
	NoAuth bool
	Logger *slog.Logger // nil: discard
	// Refresh is how often the state is re-read without a change
	// notification (0: 5s).
	Refresh time.Duration
	// HistoryPeriod paces each tunnel's history (0: 5s): a state change is
	// recorded at once, anything else (RTT, jitter, loss) at most once per
	// period, so an hour of per-second reports fits the hour's samples.
	HistoryPeriod time.Duration
}

// Server is the dashboard. Run must be running for the event streams to
// follow changes.
type Server struct {
	src     Source
	log     *slog.Logger
	auth    *auth
	refresh time.Duration
	now     func() time.Time
	mux     *http.ServeMux
	sampler Sampler // nil: the Source is not one

	// buildMu serialises the builds and samples (Run's and the requests'),
	// and guards what they update. Lock order: buildMu before mu.
	buildMu sync.Mutex
	hist    *history
	track   *tracker
	ends    map[string]Tunnel // by id, the ends of the tunnels of the last State
	builtAt time.Time         // when the last successful build began (wall clock)

	// demand is poked (never blocking) when a stream opens or closes.
	demand chan struct{}

	mu      sync.Mutex
	cur     []byte // JSON of the current State
	version uint64
	ready   chan struct{} // closed after the first successful read
	subs    map[*subscriber]struct{}
	live    bool          // Run follows Changes: cur is current
	closing chan struct{} // closed by CloseStreams
	closed  bool
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("web: no Source")
	}
	if cfg.Token == "" && !cfg.NoAuth {
		return nil, errors.New("web: no admin token (set NoAuth to run without login)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	refresh := cfg.Refresh
	if refresh <= 0 {
		refresh = 5 * time.Second
	}
	histPeriod := cfg.HistoryPeriod
	if histPeriod <= 0 {
		histPeriod = 5 * time.Second
	}
	s := &Server{
		src: cfg.Source, log: log, refresh: refresh, now: time.Now,
		hist:  newHistory(time.Hour, histPeriod),
		track: newTracker(100), demand: make(chan struct{}, 1),
		ready: make(chan struct{}), subs: map[*subscriber]struct{}{}, closing: make(chan struct{}),
	}
	s.sampler, _ = cfg.Source.(Sampler)
	s.auth = newAuth(cfg, func() time.Time { return s.now() })
	static, err := newStatic()
	if err != nil {
		return nil, err
	}
	s.mux = http.NewServeMux()
	s.mux.Handle("/", static)
	s.mux.HandleFunc("/api/session", s.handleSession)
	s.mux.HandleFunc("/api/login", s.handleLogin)
	s.mux.HandleFunc("/api/logout", s.handleLogout)
	s.mux.HandleFunc("GET /api/state", s.requireLogin(s.handleState))
	s.mux.HandleFunc("GET /api/history", s.requireLogin(s.handleHistory))
	s.mux.HandleFunc("GET /api/stream", s.requireLogin(s.handleStream))
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such dashboard endpoint")
	})
	return s, nil
}

// Authorized reports whether r is an authenticated browser request: a valid
// session cookie and, for a state-changing method, the CSRF header. The
// controller's REST API accepts it in place of the bearer token. With
// NoAuth every request with the CSRF header (any safe request) passes.
func (s *Server) Authorized(r *http.Request) bool { return s.auth.authorized(r) }

// Session is Authorized with the session's identity: the controller's REST
// API accepts it in place of a bearer token, with the session's role.
func (s *Server) Session(r *http.Request) (Identity, bool) {
	if !s.auth.authorized(r) {
		return Identity{}, false
	}
	return s.auth.identity(r)
}

// ServeHTTP serves the page, its assets and the /api endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	body, _, ok := s.fresh(r.Context())
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "the network state is not available yet")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("tunnel")
	samples, ok := s.hist.get(s.now(), id)
	if !ok {
		writeError(w, http.StatusNotFound, "no history for tunnel "+id)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, struct {
		Tunnel  string   `json:"tunnel"`
		Window  int      `json:"window_seconds"`
		Samples []Sample `json:"samples"`
	}{id, int(s.hist.window.Seconds()), samples})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}

// static serves dist/ with strong ETags (the embedded files have no
// modification times), so browsers revalidate instead of re-downloading.
type static struct {
	files http.Handler
	etags map[string]string
}

func newStatic() (*static, error) {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, err
	}
	etags := map[string]string{}
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags["/"+path] = `"` + hex.EncodeToString(sum[:8]) + `"`
		return nil
	})
	if err != nil {
		return nil, err
	}
	etags["/"] = etags["/index.html"]
	return &static{files: http.FileServerFS(sub), etags: etags}, nil
}

func (st *static) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if tag, ok := st.etags[r.URL.Path]; ok {
		w.Header().Set("ETag", tag)
		w.Header().Set("Cache-Control", "no-cache")
	}
	st.files.ServeHTTP(w, r)
}

// fresh returns the current State's JSON and version: the one Run keeps
// current while streams are open, else one built now (or by a build that
// began after the call, which concurrent requests share).
func (s *Server) fresh(ctx context.Context) ([]byte, uint64, bool) {
	s.mu.Lock()
	live := s.live
	s.mu.Unlock()
	if !live {
		asked := time.Now()
		s.buildMu.Lock()
		var err error
		if !s.builtAt.After(asked) {
			err = s.updateLocked(ctx)
		}
		s.buildMu.Unlock()
		if err != nil {
			s.log.Warn("dashboard: read network state", "err", err)
			s.mu.Lock()
			none := s.version == 0
			s.mu.Unlock()
			if none {
				return nil, 0, false
			}
		}
	}
	return s.current(ctx)
}

// current returns the current State's JSON and version, waiting for the
// first read if there is none yet.
func (s *Server) current(ctx context.Context) ([]byte, uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.version, true
}

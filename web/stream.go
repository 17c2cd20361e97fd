package web

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// maxEvents is how many events the page gets.
const maxEvents = 50

// Run keeps the served state current until ctx ends: it re-reads the
// Source on every change notification and every Refresh, derives tunnel
// states, events and history, and wakes the event streams when the state
// changed. It returns ctx's error.
func (s *Server) Run(ctx context.Context) error {
	changes, stop := s.src.Changes()
	defer stop()
	tick := time.NewTicker(s.refresh)
	defer tick.Stop()
	failing := false
	for {
		if err := s.update(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !failing {
				s.log.Warn("dashboard: read network state", "err", err)
			}
			failing = true
		} else if failing {
			s.log.Info("dashboard: network state readable again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changes:
		case <-tick.C:
		}
	}
}

// update reads the Source once and publishes the derived state.
func (s *Server) update(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := s.src.State(rctx)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	s.derive(now, &st)
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(body, s.cur) {
		return nil
	}
	s.cur = body
	s.version++
	if s.version == 1 {
		close(s.ready)
	}
	for sub := range s.subs {
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// derive completes a State read from the Source: tunnel states, change
// times, events, history and the summary.
func (s *Server) derive(now time.Time, st *State) {
	sites := make(map[string]Site, len(st.Sites))
	for _, site := range st.Sites {
		sites[site.Name] = site
	}
	slices.SortFunc(st.Tunnels, func(a, b Tunnel) int { return strings.Compare(a.ID, b.ID) })
	for i := range st.Tunnels {
		deriveTunnel(&st.Tunnels[i], sites)
	}
	s.track.observe(now, st.Tunnels)
	s.hist.observe(now, st.Tunnels)
	st.Events = mergeEvents(st.Events, s.track.events, maxEvents)
	summarize(st)
	if st.Sites == nil {
		st.Sites = []Site{}
	}
	if st.Tunnels == nil {
		st.Tunnels = []Tunnel{}
	}
}

// CloseStreams ends every open event stream and refuses new ones; the
// controller calls it when its HTTP server shuts down (streams never go
// idle on their own).
func (s *Server) CloseStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
}

// subscriber is one open event stream.
type subscriber struct {
	wake    chan struct{} // poked (never blocking) when the state changed
	session string        // the session cookie it was opened with; "" without
	ended   chan struct{} // closed when its session signs out
}

func (s *Server) subscribe(session string) (*subscriber, func()) {
	sub := &subscriber{wake: make(chan struct{}, 1), session: session, ended: make(chan struct{})}
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	return sub, func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}
}

// endSession ends the open streams of a session that signs out. Sessions
// are stateless, so the server cannot revoke one; but the browser that
// signs out drops the cookie, and its other tabs' streams, opened with it,
// would otherwise go on sending state that those tabs can no longer act on
// (each of their requests would get a 401). Ended, a stream's page asks
// /api/session and shows the login form. A copy of the cookie elsewhere is
// unaffected beyond a reconnect.
func (s *Server) endSession(session string) {
	if session == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for sub := range s.subs {
		if sub.session == session {
			delete(s.subs, sub)
			close(sub.ended)
		}
	}
}

// streamKeepAlive is how often an idle stream sends a comment, so proxies
// and the browser see it alive.
const streamKeepAlive = 20 * time.Second

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.closing:
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	default:
	}
	var session string
	if c, err := r.Cookie(cookieName); err == nil && !s.auth.noAuth {
		session = c.Value
	}
	sub, unsubscribe := s.subscribe(session)
	defer unsubscribe()
	body, version, ok := s.current(r.Context())
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "the network state is not available yet")
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(parts ...[]byte) bool {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for _, p := range parts {
			if _, err := w.Write(p); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	// retry: how long the browser waits before reconnecting.
	if !write([]byte("retry: 2000\n\n"), []byte("event: state\ndata: "), body, []byte("\n\n")) {
		return
	}
	keepAlive := time.NewTicker(streamKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case <-sub.ended:
			return
		case <-keepAlive.C:
			// A session that expired while streaming ends the stream; the
			// page then finds it must log in again.
			if !s.auth.loggedIn(r) || !write([]byte(": keep-alive\n\n")) {
				return
			}
		case <-sub.wake:
			if !s.auth.loggedIn(r) || signedOut(sub) {
				return
			}
			s.mu.Lock()
			body, v := s.cur, s.version
			s.mu.Unlock()
			if v == version {
				continue
			}
			version = v
			if !write([]byte("event: state\ndata: "), body, []byte("\n\n")) {
				return
			}
		}
	}
}

// signedOut reports whether sub's session signed out (a wake and the end
// may be ready together; the end wins, so nothing is sent after it).
func signedOut(sub *subscriber) bool {
	select {
	case <-sub.ended:
		return true
	default:
		return false
	}
}

package web

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// maxEvents is how many events the page gets.
const maxEvents = 50

// sampleGap is the least time between two samples taken for state
// changes while no stream is open.
const sampleGap = time.Second

// Run keeps the served state current for the open event streams until
// ctx ends, and returns ctx's error. While a stream is open it follows the
// Source's Changes: it re-reads the State on every change notification and
// every Refresh, derives tunnel states, events and history, and wakes the
// streams when the state changed. While none is open it builds nothing (a
// request builds the State itself); with a Sampler it keeps sampling the
// tunnels for their history and state-change events.
func (s *Server) Run(ctx context.Context) error {
	for {
		if err := s.idle(ctx); err != nil {
			return err
		}
		if err := s.follow(ctx); err != nil {
			return err
		}
	}
}

func (s *Server) watched() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs) > 0
}

// pokeDemand tells Run that the set of streams changed.
func (s *Server) pokeDemand() {
	select {
	case s.demand <- struct{}{}:
	default:
	}
}

// idle waits until a stream is open, sampling the tunnels meanwhile.
func (s *Server) idle(ctx context.Context) error {
	var changes <-chan struct{}
	var tick <-chan time.Time
	if s.sampler != nil {
		c, stop := s.sampler.SampleChanges()
		defer stop()
		changes = c
		t := time.NewTicker(s.hist.every)
		defer t.Stop()
		tick = t.C
	}
	// A state change samples at once unless the last sample is less than
	// sampleGap old; then it waits for the gap (held, never dropped).
	held := time.NewTimer(0)
	<-held.C
	defer held.Stop()
	var last time.Time
	pending := false
	sample := func() {
		held.Stop()
		pending = false
		last = time.Now()
		if err := s.sample(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("dashboard: sample tunnels", "err", err)
		}
	}
	for {
		if s.watched() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.demand:
		case <-tick:
			sample()
		case <-changes:
			switch wait := sampleGap - time.Since(last); {
			case wait <= 0:
				sample()
			case !pending:
				pending = true
				held.Reset(wait)
			}
		case <-held.C:
			if pending {
				sample()
			}
		}
	}
}

// follow rebuilds the state on every change until the last stream closes.
func (s *Server) follow(ctx context.Context) error {
	changes, stop := s.src.Changes()
	defer stop()
	defer s.setLive(false)
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
		} else {
			if failing {
				s.log.Info("dashboard: network state readable again")
				failing = false
			}
			s.setLive(true)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changes:
				break wait
			case <-tick.C:
				break wait
			case <-s.demand:
				if !s.watched() {
					return nil
				}
			}
		}
	}
}

func (s *Server) setLive(v bool) {
	s.mu.Lock()
	s.live = v
	s.mu.Unlock()
}

// update reads the Source once and publishes the derived state.
func (s *Server) update(ctx context.Context) error {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	return s.updateLocked(ctx)
}

func (s *Server) updateLocked(ctx context.Context) error {
	began := time.Now()
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
	s.builtAt = began
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

// sample feeds the tunnels' history and state tracking from the Sampler:
// the tunnels of the last State with what their edges report now, plus
// any tunnel an edge reports that the last State did not have.
func (s *Server) sample(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sites, reported, err := s.sampler.Sample(rctx)
	if err != nil {
		return err
	}
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	byID := make(map[string]Tunnel, len(reported))
	for _, t := range reported {
		byID[t.ID] = t
	}
	tunnels := make([]Tunnel, 0, len(s.ends)+len(reported))
	for id, ends := range s.ends {
		t := byID[id]
		delete(byID, id)
		t.ID, t.A, t.B = id, ends.A, ends.B
		// The end order of a full State, for the same worst-report choice.
		slices.SortStableFunc(t.Reports, func(x, y EndReport) int {
			return cmp.Compare(endIndex(&t, x.Site), endIndex(&t, y.Site))
		})
		tunnels = append(tunnels, t)
	}
	for _, t := range byID {
		tunnels = append(tunnels, t)
	}
	slices.SortFunc(tunnels, func(a, b Tunnel) int { return strings.Compare(a.ID, b.ID) })
	bySite := make(map[string]Site, len(sites))
	for _, site := range sites {
		bySite[site.Name] = site
	}
	for i := range tunnels {
		deriveTunnel(&tunnels[i], bySite)
	}
	now := s.now().UTC()
	s.track.observe(now, tunnels)
	s.hist.observe(now, tunnels)
	return nil
}

func endIndex(t *Tunnel, site string) int {
	switch site {
	case t.A.Site:
		return 0
	case t.B.Site:
		return 1
	}
	return 2
}

// derive completes a State read from the Source: tunnel states, change
// times, events, history and the summary. buildMu is held.
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
	s.ends = make(map[string]Tunnel, len(st.Tunnels))
	for _, t := range st.Tunnels {
		s.ends[t.ID] = Tunnel{A: t.A, B: t.B}
	}
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
	s.pokeDemand()
	return sub, func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
		s.pokeDemand()
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
	s.pokeDemand()
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
	body, version, ok := s.fresh(r.Context())
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

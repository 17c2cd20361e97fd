// Package health owns what edges report about themselves.
//
// Edges report every second (and at once on a change), so a report's
// figures (RTT, jitter, loss, byte counters) change nearly every time while
// its state rarely does. The Registry therefore keeps the latest report of
// every edge whose Sync stream this process serves in memory, and the reads
// (All, Get) serve those from memory; etcd gets a copy only when the
// report's state fingerprint changes (see Fingerprint) or when the copy is
// older than the summary period (30 s by default), so other replicas and a
// restarted controller see every state change at once and the figures at
// most a summary period old.
//
// The copy in etcd lives under a lease held by the session: the lease is
// renewed on every report and revoked when the stream ends, and it expires
// on its own if the controller dies, so an edge that falls silent shows as
// down without anybody having to notice.
//
// Subscribe tells the dashboard about every report held in memory, and
// whether its state changed.
package health

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

const (
	liveDir = "health/live/"
	seenDir = "health/seen/"
	// LeaseTTL is how long a report outlives the last sign of its edge.
	LeaseTTL = 15 * time.Second
	// DefaultSummaryPeriod bounds the age of a connected edge's report in
	// etcd while only its figures change.
	DefaultSummaryPeriod = 30 * time.Second
)

// ErrClosed is returned by a Session's Report after Close.
var ErrClosed = errors.New("health session closed")

// TunnelStatus is one tunnel as its edge reports it.
type TunnelStatus struct {
	TunnelID   string `json:"tunnel_id"`
	State      string `json:"state"` // up, degraded, down
	LinkUp     bool   `json:"link_up"`
	IKEState   string `json:"ike_state,omitempty"`
	ChildState string `json:"child_state,omitempty"`
	BytesIn    uint64 `json:"bytes_in,omitempty"`
	BytesOut   uint64 `json:"bytes_out,omitempty"`
	PacketsIn  uint64 `json:"packets_in,omitempty"`
	PacketsOut uint64 `json:"packets_out,omitempty"`
	Detail     string `json:"detail,omitempty"`
	// Path health from the edge's probes; Probed is false (and the rest
	// zero) when the edge does not probe the tunnel.
	Probed       bool    `json:"probed,omitempty"`
	ProbeState   string  `json:"probe_state,omitempty"` // unknown, up, down
	RTTMillis    float64 `json:"rtt_ms,omitempty"`      // smoothed
	RTTP99Millis float64 `json:"rtt_p99_ms,omitempty"`
	JitterMillis float64 `json:"jitter_ms,omitempty"`
	LossPct      float64 `json:"loss_pct,omitempty"`
	Transitions  uint64  `json:"transitions,omitempty"` // probe state changes since the agent started
	// Usable: the tunnel carries traffic (probes up, hold-down over).
	Usable bool `json:"usable,omitempty"`
}

// BGPPeer is one BGP session as its edge reports it.
type BGPPeer struct {
	Neighbor   string `json:"neighbor"`
	ASN        uint32 `json:"asn"`
	TunnelID   string `json:"tunnel_id,omitempty"`
	State      string `json:"state"`
	Received   uint64 `json:"received,omitempty"`
	Accepted   uint64 `json:"accepted,omitempty"`
	Advertised uint64 `json:"advertised,omitempty"`
}

// ClassPath is the tunnel an edge steers one traffic class over towards
// one remote site (TunnelID empty: no usable tunnel, ordinary routes).
type ClassPath struct {
	TrafficClass string `json:"traffic_class"`
	RemoteSite   string `json:"remote_site"`
	TunnelID     string `json:"tunnel_id,omitempty"`
	MeetsSLA     bool   `json:"meets_sla,omitempty"`
}

// Report is an edge's latest status. Reports handed out by the Registry
// are shared: read them, do not modify them.
type Report struct {
	Site           string         `json:"site"`
	AgentVersion   string         `json:"agent_version"`
	AppliedVersion int64          `json:"applied_version"`
	Tunnels        []TunnelStatus `json:"tunnels"`
	BGPPeers       []BGPPeer      `json:"bgp_peers,omitempty"`
	ClassPaths     []ClassPath    `json:"class_paths,omitempty"`
	UpdatedAt      time.Time      `json:"updated_at"`
}

// Fingerprint is the state of a report: the agent and applied version,
// each tunnel's state, probe state, usability, link, IKE and child SA
// states, each BGP session's state, and the tunnel each class path uses.
// Figures that move all the time (RTT, jitter, loss, counters, the detail
// text, whether a class meets its SLA right now) are not part of it. Lists
// are sorted first, so an edge that reorders them changes nothing.
func Fingerprint(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "agent %q applied %d\n", r.AgentVersion, r.AppliedVersion)
	tunnels := slices.Clone(r.Tunnels)
	slices.SortFunc(tunnels, func(x, y TunnelStatus) int { return strings.Compare(x.TunnelID, y.TunnelID) })
	for _, t := range tunnels {
		fmt.Fprintf(&b, "tunnel %q state %q probed %t probe %q usable %t link %t ike %q child %q\n",
			t.TunnelID, t.State, t.Probed, t.ProbeState, t.Usable, t.LinkUp, t.IKEState, t.ChildState)
	}
	peers := slices.Clone(r.BGPPeers)
	slices.SortFunc(peers, func(x, y BGPPeer) int {
		return cmp.Or(strings.Compare(x.Neighbor, y.Neighbor), strings.Compare(x.TunnelID, y.TunnelID))
	})
	for _, p := range peers {
		fmt.Fprintf(&b, "bgp %q asn %d tunnel %q state %q\n", p.Neighbor, p.ASN, p.TunnelID, p.State)
	}
	paths := slices.Clone(r.ClassPaths)
	slices.SortFunc(paths, func(x, y ClassPath) int {
		return cmp.Or(strings.Compare(x.TrafficClass, y.TrafficClass), strings.Compare(x.RemoteSite, y.RemoteSite))
	})
	for _, c := range paths {
		fmt.Fprintf(&b, "class %q to %q via %q\n", c.TrafficClass, c.RemoteSite, c.TunnelID)
	}
	return b.String()
}

// Seen is the non-expiring record of an edge's last connection.
type Seen struct {
	AgentVersion string    `json:"agent_version"`
	ConnectedAt  time.Time `json:"connected_at"`
	LastSeen     time.Time `json:"last_seen"`
}

// State of a site's edge.
type State string

const (
	NeverSeen State = "never_seen"
	Up        State = "up"
	Down      State = "down"
)

// Status combines the live report and the seen record.
type Status struct {
	State    State
	Report   Report // zero unless Up
	LastSeen time.Time
	Agent    string
}

// Config tunes a Registry; zero fields take the defaults.
type Config struct {
	// SummaryPeriod: a report whose state did not change is still written
	// to etcd once the last write is this old (DefaultSummaryPeriod).
	SummaryPeriod time.Duration
	// Now is the clock (time.Now); tests move their own.
	Now func() time.Time
}

// Change tells a subscriber that a report held in memory changed.
// Undelivered changes coalesce: StateChanged is true if any of them
// changed the state (the fingerprint, or an edge came or went).
type Change struct {
	StateChanged bool
}

// Registry reads and writes edge status.
//
// Lock order: Session.mu before Registry.mu. Registry.mu is never held
// across a store call; Session.mu is (one session's calls are serial).
type Registry struct {
	st      *store.Store
	now     func() time.Time
	summary time.Duration

	mu   sync.Mutex
	live map[string]live // by site: sessions of this process
	subs map[chan Change]struct{}
}

// live is the latest report of a session held by this process.
type live struct {
	s   *Session
	rep Report
}

// New returns a Registry.
func New(st *store.Store, cfg Config) *Registry {
	r := &Registry{st: st, now: cfg.Now, summary: cfg.SummaryPeriod, live: map[string]live{}, subs: map[chan Change]struct{}{}}
	if r.now == nil {
		r.now = time.Now
	}
	if r.summary <= 0 {
		r.summary = DefaultSummaryPeriod
	}
	return r
}

// Subscribe returns a channel that hears about every report held in
// memory (coalesced: it holds at most one undelivered Change) and a func
// that ends the subscription.
func (r *Registry) Subscribe() (<-chan Change, func()) {
	ch := make(chan Change, 1)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.subs, ch)
		r.mu.Unlock()
	}
}

// notifyLocked tells every subscriber, merging with an undelivered Change.
// r.mu is held, so this is the only sender: after the drain the send
// cannot block.
func (r *Registry) notifyLocked(c Change) {
	for ch := range r.subs {
		select {
		case old := <-ch:
			c.StateChanged = c.StateChanged || old.StateChanged
		default:
		}
		ch <- c
	}
}

func (r *Registry) publish(s *Session, rep Report, stateChanged bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[s.site] = live{s: s, rep: rep}
	r.notifyLocked(Change{StateChanged: stateChanged})
}

// forget drops s's report from memory, unless a newer session of the same
// site replaced it.
func (r *Registry) forget(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.live[s.site]; ok && l.s == s {
		delete(r.live, s.site)
		r.notifyLocked(Change{StateChanged: true})
	}
}

// Session is one connected edge's reporting session; it owns a lease.
type Session struct {
	r     *Registry
	site  string
	lease int64

	mu        sync.Mutex
	closed    bool
	heardFP   string    // fingerprint of the last report received
	writtenFP string    // ... and of the last one written to etcd
	writtenAt time.Time // when that was
	seen      Seen
	seenRev   int64 // mod revision of the seen record Connect wrote
}

// Connect starts a session for site: it grants the lease and records the
// connection; the edge shows as up at once.
func (r *Registry) Connect(ctx context.Context, site, agentVersion string) (*Session, error) {
	lease, err := r.st.Grant(ctx, LeaseTTL)
	if err != nil {
		return nil, err
	}
	now := r.now().UTC()
	s := &Session{r: r, site: site, lease: lease, seen: Seen{AgentVersion: agentVersion, ConnectedAt: now, LastSeen: now}}
	raw, _ := json.Marshal(s.seen)
	_, rev, err := r.st.Txn(ctx, nil, []store.Op{store.Put(seenDir+site, raw)})
	if err != nil {
		r.st.Revoke(ctx, lease)
		return nil, err
	}
	s.seenRev = rev
	if err := s.Report(ctx, Report{AgentVersion: agentVersion}); err != nil {
		s.Close(ctx)
		return nil, err
	}
	return s, nil
}

// Report records a status report. It becomes what the reads return at
// once, renews the lease, and is written to etcd when its fingerprint
// differs from the last one written or the last write is older than the
// summary period.
func (s *Session) Report(ctx context.Context, rep Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	rep.Site = s.site
	if rep.AgentVersion == "" {
		rep.AgentVersion = s.seen.AgentVersion
	}
	now := s.r.now().UTC()
	rep.UpdatedAt = now
	fp := Fingerprint(rep)
	changed := fp != s.heardFP
	s.heardFP = fp
	// Memory first: a reader woken by the etcd write below (a watch) must
	// find this report already.
	s.r.publish(s, rep, changed)
	// Writing with the lease does not renew it; only a keep-alive does.
	if err := s.r.st.KeepAlive(ctx, s.lease); err != nil {
		return fmt.Errorf("renew the report lease of %s: %w", s.site, err)
	}
	if fp == s.writtenFP && now.Sub(s.writtenAt) < s.r.summary {
		return nil
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report of %s: %w", s.site, err)
	}
	if _, _, err := s.r.st.Txn(ctx, nil, []store.Op{store.PutWithLease(liveDir+s.site, raw, s.lease)}); err != nil {
		return fmt.Errorf("store report of %s: %w", s.site, err)
	}
	s.writtenFP, s.writtenAt = fp, now
	return nil
}

// Close ends the session: the edge shows as down at once. Reports after
// Close fail with ErrClosed.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// Forget the in-memory report only after etcd's is gone, so a reader
	// in between never falls back to an older report of a live edge.
	defer s.r.forget(s)
	s.seen.LastSeen = s.r.now().UTC()
	raw, _ := json.Marshal(s.seen)
	// Only over the record Connect wrote: a newer session of the site owns
	// a newer one, and a deleted site's (Forget) must stay deleted.
	_, _, err := s.r.st.Txn(ctx, []store.Cmp{store.Unchanged(seenDir+s.site, s.seenRev)}, []store.Op{store.Put(seenDir+s.site, raw)})
	if rerr := s.r.st.Revoke(ctx, s.lease); err == nil {
		err = rerr
	}
	return err
}

// All returns the status of every site that has one (never-seen sites are
// absent from the map): etcd's, with the reports of the sessions this
// process holds taken from memory.
func (r *Registry) All(ctx context.Context) (map[string]Status, error) {
	kvs, _, err := r.st.List(ctx, "health/", 0)
	if err != nil {
		return nil, err
	}
	out := map[string]Status{}
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, liveDir):
			var rep Report
			if err := json.Unmarshal(kv.Value, &rep); err != nil {
				return nil, fmt.Errorf("stored report %s: %w", kv.Key, err)
			}
			out[rep.Site] = upStatus(out[rep.Site], rep)
		case strings.HasPrefix(kv.Key, seenDir):
			site := strings.TrimPrefix(kv.Key, seenDir)
			var seen Seen
			if err := json.Unmarshal(kv.Value, &seen); err != nil {
				return nil, fmt.Errorf("stored seen %s: %w", kv.Key, err)
			}
			st := out[site]
			if st.State != Up {
				st.State, st.Agent, st.LastSeen = Down, seen.AgentVersion, seen.LastSeen
			}
			out[site] = st
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for site, l := range r.live {
		if fresh(l, now) {
			out[site] = upStatus(out[site], l.rep)
		}
	}
	return out, nil
}

// fresh reports whether a report held in memory still speaks for its edge.
// An edge whose stream stays open but which stopped reporting lets the
// lease expire; etcd then says what every replica says (down), instead of
// this process showing the last report forever.
func fresh(l live, now time.Time) bool { return now.Sub(l.rep.UpdatedAt) < LeaseTTL }

func upStatus(st Status, rep Report) Status {
	st.State, st.Report, st.Agent, st.LastSeen = Up, rep, rep.AgentVersion, rep.UpdatedAt
	return st
}

// Get returns one site's status; a session of this process answers from
// memory without reading etcd.
func (r *Registry) Get(ctx context.Context, site string) (Status, error) {
	r.mu.Lock()
	l, ok := r.live[site]
	r.mu.Unlock()
	if ok && fresh(l, r.now()) {
		return upStatus(Status{}, l.rep), nil
	}
	all, err := r.All(ctx)
	if err != nil {
		return Status{}, err
	}
	st, ok := all[site]
	if !ok {
		return Status{State: NeverSeen}, nil
	}
	return st, nil
}

// Forget removes a deleted site's status.
func (r *Registry) Forget(ctx context.Context, site string) error {
	_, _, err := r.st.Txn(ctx, nil, []store.Op{store.Delete(liveDir + site), store.Delete(seenDir + site)})
	return err
}

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
// most a summary period old. A report that needs no write touches neither
// etcd nor the allocator.
//
// The copies in etcd ("live" keys) live under one lease per controller
// process, granted by Run and kept alive over the etcd client's one
// long-lived keep-alive stream (an earlier design granted a lease per edge
// session and renewed it with a one-off keep-alive, a new gRPC stream, on
// every report: at a thousand edges that was most of the controller's etcd
// traffic). The guarantees stay those of a lease per session:
//   - a session that ends deletes its live key (guarded by the revision it
//     wrote, so a newer session of the same site keeps its own);
//   - a session whose edge stops reporting while its stream stays open has
//     its live key deleted by Run once the last report is LeaseTTL old;
//   - if the controller dies, the lease expires LeaseTTL after its last
//     renewal and every live key of its edges goes with it;
//   - if the lease is lost while the process lives (etcd out of reach for
//     longer than LeaseTTL), Run grants a new one, and every session writes
//     its report again under it with its next report.
//
// Other replicas' reports are read from a copy of the health keys that
// Run keeps current with one watch; each stored record is decoded once per
// change, when a read first needs it.
//
// Subscribe tells the dashboard about every report held in memory, and
// whether its state changed.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

const (
	liveDir = "health/live/"
	seenDir = "health/seen/"
	// LeaseTTL is how long a report outlives the last sign of its edge, and
	// the TTL of the process lease the reports live under.
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
	// PSKSerial is the key set serial the edge has loaded (key rotation).
	PSKSerial uint64 `json:"psk_serial,omitempty"`
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
	// Logger: nil discards.
	Logger *slog.Logger
}

// Change tells a subscriber that a report held in memory changed.
// Undelivered changes coalesce: StateChanged is true if any of them
// changed the state (the fingerprint, or an edge came or went).
type Change struct {
	StateChanged bool
}

// Registry reads and writes edge status. Run must be running for the
// process lease to be kept alive and for the reads to use the watched
// copy of etcd (without Run they read etcd on every call).
//
// Lock order: Session.mu, then leaseMu, then Registry.mu or cache.mu
// (never both). Registry.mu and cache.mu are never held across a store
// call; Session.mu is (one session's calls are serial), and so is leaseMu
// (grants are serial).
type Registry struct {
	st         *store.Store
	log        *slog.Logger
	now        func() time.Time
	summary    time.Duration
	sweepEvery time.Duration // how often Run looks for silent sessions

	leaseMu sync.Mutex
	// lease is the process lease, 0 while there is none (not granted yet,
	// or lost). Written under leaseMu; Report reads it without.
	lease atomic.Int64
	// stopKeeping ends the keep-alive of the current lease early, when a
	// write finds it gone before the keep-alive does (leaseMu).
	stopKeeping context.CancelFunc

	mu   sync.Mutex
	live map[string]live // by site: sessions of this process
	subs map[chan Change]struct{}

	cache *cache
}

// live is the latest report of a session held by this process.
type live struct {
	s   *Session
	rep Report
}

// New returns a Registry.
func New(st *store.Store, cfg Config) *Registry {
	r := &Registry{st: st, log: cfg.Logger, now: cfg.Now, summary: cfg.SummaryPeriod, sweepEvery: LeaseTTL / 5,
		live: map[string]live{}, subs: map[chan Change]struct{}{}, cache: newCache()}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
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

// Session is one connected edge's reporting session.
type Session struct {
	r    *Registry
	site string

	mu        sync.Mutex
	closed    bool
	heardFP   uint64    // fingerprint of the last report received
	heardAt   time.Time // ... and when
	writtenFP uint64    // ... of the last one written to etcd
	writtenAt time.Time // when that was
	// writtenLease is the lease of that write, liveRev the revision it
	// made; 0 when etcd holds no report of this session (none written yet,
	// or deleted because the edge fell silent).
	writtenLease int64
	liveRev      int64
	seen         Seen
	seenRev      int64 // mod revision of the seen record Connect wrote
}

// Connect starts a session for site: it records the connection; the edge
// shows as up at once.
func (r *Registry) Connect(ctx context.Context, site, agentVersion string) (*Session, error) {
	now := r.now().UTC()
	s := &Session{r: r, site: site, seen: Seen{AgentVersion: agentVersion, ConnectedAt: now, LastSeen: now}}
	raw, _ := json.Marshal(s.seen)
	_, rev, err := r.st.Txn(ctx, nil, []store.Op{store.Put(seenDir+site, raw)})
	if err != nil {
		return nil, err
	}
	r.cache.put(seenDir+site, raw, rev)
	s.seenRev = rev
	if err := s.Report(ctx, Report{AgentVersion: agentVersion}); err != nil {
		s.Close(ctx)
		return nil, err
	}
	return s, nil
}

// Report records a status report. It becomes what the reads return at
// once, and is written to etcd when its fingerprint differs from the last
// one written, the last write is older than the summary period, or the
// last write's lease is gone. Otherwise it neither touches etcd nor
// allocates.
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
	changed := fp != s.heardFP || s.heardAt.IsZero()
	s.heardFP, s.heardAt = fp, now
	// Memory first: a reader woken by the etcd write below (a watch) must
	// find this report already.
	s.r.publish(s, rep, changed)
	if lease := s.r.lease.Load(); lease != 0 && lease == s.writtenLease &&
		fp == s.writtenFP && now.Sub(s.writtenAt) < s.r.summary {
		return nil
	}
	return s.writeLocked(ctx, rep, fp, now)
}

// writeLocked writes rep under the process lease. A write that finds the
// lease gone (expired before the keep-alive noticed) tries once more under
// a new one.
func (s *Session) writeLocked(ctx context.Context, rep Report, fp uint64, now time.Time) error {
	raw, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report of %s: %w", s.site, err)
	}
	for attempt := 0; ; attempt++ {
		lease, err := s.r.leaseID(ctx)
		if err != nil {
			return fmt.Errorf("store report of %s: %w", s.site, err)
		}
		_, rev, err := s.r.st.Txn(ctx, nil, []store.Op{store.PutWithLease(liveDir+s.site, raw, lease)})
		if err != nil {
			if attempt == 0 && store.LeaseNotFound(err) {
				s.r.leaseLost(lease, err)
				continue
			}
			return fmt.Errorf("store report of %s: %w", s.site, err)
		}
		s.r.cache.put(liveDir+s.site, raw, rev)
		s.writtenFP, s.writtenAt, s.writtenLease, s.liveRev = fp, now, lease, rev
		return nil
	}
}

// deleteLiveLocked deletes the report this session wrote, unless a newer
// session (of this or another replica) has written the key since, or
// nothing of this session is stored.
func (s *Session) deleteLiveLocked(ctx context.Context) error {
	if s.liveRev == 0 {
		return nil
	}
	key := liveDir + s.site
	ok, rev, err := s.r.st.Txn(ctx, []store.Cmp{store.Unchanged(key, s.liveRev)}, []store.Op{store.Delete(key)})
	if err != nil {
		return err
	}
	if ok {
		s.r.cache.del(key, rev)
	}
	s.writtenLease, s.liveRev = 0, 0
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
	ok, rev, err := s.r.st.Txn(ctx, []store.Cmp{store.Unchanged(seenDir+s.site, s.seenRev)}, []store.Op{store.Put(seenDir+s.site, raw)})
	if err == nil && ok {
		s.r.cache.put(seenDir+s.site, raw, rev)
	}
	if derr := s.deleteLiveLocked(ctx); err == nil {
		err = derr
	}
	return err
}

// expireIfSilent deletes the stored report of a session whose edge has
// not reported for LeaseTTL: what a lease per session did on its own. The
// edge's next report writes it again.
func (s *Session) expireIfSilent(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.r.now().Sub(s.heardAt) < LeaseTTL {
		return nil
	}
	return s.deleteLiveLocked(ctx)
}

// All returns the status of every site that has one (never-seen sites are
// absent from the map): etcd's, with the reports of the sessions this
// process holds taken from memory.
func (r *Registry) All(ctx context.Context) (map[string]Status, error) {
	if !r.cache.ready() {
		return r.allFromStore(ctx)
	}
	out := map[string]Status{}
	r.freshInto(out)
	if err := r.cache.fill(out); err != nil {
		return nil, err
	}
	return out, nil
}

// freshInto sets the sites whose session this process holds, with a fresh
// report, as up.
func (r *Registry) freshInto(out map[string]Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for site, l := range r.live {
		if fresh(l, now) {
			out[site] = upStatus(Status{}, l.rep)
		}
	}
}

// allFromStore is All reading etcd, for a Registry whose Run has not read
// it yet (or never will: a read-only registry).
func (r *Registry) allFromStore(ctx context.Context) (map[string]Status, error) {
	kvs, _, err := r.st.List(ctx, "health/", 0)
	if err != nil {
		return nil, err
	}
	out := map[string]Status{}
	r.freshInto(out)
	c := newCache()
	c.load(kvs, 0)
	if err := c.fill(out); err != nil {
		return nil, err
	}
	return out, nil
}

// fresh reports whether a report held in memory still speaks for its edge.
// An edge whose stream stays open but which stopped reporting has its
// stored report deleted by Run after LeaseTTL; etcd then says what every
// replica says (down), instead of this process showing the last report
// forever.
func fresh(l live, now time.Time) bool { return now.Sub(l.rep.UpdatedAt) < LeaseTTL }

func upStatus(st Status, rep Report) Status {
	st.State, st.Report, st.Agent, st.LastSeen = Up, rep, rep.AgentVersion, rep.UpdatedAt
	return st
}

func downStatus(seen Seen) Status {
	return Status{State: Down, Agent: seen.AgentVersion, LastSeen: seen.LastSeen}
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
	if r.cache.ready() {
		return r.cache.status(site)
	}
	all, err := r.allFromStore(ctx)
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
	_, rev, err := r.st.Txn(ctx, nil, []store.Op{store.Delete(liveDir + site), store.Delete(seenDir + site)})
	if err == nil {
		r.cache.del(liveDir+site, rev)
		r.cache.del(seenDir+site, rev)
	}
	return err
}

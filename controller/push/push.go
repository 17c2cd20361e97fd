// Package push owns the delivery of desired state to connected edges.
//
// One Hub per controller process listens to the network view's changes
// (network.Listener: which sites and tunnels changed) and rebuilds, for
// each subscribed site the change touches, only what changed: the site's
// header and the touched tunnels (a whole state only for a topology
// change, a hub change, or a small spoke state). Each Subscription keeps
// the state its edge should hold ("current", with a hash per tunnel) and
// what it was last sent; Next turns the difference into one update: a full
// state for an edge that holds nothing known, or a delta (only added,
// changed and removed tunnels) for an edge that applies deltas. Updates
// coalesce: however many changes happen while an edge is slow, it gets one
// update with their sum. A slow subscriber never blocks the hub.
//
// A site's state is withheld while its tunnels are not all allocated
// (network.Built.Ready): an edge never gets a half-done change.
package push

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
)

// Update is what a subscriber sends its edge: a new desired state (all of
// it, or a delta), or Err when the site can no longer be served (deleted).
type Update struct {
	// State's Tunnels are every tunnel (full) or the added and changed
	// ones (delta); every other field is complete either way.
	State network.DesiredState
	Delta bool
	// BaseHash is the content hash the delta applies to (delta only).
	BaseHash []byte
	// Removed lists the ids of tunnels removed (delta only).
	Removed []string
	// Hash identifies the complete content after this update.
	Hash []byte
	// Unchanged confirms that the edge's held state (Hello.state_hash) is
	// current; nothing else is set.
	Unchanged bool
	Err       error
}

type entry struct {
	t    network.EdgeTunnel
	hash [32]byte
}

// Subscription is one edge's feed.
type Subscription struct {
	site   string
	deltas bool
	h      *Hub
	notify chan struct{}

	mu      sync.Mutex
	version int64 // view revision of the newest build applied
	ready   bool
	gone    bool
	hdr     network.DesiredState // Tunnels nil
	hdrHash [32]byte
	cur     map[string]entry
	acc     [32]byte // XOR of cur's tunnel hashes
	// sent is what the edge holds (tunnel hashes by id) and sentHash its
	// content hash; sentOK is false while the edge holds nothing known.
	sent     map[string][32]byte
	sentHash [32]byte
	sentOK   bool
	// confirm: the edge's held state was found current at Subscribe; the
	// next Next says so (once) if nothing changed meanwhile.
	confirm bool
}

// C is signalled when Next may have an update.
func (s *Subscription) C() <-chan struct{} { return s.notify }

// Close stops the feed.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	if m := s.h.subs[s.site]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(s.h.subs, s.site)
		}
	}
	s.h.mu.Unlock()
}

func (s *Subscription) poke() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Hub fans desired state out to subscriptions.
type Hub struct {
	net  *network.Network
	log  *slog.Logger
	lis  *network.Listener
	mu   sync.Mutex // guards subs
	subs map[string]map[*Subscription]struct{}
}

// New returns a Hub; Run drives it. It starts listening to the view at
// once, so no change after New is missed.
func New(n *network.Network, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{net: n, log: log, lis: n.Listen(), subs: map[string]map[*Subscription]struct{}{}}
}

// Subscribe registers site's edge. held is the content hash of the state
// the edge holds (Hello.state_hash, may be empty): when it is the current
// one nothing is sent until something changes. deltas says the edge
// applies deltas.
func (h *Hub) Subscribe(ctx context.Context, site string, held []byte, deltas bool) (*Subscription, error) {
	s := &Subscription{site: site, deltas: deltas, h: h, notify: make(chan struct{}, 1)}
	// Register first: a change from here on reaches s through Run, and
	// builds apply in view-revision order, so the build below can never
	// overwrite a newer one.
	h.mu.Lock()
	if h.subs[site] == nil {
		h.subs[site] = map[*Subscription]struct{}{}
	}
	h.subs[site][s] = struct{}{}
	h.mu.Unlock()
	b, err := h.net.Build(site, nil)
	if err == nil && b.Missing {
		err = fmt.Errorf("%w: site %q", intent.ErrNotFound, site)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.mu.Lock()
	s.apply(b)
	if len(held) == 32 && s.ready && [32]byte(held) == s.content() {
		s.markSent()
		s.confirm = true
	}
	s.mu.Unlock()
	s.poke()
	return s, nil
}

// Run applies the view's changes to the subscriptions until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.lis.C():
		}
		// Let a burst of changes (one reconcile's transactions) arrive, so
		// the edges get one update for it.
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
		h.update(ctx, h.lis.Take())
	}
}

// work is one site to rebuild: only the tunnel ids in only, or everything
// (only == nil).
type work struct {
	site string
	only map[string]bool
	subs []*Subscription
}

func (h *Hub) update(ctx context.Context, d network.Dirty) {
	legacyTransit := false
	h.net.Read(func(s *network.Snapshot) {
		legacyTransit = s.Topology.Mode == intent.ModeHubAndSpoke && len(s.Topology.TransitPrefixes) == 0
	})
	all := d.All || d.Hubs || (legacyTransit && len(d.Sites) > 0)
	h.mu.Lock()
	var jobs []work
	if all {
		for site, m := range h.subs {
			jobs = append(jobs, work{site: site, subs: subsOf(m)})
		}
	} else {
		only := map[string]map[string]bool{}
		full := map[string]bool{}
		mark := func(site, id string) {
			if _, ok := h.subs[site]; !ok {
				return
			}
			if only[site] == nil {
				only[site] = map[string]bool{}
			}
			only[site][id] = true
		}
		for site := range d.Sites {
			full[site] = true
		}
		for id, ends := range d.Tunnels {
			mark(ends[0], id)
			mark(ends[1], id)
		}
		h.mu.Unlock()
		// A changed site record or address changes its peers' tunnels to it.
		peerIDs := map[string][]string{}
		for site := range d.Sites {
			peerIDs[site] = h.net.TunnelsOf(site)
		}
		h.mu.Lock()
		for site, ids := range peerIDs {
			for _, id := range ids {
				a, b, ok := strings.Cut(id, "~")
				if !ok {
					continue
				}
				for _, end := range []string{a, b} {
					if name, _, _ := strings.Cut(end, "."); name != site {
						mark(name, id)
					}
				}
			}
		}
		for site, m := range h.subs {
			switch {
			case full[site]:
				jobs = append(jobs, work{site: site, subs: subsOf(m)})
			case only[site] != nil:
				jobs = append(jobs, work{site: site, only: only[site], subs: subsOf(m)})
			}
		}
	}
	h.mu.Unlock()
	// Builds read the view under its read lock and may run in parallel.
	ch := make(chan work)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(1, len(jobs)/64+1)) {
		wg.Go(func() {
			for j := range ch {
				b, err := h.net.Build(j.site, j.only)
				if err != nil {
					h.log.Error("desired state build failed", "site", j.site, "err", err)
					continue
				}
				for _, s := range j.subs {
					s.mu.Lock()
					s.apply(b)
					send := s.gone || (s.ready && (!s.sentOK || s.content() != s.sentHash))
					s.mu.Unlock()
					if send {
						s.poke()
					}
				}
			}
		})
	}
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
}

func subsOf(m map[*Subscription]struct{}) []*Subscription {
	out := make([]*Subscription, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	return out
}

func hashJSON(v any) [32]byte {
	raw, _ := json.Marshal(v)
	return sha256.Sum256(raw)
}

func xor(a *[32]byte, b [32]byte) {
	for i := range a {
		a[i] ^= b[i]
	}
}

// apply folds a build into current. Called with s.mu held.
func (s *Subscription) apply(b network.Built) {
	if b.Missing {
		s.gone = true
		return
	}
	if b.State.Version < s.version {
		return // an older build finished after a newer one
	}
	s.version = b.State.Version
	s.ready = b.Ready
	s.hdr = b.State
	s.hdr.Tunnels = nil
	s.hdrHash = hashJSON(s.hdr.Site) // Version excluded: content only
	xor(&s.hdrHash, hashJSON(s.hdr.Topology))
	if b.Full {
		s.cur = make(map[string]entry, len(b.State.Tunnels))
		s.acc = [32]byte{}
	}
	for _, t := range b.State.Tunnels {
		e := entry{t: t, hash: hashJSON(t)}
		if old, ok := s.cur[t.ID]; ok {
			xor(&s.acc, old.hash)
		}
		s.cur[t.ID] = e
		xor(&s.acc, e.hash)
	}
	for _, id := range b.Gone {
		if old, ok := s.cur[id]; ok {
			xor(&s.acc, old.hash)
			delete(s.cur, id)
		}
	}
}

// content is the hash of the complete current state.
func (s *Subscription) content() [32]byte {
	var buf [64]byte
	copy(buf[:32], s.hdrHash[:])
	copy(buf[32:], s.acc[:])
	return sha256.Sum256(buf[:])
}

// markSent records that the edge holds current. Called with s.mu held.
func (s *Subscription) markSent() {
	s.sent = make(map[string][32]byte, len(s.cur))
	for id, e := range s.cur {
		s.sent[id] = e.hash
	}
	s.sentHash = s.content()
	s.sentOK = true
}

// Next returns the update that brings the edge from what it was sent to
// current, and records it as sent; ok is false when there is nothing to
// send (nothing changed, or the state is not ready).
func (s *Subscription) Next() (u Update, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return Update{Err: fmt.Errorf("%w: site %q", intent.ErrNotFound, s.site)}, true
	}
	if !s.ready {
		return Update{}, false
	}
	hash := s.content()
	if s.sentOK && hash == s.sentHash {
		if s.confirm {
			s.confirm = false
			return Update{State: network.DesiredState{Version: s.version, Site: s.hdr.Site}, Unchanged: true, Hash: hash[:]}, true
		}
		return Update{}, false
	}
	s.confirm = false
	u = Update{State: s.hdr, Hash: hash[:]}
	if !s.sentOK || !s.deltas {
		for _, e := range s.cur {
			u.State.Tunnels = append(u.State.Tunnels, e.t)
		}
		s.markSent()
	} else {
		base := s.sentHash
		u.Delta, u.BaseHash = true, base[:]
		for id, e := range s.cur {
			if h, ok := s.sent[id]; !ok || h != e.hash {
				u.State.Tunnels = append(u.State.Tunnels, e.t)
				s.sent[id] = e.hash
			}
		}
		for id := range s.sent {
			if _, ok := s.cur[id]; !ok {
				u.Removed = append(u.Removed, id)
				delete(s.sent, id)
			}
		}
		slices.Sort(u.Removed)
		s.sentHash = hash
	}
	slices.SortFunc(u.State.Tunnels, func(a, b network.EdgeTunnel) int { return cmp.Compare(a.ID, b.ID) })
	return u, true
}

// Package push owns the delivery of desired state to connected edges. One
// Hub per controller process watches the store; on every change it reads one
// snapshot, computes the desired state of each subscribed site from it, and
// hands a subscriber a new version only when the content of its own state
// changed. A slow subscriber never blocks the hub: each subscription holds
// only the latest undelivered state.
package push

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/store"
)

// Update is what a subscriber receives: a new desired state, or Err when
// the site can no longer be served (deleted).
type Update struct {
	State network.DesiredState
	Err   error
}

// Subscription is one edge's feed.
type Subscription struct {
	site string
	ch   chan Update
	hash [32]byte
	h    *Hub
}

// C delivers updates; it holds at most the latest one.
func (s *Subscription) C() <-chan Update { return s.ch }

// Close stops the feed.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	delete(s.h.subs, s)
	s.h.mu.Unlock()
}

// Hub fans desired state out to subscriptions.
type Hub struct {
	net  *network.Network
	st   *store.Store
	log  *slog.Logger
	mu   sync.Mutex // guards subs and each sub's hash
	subs map[*Subscription]bool
	kick chan struct{}
	// pendingSince is when the hub first saw an intent whose tunnels were
	// not reconciled yet (zero when converged); only Run's goroutine uses it.
	pendingSince time.Time
}

// maxPending bounds how long edges wait for a reconcile to finish before
// they are sent the intermediate state anyway.
const maxPending = 5 * time.Second

// New returns a Hub; Run drives it.
func New(n *network.Network, st *store.Store, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{net: n, st: st, log: log, subs: map[*Subscription]bool{}, kick: make(chan struct{}, 1)}
}

// Subscribe registers site and queues its current desired state.
func (h *Hub) Subscribe(ctx context.Context, site string) (*Subscription, error) {
	s := &Subscription{site: site, ch: make(chan Update, 1), h: h}
	snap, err := h.net.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	d, err := h.net.DesiredState(snap, site)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	s.hash = contentHash(d)
	s.ch <- Update{State: d}
	h.subs[s] = true
	h.mu.Unlock()
	// A change between the snapshot and the registration would be missed
	// without this extra pass.
	h.Kick()
	return s, nil
}

// Kick asks for a recomputation (coalesced).
func (h *Hub) Kick() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Run watches the store and recomputes on every change until ctx ends.
// Changes arriving within debounce of each other are handled once.
func (h *Hub) Run(ctx context.Context) {
	const debounce = 50 * time.Millisecond
	var watches []<-chan int64
	for _, p := range network.WatchPrefixes {
		watches = append(watches, h.st.Watch(ctx, p))
	}
	merged := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for _, w := range watches {
		wg.Go(func() {
			for range w {
				select {
				case merged <- struct{}{}:
				default:
				}
			}
		})
	}
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-merged:
		case <-h.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(debounce):
		}
		if err := h.recompute(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("desired state recomputation failed", "err", err)
			time.AfterFunc(time.Second, h.Kick)
		}
	}
}

func (h *Hub) recompute(ctx context.Context) error {
	h.mu.Lock()
	n := len(h.subs)
	h.mu.Unlock()
	if n == 0 {
		return nil
	}
	snap, err := h.net.Snapshot(ctx)
	if err != nil {
		return err
	}
	// An intent change is written before its tunnels are (re)allocated.
	// Sending the state in between would make edges apply a half-done
	// change (a new peer without its tunnel); the reconcile's own writes
	// wake the hub again, so wait for them, within reason.
	if !snap.Converged() {
		if h.pendingSince.IsZero() {
			h.pendingSince = time.Now()
		}
		if time.Since(h.pendingSince) < maxPending {
			time.AfterFunc(time.Second, h.Kick)
			return nil
		}
	}
	h.pendingSince = time.Time{}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		d, err := h.net.DesiredState(snap, s.site)
		if errors.Is(err, intent.ErrNotFound) {
			deliver(s.ch, Update{Err: err})
			delete(h.subs, s)
			continue
		}
		if err != nil {
			return err
		}
		hash := contentHash(d)
		if hash == s.hash {
			continue
		}
		s.hash = hash
		deliver(s.ch, Update{State: d})
	}
	return nil
}

// deliver replaces an undelivered update with the newer one.
func deliver(ch chan Update, u Update) {
	select {
	case <-ch:
	default:
	}
	ch <- u
}

// contentHash identifies a desired state's content, ignoring its version.
func contentHash(d network.DesiredState) [32]byte {
	d.Version = 0
	raw, _ := json.Marshal(d)
	return sha256.Sum256(raw)
}

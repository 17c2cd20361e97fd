package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

// Run keeps the process lease alive (granting a new one whenever it is
// lost), keeps the copy of the health keys current for the reads, and
// deletes the stored reports of edges that stopped reporting, until ctx
// ends. It then revokes the lease, so that a controller that stops cleanly
// takes its edges' reports with it at once instead of LeaseTTL later.
func (r *Registry) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.keepLease(ctx) })
	wg.Go(func() { r.follow(ctx) })
	wg.Go(func() { r.sweep(ctx) })
	wg.Wait()
}

// leaseID returns the process lease, granting one if there is none.
func (r *Registry) leaseID(ctx context.Context) (int64, error) {
	if id := r.lease.Load(); id != 0 {
		return id, nil
	}
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if id := r.lease.Load(); id != 0 {
		return id, nil
	}
	id, err := r.st.Grant(ctx, LeaseTTL)
	if err != nil {
		return 0, fmt.Errorf("grant the report lease: %w", err)
	}
	r.lease.Store(id)
	r.log.Info("report lease granted", "lease_id", fmt.Sprintf("%x", id), "ttl", LeaseTTL.String())
	return id, nil
}

// leaseLost forgets lease if it is still the current one, and ends its
// keep-alive: the next grant replaces it, and every session's next report
// writes again (its written lease is no longer the current one).
func (r *Registry) leaseLost(id int64, why error) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if !r.lease.CompareAndSwap(id, 0) {
		return
	}
	if r.stopKeeping != nil {
		r.stopKeeping()
		r.stopKeeping = nil
	}
	r.log.Warn("report lease lost; the edges' reports are written again under a new one", "lease_id", fmt.Sprintf("%x", id), "err", why)
}

func (r *Registry) keepLease(ctx context.Context) {
	failing := false
	for ctx.Err() == nil {
		id, err := r.leaseID(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !failing {
				r.log.Warn("report lease", "err", err)
			}
			failing = true
			wait(ctx, time.Second)
			continue
		}
		failing = false
		kctx, stop := context.WithCancel(ctx)
		r.leaseMu.Lock()
		if r.lease.Load() == id {
			r.stopKeeping = stop
		} else {
			stop() // lost between the grant and here
		}
		r.leaseMu.Unlock()
		err = r.st.KeepLeaseAlive(kctx, id)
		stop()
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, store.ErrLeaseLost) {
			r.leaseLost(id, err)
		} else if kctx.Err() == nil {
			// The keep-alive could not start (client closing, ...): retry
			// the same lease after a pause rather than spin.
			r.log.Warn("report lease keep-alive", "err", err)
			wait(ctx, time.Second)
		}
	}
	r.leaseMu.Lock()
	id := r.lease.Swap(0)
	r.leaseMu.Unlock()
	if id != 0 {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		if err := r.st.Revoke(rctx, id); err != nil {
			r.log.Warn("revoke the report lease at shutdown; the reports expire with it", "err", err, "ttl", LeaseTTL.String())
		}
	}
}

// follow loads the health keys and applies every later change, reloading
// when the watch cannot resume (history compacted).
func (r *Registry) follow(ctx context.Context) {
	for ctx.Err() == nil {
		kvs, rev, err := r.st.List(ctx, "health/", 0)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("read edge reports", "err", err)
				wait(ctx, time.Second)
			}
			continue
		}
		r.cache.load(kvs, rev)
		r.applyChanges(ctx, rev)
	}
}

// applyChanges applies the changes after rev until ctx ends or the watch
// cannot resume (history compacted: the caller reads everything again).
func (r *Registry) applyChanges(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := r.st.WatchFrom(wctx, "health/", rev)
	for b := range batches {
		if b.Reset {
			cancel()
			for range batches { // until WatchFrom's goroutine has ended
			}
			return
		}
		r.cache.apply(b.Events)
	}
}

// sweep deletes the stored report of every session whose edge has not
// reported for LeaseTTL.
func (r *Registry) sweep(ctx context.Context) {
	tick := time.NewTicker(r.sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.expireSilent(ctx)
		}
	}
}

func (r *Registry) expireSilent(ctx context.Context) {
	now := r.now()
	var silent []*Session
	r.mu.Lock()
	for _, l := range r.live {
		if !fresh(l, now) {
			silent = append(silent, l.s)
		}
	}
	r.mu.Unlock()
	for _, s := range silent {
		if err := s.expireIfSilent(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("delete the report of a silent edge", "site", s.site, "err", err)
		}
	}
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

package health

import (
	"context"
	"time"
)

// SetSweepEvery sets how often Run looks for silent sessions (before Run).
func (r *Registry) SetSweepEvery(d time.Duration) { r.sweepEvery = d }

// ExpireSilent is one pass of Run's sweep.
func (r *Registry) ExpireSilent(ctx context.Context) { r.expireSilent(ctx) }

// Lease is the current process lease (0: none).
func (r *Registry) Lease() int64 { return r.lease.Load() }

// CacheReady reports whether Run has read the health keys.
func (r *Registry) CacheReady() bool { return r.cache.ready() }

package ipam

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/meshwan/meshwan/controller/store"
)

// ErrGuardFailed is returned when the caller's own transaction guards
// failed (the caller's view is stale); the index was not taken.
var ErrGuardFailed = errors.New("allocation guard failed")

// Allocator hands out indexes [0,size) of one pool, one etcd key per taken
// index (dir + decimal index, value = owner). Taking an index is a
// put-if-absent transaction, so two allocators racing for the same index
// cannot both win: the loser's transaction takes nothing, it remembers the
// index as taken and its caller tries again (TakeBatch, TakeFree).
type Allocator struct {
	st   *store.Store
	dir  string
	size int

	mu sync.Mutex
	// seen holds indexes found taken in the store after a lost race that
	// the caller's used set did not show (another replica's allocation not
	// yet in the caller's view), so a retry does not try them again.
	seen map[int]bool
}

// NewAllocator returns an allocator of size entries under dir ("ipam/tunnel/").
func NewAllocator(st *store.Store, dir string, size int) *Allocator {
	return &Allocator{st: st, dir: dir, size: size, seen: map[int]bool{}}
}

// Key is the store key recording index i.
func (a *Allocator) Key(i int) string { return a.dir + strconv.Itoa(i) }

// BatchOptions shapes TakeBatch's transactions.
type BatchOptions struct {
	// PerTxn owners per transaction (default 40: with a put-if-absent guard
	// and a record per owner this stays under etcd's default limit of 128
	// operations per transaction).
	PerTxn int
	// InFlight transactions at once (default 4): etcd commits concurrent
	// transactions in one fsync, so a few in flight multiply the rate.
	InFlight int
}

// TakeBatch takes one free index per owner, lowest free first, where free
// means absent from used (the caller's view of the taken set). Owners are
// grouped PerTxn to a transaction; each index is taken put-if-absent
// together with what with(owner, i) adds, so two allocators racing for an
// index can never both win. It returns the indexes that committed and the
// highest revision written. When a transaction's guards fail it takes
// nothing, the indexes found taken in the store are remembered, and
// TakeBatch returns ErrGuardFailed once the other transactions are done:
// the caller refreshes its view and calls again for what is missing.
func (a *Allocator) TakeBatch(ctx context.Context, owners []string, used map[int]bool, with func(owner string, i int) ([]store.Cmp, []store.Op), o BatchOptions) (map[string]int, int64, error) {
	a.mu.Lock()
	idx := make([]int, 0, len(owners))
	for i := 0; i < a.size && len(idx) < len(owners); i++ {
		if !used[i] && !a.seen[i] {
			idx = append(idx, i)
		}
	}
	a.mu.Unlock()
	if len(idx) < len(owners) {
		return nil, 0, fmt.Errorf("%w: %d more entries of %s needed, %d free of %d", ErrExhausted, len(owners), strings.TrimSuffix(a.dir, "/"), len(idx), a.size)
	}
	return a.takeIdx(ctx, owners, idx, with, o)
}

// TakeFree is TakeBatch with the free indexes given, lowest first (the
// caller keeps the taken set and finds free ones without a scan). Indexes
// this allocator has seen taken are skipped; when fewer than owners remain
// it returns ErrGuardFailed: the caller refreshes its view and asks again.
func (a *Allocator) TakeFree(ctx context.Context, owners []string, free []int, with func(owner string, i int) ([]store.Cmp, []store.Op), o BatchOptions) (map[string]int, int64, error) {
	a.mu.Lock()
	idx := make([]int, 0, len(owners))
	for _, i := range free {
		if len(idx) == len(owners) {
			break
		}
		if !a.seen[i] {
			idx = append(idx, i)
		}
	}
	a.mu.Unlock()
	if len(idx) < len(owners) {
		return nil, 0, ErrGuardFailed
	}
	return a.takeIdx(ctx, owners, idx, with, o)
}

// Seen reports whether index i was found taken after a lost race and is
// not known to the caller's view yet (callers skip it when listing free
// indexes).
func (a *Allocator) Seen(i int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[i]
}

// takeIdx writes owners[k] -> idx[k], PerTxn to a transaction.
func (a *Allocator) takeIdx(ctx context.Context, owners []string, idx []int, with func(owner string, i int) ([]store.Cmp, []store.Op), o BatchOptions) (map[string]int, int64, error) {
	if o.PerTxn <= 0 {
		o.PerTxn = 40
	}
	if o.InFlight <= 0 {
		o.InFlight = 4
	}
	var (
		mu      sync.Mutex
		got     = make(map[string]int, len(owners))
		rev     int64
		firstEr error
		failed  bool
	)
	sem := make(chan struct{}, o.InFlight)
	var wg sync.WaitGroup
	for start := 0; start < len(owners); start += o.PerTxn {
		end := min(start+o.PerTxn, len(owners))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return got, rev, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			var cmps []store.Cmp
			var ops []store.Op
			for k := start; k < end; k++ {
				cmps = append(cmps, store.Absent(a.Key(idx[k])))
				ops = append(ops, store.Put(a.Key(idx[k]), []byte(owners[k])))
				if with != nil {
					c, w := with(owners[k], idx[k])
					cmps, ops = append(cmps, c...), append(ops, w...)
				}
			}
			ok, r, err := a.st.Txn(ctx, cmps, ops)
			if ok && err == nil {
				mu.Lock()
				for k := start; k < end; k++ {
					got[owners[k]] = idx[k]
				}
				rev = max(rev, r)
				mu.Unlock()
				return
			}
			if err == nil {
				// Learn which indexes are taken so the retry skips them.
				for k := start; k < end; k++ {
					if _, exists, gerr := a.st.Get(ctx, a.Key(idx[k])); gerr == nil && exists {
						a.mu.Lock()
						a.seen[idx[k]] = true
						a.mu.Unlock()
					}
				}
			}
			mu.Lock()
			failed = true
			if err != nil && firstEr == nil {
				firstEr = err
			}
			rev = max(rev, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstEr != nil {
		return got, rev, firstEr
	}
	if failed {
		return got, rev, ErrGuardFailed
	}
	return got, rev, nil
}

// Forget drops remembered taken indexes that the caller's view now
// explains (used reports an index taken in the view). An index released
// before the view ever showed it stays remembered until the process ends:
// a small leak, only after lost races with another replica.
func (a *Allocator) Forget(used func(int) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.seen {
		if used(i) {
			delete(a.seen, i)
		}
	}
}

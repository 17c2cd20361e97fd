package ipam

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/meshwan/meshwan/controller/store"
)

// ErrGuardFailed is returned when the caller's own transaction guards
// failed (the caller's view is stale); the index was not taken.
var ErrGuardFailed = errors.New("allocation guard failed")

// Allocator hands out indexes [0,size) of one pool, one etcd key per taken
// index (dir + decimal index, value = owner). Taking an index is a
// put-if-absent transaction, so two allocators racing for the same index
// cannot both win: the loser sees the key, marks it used and tries the next.
type Allocator struct {
	st   *store.Store
	dir  string
	size int
}

// NewAllocator returns an allocator of size entries under dir ("ipam/tunnel/").
func NewAllocator(st *store.Store, dir string, size int) *Allocator {
	return &Allocator{st: st, dir: dir, size: size}
}

// Key is the store key recording index i.
func (a *Allocator) Key(i int) string { return a.dir + strconv.Itoa(i) }

// Used returns the taken indexes and their owners.
func (a *Allocator) Used(ctx context.Context) (map[int]string, error) {
	kvs, _, err := a.st.List(ctx, a.dir, 0)
	if err != nil {
		return nil, err
	}
	used := make(map[int]string, len(kvs))
	for _, kv := range kvs {
		i, err := strconv.Atoi(strings.TrimPrefix(kv.Key, a.dir))
		if err != nil {
			continue // not ours
		}
		used[i] = string(kv.Value)
	}
	return used, nil
}

// Guarded builds the caller's part of an allocation transaction for index
// i: extra guards and writes that must commit together with taking i (for
// instance the tunnel record that points at it).
type Guarded func(i int) ([]store.Cmp, []store.Op)

// maxAttempts bounds the retries of one allocation. Every lost race means
// another allocator made progress, so this is only reached under absurd
// contention or a broken store.
const maxAttempts = 10000

// AllocateMany takes one index per owner, lowest free first, each in its own
// transaction together with what with(i) adds. It reads the used set once
// and then relies on the put-if-absent guard to learn about concurrent
// allocations. It returns the indexes in owner order; on error the ones
// already taken stay taken (their transactions committed).
func (a *Allocator) AllocateMany(ctx context.Context, owners []string, with func(owner string) Guarded) ([]int, error) {
	usedOwners, err := a.Used(ctx)
	if err != nil {
		return nil, err
	}
	used := make(map[int]bool, len(usedOwners))
	for i := range usedOwners {
		used[i] = true
	}
	out := make([]int, 0, len(owners))
	next := 0
	for _, owner := range owners {
		var g Guarded
		if with != nil {
			g = with(owner)
		}
		i, err := a.take(ctx, owner, used, &next, g)
		if err != nil {
			return out, err
		}
		out = append(out, i)
	}
	return out, nil
}

// Allocate takes one index for owner.
func (a *Allocator) Allocate(ctx context.Context, owner string, g Guarded) (int, error) {
	is, err := a.AllocateMany(ctx, []string{owner}, func(string) Guarded { return g })
	if err != nil {
		return -1, err
	}
	return is[0], nil
}

func (a *Allocator) take(ctx context.Context, owner string, used map[int]bool, next *int, g Guarded) (int, error) {
	for range maxAttempts {
		i := FirstFree(used, a.size, *next)
		if i < 0 || i < *next {
			return -1, fmt.Errorf("%w: all %d entries of %s are in use", ErrExhausted, a.size, strings.TrimSuffix(a.dir, "/"))
		}
		cmps := []store.Cmp{store.Absent(a.Key(i))}
		ops := []store.Op{store.Put(a.Key(i), []byte(owner))}
		if g != nil {
			c, o := g(i)
			cmps, ops = append(cmps, c...), append(ops, o...)
		}
		ok, _, err := a.st.Txn(ctx, cmps, ops)
		if err != nil {
			return -1, err
		}
		used[i] = true
		if ok {
			*next = i + 1
			return i, nil
		}
		// Lost the race for i, or the caller's guard failed: tell which.
		if _, taken, err := a.st.Get(ctx, a.Key(i)); err != nil {
			return -1, err
		} else if !taken {
			delete(used, i)
			return -1, ErrGuardFailed
		}
	}
	return -1, fmt.Errorf("%w: gave up after %d attempts", ErrExhausted, maxAttempts)
}

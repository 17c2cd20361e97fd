package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/store"
)

// TestConcurrentAllocatorsNeverDuplicate runs several allocators, each on
// its own etcd client (as separate controller processes would), allocating
// thousands of /30s at once from one pool, and checks that no index was
// handed out twice and that etcd agrees with what each allocator was told.
func TestConcurrentAllocatorsNeverDuplicate(t *testing.T) {
	srv := etcdtest.Start(t)
	pool, _ := ipam.ParsePool30("10.255.0.0/20") // 1024 /30s
	const allocators, each = 4, 600              // 2400 allocations: the pool runs dry on purpose
	ctx := context.Background()

	type result struct {
		got []int
		err error
	}
	results := make([]result, allocators)
	var wg sync.WaitGroup
	for n := range allocators {
		a := ipam.NewAllocator(srv.NewStore(), "ipam/tunnel/", pool.Size())
		owners := make([]string, each)
		for i := range owners {
			owners[i] = fmt.Sprintf("alloc%d-owner%d", n, i)
		}
		wg.Go(func() {
			var r result
			// Allocate in batches so every allocator re-reads the used set
			// several times while the others are writing.
			for b := 0; b < each && r.err == nil; b += 50 {
				var got []int
				got, r.err = a.AllocateMany(ctx, owners[b:b+50], nil)
				r.got = append(r.got, got...)
			}
			results[n] = r
		})
	}
	wg.Wait()

	seen := map[int]string{}
	total := 0
	for n, r := range results {
		if r.err != nil && !errors.Is(r.err, ipam.ErrExhausted) {
			t.Fatalf("allocator %d: %v", n, r.err)
		}
		for k, i := range r.got {
			owner := fmt.Sprintf("alloc%d-owner%d", n, k)
			if prev, dup := seen[i]; dup {
				t.Fatalf("index %d (%s) handed to both %s and %s", i, pool.At(i), prev, owner)
			}
			seen[i] = owner
			total++
		}
	}
	if total != pool.Size() {
		t.Errorf("%d allocations succeeded, want exactly the pool size %d (the rest must be ErrExhausted)", total, pool.Size())
	}
	used, err := ipam.NewAllocator(srv.NewStore(), "ipam/tunnel/", pool.Size()).Used(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(used) != total {
		t.Errorf("etcd records %d allocations, allocators report %d", len(used), total)
	}
	for i, owner := range seen {
		if used[i] != owner {
			t.Errorf("index %d: etcd says owner %q, allocator told %q", i, used[i], owner)
		}
	}
}

func TestAllocateReusesReleased(t *testing.T) {
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	ctx := context.Background()
	a := ipam.NewAllocator(st, "ipam/tunnel/", 4)
	got, err := a.AllocateMany(ctx, []string{"a", "b", "c", "d"}, nil)
	if err != nil || fmt.Sprint(got) != "[0 1 2 3]" {
		t.Fatalf("AllocateMany = %v, %v; want [0 1 2 3]", got, err)
	}
	if _, err := a.Allocate(ctx, "e", nil); !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("allocating from a full pool: %v, want ErrExhausted", err)
	}
	if ok, _, err := st.Txn(ctx, nil, []store.Op{store.Delete(a.Key(1))}); !ok || err != nil {
		t.Fatal(err)
	}
	if i, err := a.Allocate(ctx, "e", nil); err != nil || i != 1 {
		t.Fatalf("after releasing 1: Allocate = %d, %v; want 1", i, err)
	}
}

func TestAllocateGuardFailureTakesNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	ctx := context.Background()
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put("tunnels/x", []byte("exists"))}); err != nil {
		t.Fatal(err)
	}
	a := ipam.NewAllocator(st, "ipam/tunnel/", 4)
	_, err := a.Allocate(ctx, "x", func(i int) ([]store.Cmp, []store.Op) {
		return []store.Cmp{store.Absent("tunnels/x")}, []store.Op{store.Put("tunnels/x", []byte("new"))}
	})
	if !errors.Is(err, ipam.ErrGuardFailed) {
		t.Fatalf("Allocate with a failing guard: %v, want ErrGuardFailed", err)
	}
	if used, _ := a.Used(ctx); len(used) != 0 {
		t.Errorf("a failed guard left allocations behind: %v", used)
	}
}

// TestConcurrentBatchAllocatorsNeverDuplicate is the racing-allocator
// guarantee for TakeBatch: four allocators, each with a stale view of the
// taken set (empty), take batches from one pool at once; no index is
// handed out twice, the losers learn what is taken and succeed on retry,
// and etcd agrees with every result.
func TestConcurrentBatchAllocatorsNeverDuplicate(t *testing.T) {
	srv := etcdtest.Start(t)
	pool, _ := ipam.ParsePool30("10.255.0.0/21") // 512 /30s
	const allocators, each = 4, 120
	ctx := context.Background()
	results := make([]map[string]int, allocators)
	var wg sync.WaitGroup
	for n := range allocators {
		a := ipam.NewAllocator(srv.NewStore(), "ipam/tunnel/", pool.Size())
		owners := make([]string, each)
		for i := range owners {
			owners[i] = fmt.Sprintf("alloc%d-owner%d", n, i)
		}
		wg.Go(func() {
			got := map[string]int{}
			for attempt := 0; len(got) < each; attempt++ {
				var todo []string
				for _, o := range owners {
					if _, ok := got[o]; !ok {
						todo = append(todo, o)
					}
				}
				// A stale view: nothing is known taken but our own.
				used := map[int]bool{}
				for _, i := range got {
					used[i] = true
				}
				g, _, err := a.TakeBatch(ctx, todo, used, nil, ipam.BatchOptions{PerTxn: 10, InFlight: 3})
				for o, i := range g {
					got[o] = i
				}
				if err != nil && !errors.Is(err, ipam.ErrGuardFailed) {
					t.Errorf("allocator %d: %v", n, err)
					return
				}
				if attempt > 200 {
					t.Errorf("allocator %d: no progress", n)
					return
				}
			}
			results[n] = got
		})
	}
	wg.Wait()
	seen := map[int]string{}
	for _, r := range results {
		for o, i := range r {
			if prev, dup := seen[i]; dup {
				t.Fatalf("index %d handed to both %s and %s", i, prev, o)
			}
			seen[i] = o
		}
	}
	used, err := ipam.NewAllocator(srv.NewStore(), "ipam/tunnel/", pool.Size()).Used(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(used) != allocators*each || len(seen) != allocators*each {
		t.Errorf("etcd records %d allocations, allocators report %d, want %d", len(used), len(seen), allocators*each)
	}
	for i, o := range seen {
		if used[i] != o {
			t.Errorf("index %d: etcd says %q, allocator %q", i, used[i], o)
		}
	}
}

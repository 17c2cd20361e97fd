package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/store"
)

// stored reads the allocations etcd holds under dir: index -> owner.
func stored(t *testing.T, st *store.Store, dir string) map[int]string {
	t.Helper()
	kvs, _, err := st.List(context.Background(), dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, kv := range kvs {
		i, err := strconv.Atoi(strings.TrimPrefix(kv.Key, dir))
		if err != nil {
			t.Fatalf("stray key %s", kv.Key)
		}
		out[i] = string(kv.Value)
	}
	return out
}

// TestConcurrentAllocatorsNeverDuplicate runs several allocators, each on
// its own etcd client (as separate controller processes would) and each
// with a stale view of the taken set (only its own allocations), taking
// batches from one pool at once until the pool runs dry: no index is handed
// out twice, exactly the pool's size succeeds (the losers learn what is
// taken and retry; a batch larger than what is left shrinks until a single
// index no longer fits), and etcd agrees with what each allocator was told.
func TestConcurrentAllocatorsNeverDuplicate(t *testing.T) {
	srv := etcdtest.Start(t)
	pool, _ := ipam.ParsePool30("10.255.0.0/21") // 512 /30s
	const allocators, each = 4, 200              // 800 wanted: the pool runs dry on purpose
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
			batch := 10
			for attempt := 0; len(got) < each; attempt++ {
				var todo []string
				for _, o := range owners {
					if _, ok := got[o]; !ok && len(todo) < batch {
						todo = append(todo, o)
					}
				}
				used := map[int]bool{}
				for _, i := range got {
					used[i] = true
				}
				g, _, err := a.TakeBatch(ctx, todo, used, nil, ipam.BatchOptions{PerTxn: 5, InFlight: 3})
				for o, i := range g {
					got[o] = i
				}
				switch {
				case errors.Is(err, ipam.ErrExhausted) && batch == 1:
					results[n] = got
					return
				case errors.Is(err, ipam.ErrExhausted):
					batch /= 2
				case err != nil && !errors.Is(err, ipam.ErrGuardFailed):
					t.Errorf("allocator %d: %v", n, err)
					return
				}
				if attempt > 5000 {
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
				t.Fatalf("index %d (%s) handed to both %s and %s", i, pool.At(i), prev, o)
			}
			seen[i] = o
		}
	}
	if len(seen) != pool.Size() {
		t.Errorf("%d allocations succeeded, want exactly the pool size %d", len(seen), pool.Size())
	}
	used := stored(t, srv.NewStore(), "ipam/tunnel/")
	if len(used) != len(seen) {
		t.Errorf("etcd records %d allocations, allocators report %d", len(used), len(seen))
	}
	for i, o := range seen {
		if used[i] != o {
			t.Errorf("index %d: etcd says owner %q, allocator told %q", i, used[i], o)
		}
	}
}

func TestTakeReusesReleased(t *testing.T) {
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	ctx := context.Background()
	a := ipam.NewAllocator(st, "ipam/tunnel/", 4)
	got, _, err := a.TakeBatch(ctx, []string{"a", "b", "c", "d"}, nil, nil, ipam.BatchOptions{})
	if err != nil || fmt.Sprint(got) != "map[a:0 b:1 c:2 d:3]" {
		t.Fatalf("TakeBatch = %v, %v; want a:0 b:1 c:2 d:3", got, err)
	}
	taken := map[int]bool{0: true, 1: true, 2: true, 3: true}
	if _, _, err := a.TakeBatch(ctx, []string{"e"}, taken, nil, ipam.BatchOptions{}); !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("taking from a full pool: %v, want ErrExhausted", err)
	}
	if ok, _, err := st.Txn(ctx, nil, []store.Op{store.Delete(a.Key(1))}); !ok || err != nil {
		t.Fatal(err)
	}
	delete(taken, 1)
	if got, _, err := a.TakeFree(ctx, []string{"e"}, []int{1}, nil, ipam.BatchOptions{}); err != nil || got["e"] != 1 {
		t.Fatalf("after releasing 1: TakeFree = %v, %v; want e:1", got, err)
	}
}

func TestTakeGuardFailureTakesNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	ctx := context.Background()
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put("tunnels/x", []byte("exists"))}); err != nil {
		t.Fatal(err)
	}
	a := ipam.NewAllocator(st, "ipam/tunnel/", 4)
	_, _, err := a.TakeBatch(ctx, []string{"x"}, nil, func(string, int) ([]store.Cmp, []store.Op) {
		return []store.Cmp{store.Absent("tunnels/x")}, []store.Op{store.Put("tunnels/x", []byte("new"))}
	}, ipam.BatchOptions{})
	if !errors.Is(err, ipam.ErrGuardFailed) {
		t.Fatalf("TakeBatch with a failing guard: %v, want ErrGuardFailed", err)
	}
	if used := stored(t, st, "ipam/tunnel/"); len(used) != 0 {
		t.Errorf("a failed guard left allocations behind: %v", used)
	}
	if a.Seen(0) {
		t.Error("an index free in the store is remembered as taken")
	}
}

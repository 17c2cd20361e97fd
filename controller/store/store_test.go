package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/store"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustTxn(t *testing.T, st *store.Store, cmps []store.Cmp, ops ...store.Op) int64 {
	t.Helper()
	ok, rev, err := st.Txn(testCtx(t), cmps, ops)
	if err != nil || !ok {
		t.Fatalf("Txn: ok=%v err=%v", ok, err)
	}
	return rev
}

func value(t *testing.T, st *store.Store, key string) (string, bool) {
	t.Helper()
	kv, ok, err := st.Get(testCtx(t), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	return string(kv.Value), ok
}

// TestTxnGuards: Absent holds only while the key does not exist and
// Unchanged only at the mod revision read; a failed guard writes nothing.
// This is the compare-and-swap every allocation relies on.
func TestTxnGuards(t *testing.T) {
	ctx := testCtx(t)
	st := etcdtest.Start(t).NewStore()

	mustTxn(t, st, []store.Cmp{store.Absent("a")}, store.Put("a", []byte("1")))
	if ok, _, err := st.Txn(ctx, []store.Cmp{store.Absent("a")}, []store.Op{store.Put("a", []byte("2")), store.Put("b", []byte("x"))}); err != nil || ok {
		t.Fatalf("Absent on an existing key: ok=%v err=%v, want ok=false", ok, err)
	}
	if v, _ := value(t, st, "a"); v != "1" {
		t.Errorf("a = %q after a failed guard, want 1", v)
	}
	if _, ok := value(t, st, "b"); ok {
		t.Error("b written by a transaction whose guard failed")
	}

	kv, _, err := st.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Someone else writes a after we read it: our guard must fail.
	mustTxn(t, st, nil, store.Put("a", []byte("other")))
	if ok, _, err := st.Txn(ctx, []store.Cmp{store.Unchanged("a", kv.ModRevision)}, []store.Op{store.Put("a", []byte("mine"))}); err != nil || ok {
		t.Fatalf("Unchanged at a stale revision: ok=%v err=%v, want ok=false", ok, err)
	}
	if v, _ := value(t, st, "a"); v != "other" {
		t.Errorf("a = %q, want other", v)
	}
	kv, _, _ = st.Get(ctx, "a")
	rev := mustTxn(t, st, []store.Cmp{store.Unchanged("a", kv.ModRevision)}, store.Put("a", []byte("mine")), store.Delete("c"))
	kv, _, _ = st.Get(ctx, "a")
	if string(kv.Value) != "mine" || kv.ModRevision != rev {
		t.Errorf("a = %q at %d, want mine at the txn's revision %d", kv.Value, kv.ModRevision, rev)
	}
	// Unchanged(key, 0) means "still absent".
	if ok, _, err := st.Txn(ctx, []store.Cmp{store.Unchanged("a", 0)}, nil); err != nil || ok {
		t.Errorf("Unchanged(a, 0) on an existing key: ok=%v err=%v", ok, err)
	}
	if ok, _, err := st.Txn(ctx, []store.Cmp{store.Unchanged("nope", 0)}, nil); err != nil || !ok {
		t.Errorf("Unchanged(nope, 0) on an absent key: ok=%v err=%v", ok, err)
	}
}

// TestTxnTooManyOps: a transaction over the server's --max-txn-ops limit
// fails with ErrTxnTooLarge (recognised by etcd's error value) and writes
// nothing. The embedded server allows 16384 operations.
func TestTxnTooManyOps(t *testing.T) {
	st := etcdtest.Start(t).NewStore()
	const n = 16385
	ops := make([]store.Op, n)
	for i := range ops {
		ops[i] = store.Put(fmt.Sprintf("big/%05d", i), []byte("v"))
	}
	_, _, err := st.Txn(testCtx(t), nil, ops)
	if !errors.Is(err, store.ErrTxnTooLarge) {
		t.Fatalf("Txn of %d ops: err = %v, want ErrTxnTooLarge", n, err)
	}
	kvs, _, err := st.List(testCtx(t), "big/", 0)
	if err != nil || len(kvs) != 0 {
		t.Errorf("after the refused txn: %d keys under big/ (err %v), want 0", len(kvs), err)
	}
	// The limit is exactly the server's: one op fewer goes through.
	if ok, _, err := st.Txn(testCtx(t), nil, ops[:n-1]); err != nil || !ok {
		t.Errorf("Txn of %d ops: ok=%v err=%v", n-1, ok, err)
	}
	// Other failures are not mistaken for it.
	if _, _, err := st.Txn(testCtx(t), nil, []store.Op{store.PutWithLease("x", nil, 12345)}); err == nil || errors.Is(err, store.ErrTxnTooLarge) {
		t.Errorf("put with unknown lease: err = %v, want a non-ErrTxnTooLarge error", err)
	}
}

// TestListAtRevision: List at a past revision returns the keys as they
// were then, sorted, relative to the root, and the revision it read at.
func TestListAtRevision(t *testing.T) {
	ctx := testCtx(t)
	st := etcdtest.Start(t).NewStore()
	mustTxn(t, st, nil, store.Put("sites/b", []byte("b1")), store.Put("sites/a", []byte("a1")), store.Put("other", []byte("o")))
	kvs, rev, err := st.List(ctx, "sites/", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 2 || kvs[0].Key != "sites/a" || kvs[1].Key != "sites/b" || string(kvs[0].Value) != "a1" {
		t.Fatalf("List = %+v, want sites/a, sites/b in order", kvs)
	}
	mustTxn(t, st, nil, store.Delete("sites/a"), store.Put("sites/b", []byte("b2")), store.Put("sites/c", []byte("c1")))
	old, oldRev, err := st.List(ctx, "sites/", rev)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 2 || old[0].Key != "sites/a" || string(old[1].Value) != "b1" {
		t.Errorf("List at %d = %+v, want the snapshot before the change", rev, old)
	}
	if oldRev <= rev {
		t.Errorf("List at a past revision reports revision %d, want the current one (> %d)", oldRev, rev)
	}
	now, _, _ := st.List(ctx, "sites/", 0)
	if len(now) != 2 || now[0].Key != "sites/b" || now[1].Key != "sites/c" || string(now[0].Value) != "b2" {
		t.Errorf("List now = %+v, want sites/b=b2, sites/c", now)
	}
}

// TestLeaseRevokeDeletesKeys: a key written with a lease vanishes when the
// lease is revoked; writing with the gone lease fails with LeaseNotFound
// (recognised by etcd's error value) and KeepLeaseAlive reports
// ErrLeaseLost.
func TestLeaseRevokeDeletesKeys(t *testing.T) {
	ctx := testCtx(t)
	st := etcdtest.Start(t).NewStore()
	lease, err := st.Grant(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mustTxn(t, st, nil, store.PutWithLease("live/edge1", []byte("up"), lease), store.Put("keep", []byte("k")))
	kv, ok, _ := st.Get(ctx, "live/edge1")
	if !ok || kv.Lease != lease {
		t.Fatalf("live/edge1: ok=%v lease=%x, want lease %x", ok, kv.Lease, lease)
	}

	kaCtx, stopKA := context.WithCancel(ctx)
	defer stopKA()
	kaErr := make(chan error, 1)
	go func() { kaErr <- st.KeepLeaseAlive(kaCtx, lease) }() // owned by this test, ended by Revoke or stopKA

	if err := st.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, ok := value(t, st, "live/edge1"); ok {
		t.Error("live/edge1 survived the revoke of its lease")
	}
	if _, ok := value(t, st, "keep"); !ok {
		t.Error("a key without a lease was deleted by the revoke")
	}
	select {
	case err := <-kaErr:
		if !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("KeepLeaseAlive after revoke = %v, want ErrLeaseLost", err)
		}
	case <-ctx.Done():
		t.Fatal("KeepLeaseAlive did not return after the lease was revoked")
	}

	_, _, err = st.Txn(ctx, nil, []store.Op{store.PutWithLease("live/edge1", []byte("up"), lease)})
	if !store.LeaseNotFound(err) {
		t.Errorf("put with a revoked lease: LeaseNotFound(%v) = false", err)
	}
	if store.LeaseNotFound(nil) || store.LeaseNotFound(errors.New("requested lease not found")) {
		t.Error("LeaseNotFound matches by text or on nil; it must match etcd's error value only")
	}
}

// TestKeepLeaseAliveKeepsKeys: a lease kept alive outlives its TTL;
// KeepLeaseAlive returns ctx's error when its context ends.
func TestKeepLeaseAliveKeepsKeys(t *testing.T) {
	ctx := testCtx(t)
	st := etcdtest.Start(t).NewStore()
	lease, err := st.Grant(ctx, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mustTxn(t, st, nil, store.PutWithLease("live/e", []byte("up"), lease))
	kaCtx, stopKA := context.WithCancel(ctx)
	kaErr := make(chan error, 1)
	go func() { kaErr <- st.KeepLeaseAlive(kaCtx, lease) }() // owned by this test: stopped below

	// Watch the key: a delete would be the lease expiring. Waiting 3 TTLs
	// for an event that must not happen is the only way to see "not".
	wctx, stopW := context.WithCancel(ctx)
	defer stopW()
	_, rev, _ := st.List(ctx, "live/", 0)
	events := st.WatchFrom(wctx, "live/", rev)
	select {
	case b := <-events:
		t.Fatalf("live/e changed while its lease was kept alive: %+v", b)
	case <-time.After(6 * time.Second):
	}
	stopKA()
	if err := <-kaErr; !errors.Is(err, context.Canceled) {
		t.Errorf("KeepLeaseAlive after cancel = %v, want context.Canceled", err)
	}
}

// TestWatchFromOrder: WatchFrom delivers every change after the given
// revision — puts and deletes, several per transaction — in revision order,
// with keys relative to the root, and ignores other prefixes.
func TestWatchFromOrder(t *testing.T) {
	ctx := testCtx(t)
	st := etcdtest.Start(t).NewStore()
	start := mustTxn(t, st, nil, store.Put("w/before", []byte("0")))

	// Changes made before the watch starts are replayed from history.
	r1 := mustTxn(t, st, nil, store.Put("w/a", []byte("1")), store.Put("w/b", []byte("1")))
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ch := st.WatchFrom(wctx, "w/", start)
	mustTxn(t, st, nil, store.Put("elsewhere", []byte("x")))
	r3 := mustTxn(t, st, nil, store.Delete("w/a"))
	r4 := mustTxn(t, st, nil, store.Put("w/b", []byte("2")))

	type ev struct {
		key     string
		val     string
		rev     int64
		deleted bool
	}
	want := []ev{{"w/a", "1", r1, false}, {"w/b", "1", r1, false}, {"w/a", "", r3, true}, {"w/b", "2", r4, false}}
	var got []ev
	last := start
	for len(got) < len(want) {
		select {
		case b, ok := <-ch:
			if !ok {
				t.Fatal("WatchFrom closed early")
			}
			if b.Reset {
				t.Fatalf("unexpected Reset at %d", b.Revision)
			}
			if b.Revision < last {
				t.Errorf("batch revision %d after %d", b.Revision, last)
			}
			last = b.Revision
			for _, e := range b.Events {
				got = append(got, ev{e.Key, string(e.Value), e.ModRevision, e.Deleted})
			}
		case <-ctx.Done():
			t.Fatalf("timed out; got %+v", got)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events\n got %+v\nwant %+v", got, want)
	}
	stop()
	for range ch { // the channel closes once ctx ends
	}
}

// TestWatchFromCompacted: resuming from a revision etcd has compacted away
// yields one Batch with Reset (no events) at a revision no older than the
// compaction, then the watch continues with later changes.
func TestWatchFromCompacted(t *testing.T) {
	ctx := testCtx(t)
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	old := mustTxn(t, st, nil, store.Put("w/a", []byte("1")))
	mustTxn(t, st, nil, store.Put("w/a", []byte("2")))
	compactAt := mustTxn(t, st, nil, store.Put("w/a", []byte("3")))
	if _, err := srv.NewClient().Compact(ctx, compactAt); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ch := st.WatchFrom(wctx, "w/", old)
	var b store.Batch
	select {
	case b = <-ch:
	case <-ctx.Done():
		t.Fatal("no batch after resuming from a compacted revision")
	}
	if !b.Reset || len(b.Events) != 0 || b.Revision < compactAt {
		t.Fatalf("first batch = %+v, want Reset with no events at >= %d", b, compactAt)
	}
	after := mustTxn(t, st, nil, store.Put("w/b", []byte("new")))
	select {
	case b = <-ch:
	case <-ctx.Done():
		t.Fatal("no batch for a change after the Reset")
	}
	if b.Reset || len(b.Events) != 1 || b.Events[0].Key != "w/b" || b.Events[0].ModRevision != after {
		t.Errorf("batch after Reset = %+v, want w/b at %d", b, after)
	}
}

// TestWatchNotifiesChange: Watch sends a revision no older than the change
// for a write under its prefix.
func TestWatchNotifiesChange(t *testing.T) {
	ctx := testCtx(t)
	st := etcdtest.Start(t).NewStore()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ch := st.Watch(wctx, "n/")
	// The watch is established asynchronously: keep writing until one
	// write is seen, then check the revision it reports.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var first int64
	for {
		select {
		case got := <-ch:
			if first == 0 || got < first {
				t.Fatalf("Watch sent %d, want >= the first write's revision %d", got, first)
			}
			return
		case <-tick.C:
			rev := mustTxn(t, st, nil, store.Put("n/k", []byte("v")))
			if first == 0 {
				first = rev
			}
		case <-ctx.Done():
			t.Fatal("Watch never reported a change")
		}
	}
}

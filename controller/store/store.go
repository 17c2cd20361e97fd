// Package store is the controller's only door to etcd: the keyspace root,
// reads at a consistent revision, compare-and-swap transactions, leases and
// watches. Everything above it speaks in keys relative to the root and in
// the small Cmp/Op vocabulary below, so no other package imports etcd.
//
// Invariant: every write that depends on something read goes through Txn
// with a Cmp on what was read (mod revision or absence). That is what keeps
// several controller replicas sharing one etcd from handing out the same
// /30 or ASN twice.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Root is the default key prefix of all meshwan data.
const Root = "/meshwan/"

// ErrTxnTooLarge is returned when a transaction exceeds the server's
// operation limit (etcd --max-txn-ops, 128 by default on a standalone etcd).
var ErrTxnTooLarge = errors.New("transaction has too many operations")

// Store wraps an etcd client with a key root.
type Store struct {
	cli  *clientv3.Client
	root string
}

// New returns a Store whose keys live under root (Root if empty).
func New(cli *clientv3.Client, root string) *Store {
	if root == "" {
		root = Root
	}
	return &Store{cli: cli, root: root}
}

// KV is one stored key (relative to the root) and its value.
type KV struct {
	Key         string
	Value       []byte
	ModRevision int64
	Lease       int64
}

func (s *Store) abs(key string) string { return s.root + key }

func (s *Store) rel(key []byte) string { return strings.TrimPrefix(string(key), s.root) }

// Get reads one key. ok is false when it does not exist.
func (s *Store) Get(ctx context.Context, key string) (kv KV, ok bool, err error) {
	resp, err := s.cli.Get(ctx, s.abs(key))
	if err != nil {
		return KV{}, false, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return KV{}, false, nil
	}
	k := resp.Kvs[0]
	return KV{Key: key, Value: k.Value, ModRevision: k.ModRevision, Lease: k.Lease}, true, nil
}

// List reads every key under prefix, sorted by key, at revision rev (0 =
// latest). It returns the revision it read at, so that several Lists can
// form one consistent snapshot.
func (s *Store) List(ctx context.Context, prefix string, rev int64) ([]KV, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, s.abs(prefix), opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("etcd list %s: %w", prefix, err)
	}
	out := make([]KV, 0, len(resp.Kvs))
	for _, k := range resp.Kvs {
		out = append(out, KV{Key: s.rel(k.Key), Value: k.Value, ModRevision: k.ModRevision, Lease: k.Lease})
	}
	return out, resp.Header.Revision, nil
}

// Cmp is a transaction guard.
type Cmp struct {
	key string
	rev int64 // expected mod revision; 0 means "absent"
}

// Absent guards on key not existing.
func Absent(key string) Cmp { return Cmp{key: key} }

// Unchanged guards on key still having the mod revision it was read at
// (0 = still absent).
func Unchanged(key string, modRevision int64) Cmp { return Cmp{key: key, rev: modRevision} }

// Op is a transaction write.
type Op struct {
	key   string
	value []byte
	lease int64
	del   bool
}

// Put writes key.
func Put(key string, value []byte) Op { return Op{key: key, value: value} }

// PutWithLease writes key attached to a lease: it vanishes when the lease
// expires.
func PutWithLease(key string, value []byte, lease int64) Op {
	return Op{key: key, value: value, lease: lease}
}

// Delete removes key.
func Delete(key string) Op { return Op{key: key, del: true} }

// Txn applies ops atomically if every cmp holds. ok reports whether it did;
// rev is the store revision after the transaction.
func (s *Store) Txn(ctx context.Context, cmps []Cmp, ops []Op) (ok bool, rev int64, err error) {
	ecmps := make([]clientv3.Cmp, 0, len(cmps))
	for _, c := range cmps {
		ecmps = append(ecmps, clientv3.Compare(clientv3.ModRevision(s.abs(c.key)), "=", c.rev))
	}
	eops := make([]clientv3.Op, 0, len(ops))
	for _, o := range ops {
		switch {
		case o.del:
			eops = append(eops, clientv3.OpDelete(s.abs(o.key)))
		case o.lease != 0:
			eops = append(eops, clientv3.OpPut(s.abs(o.key), string(o.value), clientv3.WithLease(clientv3.LeaseID(o.lease))))
		default:
			eops = append(eops, clientv3.OpPut(s.abs(o.key), string(o.value)))
		}
	}
	resp, err := s.cli.Txn(ctx).If(ecmps...).Then(eops...).Commit()
	if err != nil {
		// The client turns etcd's gRPC status into a comparable
		// rpctypes.EtcdError, so the condition is matched by value, not text.
		if errors.Is(err, rpctypes.ErrTooManyOps) {
			return false, 0, fmt.Errorf("%w (%d ops): %w", ErrTxnTooLarge, len(ops), err)
		}
		return false, 0, fmt.Errorf("etcd txn: %w", err)
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// Grant creates a lease that expires ttl after its last keep-alive.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (int64, error) {
	resp, err := s.cli.Grant(ctx, int64(ttl.Seconds()))
	if err != nil {
		return 0, fmt.Errorf("etcd lease grant: %w", err)
	}
	return int64(resp.ID), nil
}

// Revoke ends a lease now, deleting its keys.
func (s *Store) Revoke(ctx context.Context, lease int64) error {
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
		return fmt.Errorf("etcd lease revoke: %w", err)
	}
	return nil
}

// Watch sends the store revision of every change under prefix until ctx
// ends, then closes the channel. It re-establishes the watch after errors
// (including compaction) and then sends the current revision, so a receiver
// that re-reads on every value never misses a change. Sends never block the
// watcher for long: a receiver that only needs "something changed" may
// coalesce.
func (s *Store) Watch(ctx context.Context, prefix string) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			wch := s.cli.Watch(wctx, s.abs(prefix), clientv3.WithPrefix(), clientv3.WithProgressNotify())
			for resp := range wch {
				if resp.Err() != nil {
					break
				}
				if len(resp.Events) == 0 {
					continue
				}
				notify(ctx, out, resp.Header.Revision)
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			// A broken watch may have missed events: tell the receiver to re-read.
			notify(ctx, out, 0)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return out
}

// notify delivers rev, replacing an undelivered older value so the sender
// never blocks behind a slow receiver.
func notify(ctx context.Context, ch chan int64, rev int64) {
	for {
		select {
		case ch <- rev:
			return
		case <-ctx.Done():
			return
		default:
			select {
			case <-ch:
			default:
			}
		}
	}
}

// Event is one change seen by WatchFrom: a put (Value set) or a delete.
type Event struct {
	Key         string
	Value       []byte
	ModRevision int64
	Deleted     bool
}

// Batch is the changes of one or more store revisions, in order, ending
// at Revision. Reset means the watch could not resume where it stopped
// (history compacted): the receiver must re-read everything at Revision
// or later; Events is then empty.
type Batch struct {
	Revision int64
	Events   []Event
	Reset    bool
}

// WatchFrom sends every change under prefix after revision rev, in
// revision order, until ctx ends; then it closes the channel. It resumes a
// broken watch at the next unseen revision; when that revision has been
// compacted away it sends a Batch with Reset and continues from the
// current revision. The channel is unbuffered: a slow receiver slows the
// watch (etcd buffers), it never loses events.
func (s *Store) WatchFrom(ctx context.Context, prefix string, rev int64) <-chan Batch {
	out := make(chan Batch)
	go func() { // owned by ctx
		defer close(out)
		next := rev + 1
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			wch := s.cli.Watch(wctx, s.abs(prefix), clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithProgressNotify())
			compacted := false
			for resp := range wch {
				if resp.CompactRevision != 0 {
					compacted = true
					break
				}
				if resp.Err() != nil {
					break
				}
				if len(resp.Events) == 0 {
					continue
				}
				b := Batch{Revision: resp.Header.Revision, Events: make([]Event, 0, len(resp.Events))}
				for _, ev := range resp.Events {
					e := Event{Key: s.rel(ev.Kv.Key), ModRevision: ev.Kv.ModRevision}
					if ev.Type == clientv3.EventTypeDelete {
						e.Deleted = true
					} else {
						e.Value = ev.Kv.Value
					}
					b.Events = append(b.Events, e)
				}
				if last := resp.Events[len(resp.Events)-1].Kv.ModRevision; last+1 > next {
					next = last + 1
				}
				select {
				case out <- b:
				case <-ctx.Done():
					cancel()
					return
				}
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			if compacted {
				resp, err := s.cli.Get(ctx, s.abs(prefix), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
				if err == nil {
					next = resp.Header.Revision + 1
					select {
					case out <- Batch{Revision: resp.Header.Revision, Reset: true}:
					case <-ctx.Done():
						return
					}
					continue
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return out
}

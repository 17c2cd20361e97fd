package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseLost is returned by KeepLeaseAlive when its lease is gone: it
// expired (etcd out of reach, or no keep-alive, for longer than its TTL) or
// was revoked. The keys attached to it are gone with it.
var ErrLeaseLost = errors.New("lease lost")

// KeepLeaseAlive renews lease until ctx ends (it then returns ctx's error)
// or the lease is lost (ErrLeaseLost). The renewals ride the client's one
// long-lived keep-alive stream, sent every third of the TTL, unlike
// KeepAlive, which opens a stream per call.
func (s *Store) KeepLeaseAlive(ctx context.Context, lease int64) error {
	ch, err := s.cli.KeepAlive(ctx, clientv3.LeaseID(lease))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("etcd lease keep-alive: %w", err)
	}
	// Drained so that the client never drops a response; the channel
	// closes when ctx ends or the lease is gone.
	for range ch {
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("etcd lease %x: %w", lease, ErrLeaseLost)
}

// LeaseNotFound reports whether err says that the lease a write named no
// longer exists.
func LeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound)
}

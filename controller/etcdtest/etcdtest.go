// Package etcdtest starts a real embedded etcd for one test: data in
// t.TempDir, a unix-socket client endpoint, logs discarded, fsync off (the
// only concession to speed), stopped at cleanup.
package etcdtest

import (
	"context"
	"testing"

	"github.com/meshwan/meshwan/controller/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Server is a running test etcd.
type Server struct {
	*store.Embedded
	t testing.TB
}

// Start starts etcd for t.
func Start(t testing.TB) *Server {
	t.Helper()
	e, err := store.StartEmbedded(context.Background(), t.TempDir(), store.EmbeddedOptions{UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return &Server{Embedded: e, t: t}
}

// NewClient opens a separate client (its own connection), closed at cleanup.
func (s *Server) NewClient() *clientv3.Client {
	s.t.Helper()
	cli, err := s.Client()
	if err != nil {
		s.t.Fatalf("etcd client: %v", err)
	}
	s.t.Cleanup(func() { cli.Close() })
	return cli
}

// NewStore returns a Store on a new client, rooted at the default root.
func (s *Server) NewStore() *store.Store {
	return store.New(s.NewClient(), "")
}

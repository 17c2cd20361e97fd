package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is an in-process single-member etcd server, the default state
// store so that one command brings the controller up. Its client endpoint
// is a unix socket inside the data directory (reachable with
// `etcdctl --endpoints unix://DIR/etcd.sock`), so it never clashes with an
// etcd already listening on 2379.
type Embedded struct {
	etcd     *embed.Etcd
	log      *slog.Logger
	Endpoint string
}

// EmbeddedOptions tunes the embedded server.
type EmbeddedOptions struct {
	// UnsafeNoFsync trades durability for speed; only tests set it.
	UnsafeNoFsync bool
	// Logger receives etcd's own logs (the server's, and those of the
	// clients Client opens) at warn level and above; nil discards them.
	Logger *slog.Logger
}

// StartEmbedded starts etcd with its data under dir and waits until it
// serves. Close stops it.
func StartEmbedded(ctx context.Context, dir string, opts EmbeddedOptions) (*Embedded, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	sock := filepath.Join(dir, "etcd.sock")
	// A socket left by a crash would make the listen fail.
	_ = os.Remove(sock)
	cfg := embed.NewConfig()
	cfg.Name = "meshwan"
	cfg.Dir = filepath.Join(dir, "member-data")
	cfg.WalDir = ""
	client := url.URL{Scheme: "unix", Path: sock}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	// The peer listener is required even for one member; a kernel-chosen
	// loopback port keeps it out of the way.
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = opts.UnsafeNoFsync
	// Full-mesh reconciliation batches many puts per transaction, and
	// ApplyNetwork commits a whole network file (every site, the topology
	// and the ASNs) in one: raise etcd's defaults of 128 operations and
	// 1.5 MiB per request.
	cfg.MaxTxnOps = 16384
	cfg.MaxRequestBytes = 32 << 20
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(ZapLogger(opts.Logger, slog.LevelWarn))
	// Its metrics (etcd_server_*, etcd_mvcc_*, etcd_disk_*) are registered
	// with prometheus's default registry, which the controller serves.
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(2 * time.Minute):
		e.Close()
		return nil, errors.New("embedded etcd did not become ready within 2m")
	}
	return &Embedded{etcd: e, log: opts.Logger, Endpoint: client.String()}, nil
}

// Client opens a new client to the embedded server.
func (e *Embedded) Client() (*clientv3.Client, error) {
	return NewClient([]string{e.Endpoint}, ClientOptions{}, e.log)
}

// Err reports a fatal server error.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the server.
func (e *Embedded) Close() { e.etcd.Close() }

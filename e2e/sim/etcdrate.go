package sim

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// scratchPrefix is outside every prefix the controller reads or watches.
const scratchPrefix = "sim-scratch/"

// RawTxnRate measures sequential single-key put-if-absent transactions
// (the allocation pattern: Txn(If(CreateRevision(k)=0)).Then(Put)) per
// second against the etcd listening on the unix socket sock, for about
// d, then deletes what it wrote. It is the ceiling a one-transaction-per-
// tunnel allocator would reach on that store.
func RawTxnRate(ctx context.Context, sock string, d time.Duration) (float64, error) {
	sock, err := filepath.Abs(sock)
	if err != nil {
		return 0, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{(&url.URL{Scheme: "unix", Path: sock}).String()},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		cli.Delete(dctx, scratchPrefix, clientv3.WithPrefix())
	}()
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		k := fmt.Sprintf("%s%08d", scratchPrefix, n)
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, "x")).Commit()
		if err != nil {
			return 0, err
		}
		if !r.Succeeded {
			return 0, fmt.Errorf("scratch key %s already existed", k)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

package keys_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/keys"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/secrets"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func newNet(t *testing.T, clock func() time.Time) *network.Network {
	t.Helper()
	srv := etcdtest.Start(t)
	p, _ := ipam.ParsePool30("10.255.0.0/16")
	asns, _ := ipam.ParseASNRange("4200000000-4200099999")
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{7}, 32))
	n := network.New(network.Config{Store: srv.NewStore(), TunnelPool: p, ASNs: asns, Sealer: sealer, Now: clock})
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); n.Wait() })
	for i := 1; i <= 2; i++ {
		s := intent.Site{Name: fmt.Sprintf("s%d", i), Role: intent.RoleSpoke,
			Transports:  []intent.Transport{{Name: "inet1", Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})}},
			LANPrefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24)}}
		if _, err := n.CreateSite(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh}); err != nil {
		t.Fatal(err)
	}
	return n
}

// The schedule starts a rotation of an old key; the driver waits for the
// ends, warns once about a stalled phase, and finishes the rotation once
// the ends report.
func TestDriverScheduleStallAndFinish(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	n := newNet(t, clock)
	ctx := context.Background()
	advance(48 * time.Hour)
	loaded := map[string]uint64{}
	var log logBuf
	var events []string
	d := keys.New(keys.Config{Net: n, Interval: 24 * time.Hour, StallAfter: time.Minute, Now: clock,
		OnEvent: func(what string) { events = append(events, what) },
		Logger:  slog.New(slog.NewTextHandler(&log, nil)),
		Loaded: func(_ context.Context, site string) (map[string]uint64, error) {
			out := map[string]uint64{}
			for id, s := range loaded {
				out[id] = s
			}
			return out, nil
		}})
	d.Once(ctx)
	ts, _ := n.ListTunnels(ctx, "")
	if len(ts) != 1 || ts[0].PSKRotation != network.RotationStaged {
		t.Fatalf("the schedule did not start the rotation: %+v", ts)
	}
	id := ts[0].ID
	advance(2 * time.Minute)
	d.Once(ctx)
	d.Once(ctx)
	if c := strings.Count(log.String(), "psk rotation stalled"); c != 1 {
		t.Fatalf("stall warnings: %d, want 1:\n%s", c, log.String())
	}
	if tv, _ := n.GetTunnel(ctx, id); tv.PSKRotation != network.RotationStaged {
		t.Fatalf("a stalled rotation moved on: %q", tv.PSKRotation)
	}
	loaded[id] = 2
	d.Once(ctx)
	loaded[id] = 3
	d.Once(ctx)
	tv, _ := n.GetTunnel(ctx, id)
	if tv.PSKRotation != "" || tv.Serial() != 4 {
		t.Fatalf("after both ends reported: phase %q serial %d", tv.PSKRotation, tv.Serial())
	}
	if len(events) != 2 || !strings.Contains(events[0], "stalled in phase staged") || !strings.Contains(events[1], "completed") {
		t.Fatalf("events %q, want one stall and one completion", events)
	}
	// The fresh key is not due again.
	d.Once(ctx)
	if tv, _ := n.GetTunnel(ctx, id); tv.PSKRotation != "" {
		t.Fatal("a just-rotated key was rotated again")
	}
	if strings.Contains(log.String(), "sealed") {
		t.Fatal("log mentions key material")
	}
}

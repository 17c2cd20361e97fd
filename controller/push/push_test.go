package push_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/push"
	"github.com/meshwan/meshwan/controller/secrets"
)

// fixture is a network on a real embedded etcd with a running Hub.
type fixture struct {
	net *network.Network
	hub *push.Hub
	ctx context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := etcdtest.Start(t)
	pool, _ := ipam.ParsePool30("10.255.0.0/16")
	asns, _ := ipam.ParseASNRange("4200000000-4200099999")
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{7}, 32))
	n := network.New(network.Config{Store: srv.NewStore(), TunnelPool: pool, ASNs: asns, Sealer: sealer})
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h := push.New(n, nil)
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; n.Wait() })
	return &fixture{net: n, hub: h, ctx: ctx}
}

func site(i int, hub bool) intent.Site {
	s := intent.Site{
		Name:        fmt.Sprintf("s%03d", i),
		Transports:  []intent.Transport{{Name: "inet1", Addr: netip.AddrFrom4([4]byte{20, 0, byte(i >> 8), byte(i)})}},
		LANPrefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)},
	}
	s.Role = intent.RoleSpoke
	if hub {
		s.Role = intent.RoleHub
	}
	return s
}

// next waits for the subscription's next update.
func next(t *testing.T, s *push.Subscription) push.Update {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-s.C():
			if u, ok := s.Next(); ok {
				return u
			}
		case <-deadline:
			t.Fatal("no update within 20s")
		}
	}
}

// quiet asserts that nothing is sent after the hub has handled a later
// change elsewhere (a marker subscription receiving its own update shows
// the hub's pass is over).
func quiet(t *testing.T, f *fixture, s *push.Subscription, marker *push.Subscription, poke func()) {
	t.Helper()
	poke()
	next(t, marker)
	if u, ok := s.Next(); ok {
		t.Fatalf("unexpected update: delta=%v tunnels=%d removed=%v", u.Delta, len(u.State.Tunnels), u.Removed)
	}
}

func ids(u push.Update) []string {
	var out []string
	for _, t := range u.State.Tunnels {
		out = append(out, t.ID)
	}
	return out
}

func TestDeltasCarryOnlyWhatChanged(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	for i := range 2 {
		if _, err := f.net.CreateSite(ctx, site(i, true)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 2; i < 12; i++ {
		if _, err := f.net.CreateSite(ctx, site(i, false)); err != nil {
			t.Fatal(err)
		}
	}
	top := intent.Topology{Mode: intent.ModeHubAndSpoke, TransitPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/9")}}
	if _, err := f.net.SetTopology(ctx, top); err != nil {
		t.Fatal(err)
	}
	hub, err := f.hub.Subscribe(ctx, "s000", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	u := next(t, hub)
	if u.Delta || len(u.State.Tunnels) != 11 {
		t.Fatalf("first update: delta=%v with %d tunnels, want a full state with 11", u.Delta, len(u.State.Tunnels))
	}
	full := u.Hash
	spoke, err := f.hub.Subscribe(ctx, "s005", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer spoke.Close()
	su := next(t, spoke)
	// The spoke's state does not list the other spokes' LANs: the transit
	// summary goes over the tunnel to its first hub.
	for _, tun := range su.State.Tunnels {
		want := 1
		if tun.RemoteSite == "s000" {
			want = 2
		}
		if len(tun.RemoteLANs) != want {
			t.Errorf("spoke tunnel %s has remote LANs %v, want %d", tun.ID, tun.RemoteLANs, want)
		}
	}
	other, err := f.hub.Subscribe(ctx, "s009", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	next(t, other)

	// One spoke changes its address: the hubs get a delta with that one
	// tunnel, the spoke its own state again, the other spokes nothing.
	s5 := site(5, false)
	s5.Transports[0].Addr = netip.MustParseAddr("20.9.9.9")
	if _, err := f.net.UpdateSite(ctx, s5); err != nil {
		t.Fatal(err)
	}
	u = next(t, hub)
	if !u.Delta || !bytes.Equal(u.BaseHash, full) || !slices.Equal(ids(u), []string{"s000.inet1~s005.inet1"}) || len(u.Removed) != 0 {
		t.Fatalf("hub update after a spoke's address change: delta=%v base ok=%v tunnels=%v removed=%v", u.Delta, bytes.Equal(u.BaseHash, full), ids(u), u.Removed)
	}
	if u.State.Tunnels[0].RemoteUnderlay != s5.Transports[0].Addr {
		t.Errorf("delta carries underlay %v, want %v", u.State.Tunnels[0].RemoteUnderlay, s5.Transports[0].Addr)
	}
	su = next(t, spoke)
	if !su.Delta || len(su.State.Tunnels) != 2 {
		t.Errorf("changed spoke: delta=%v tunnels=%v, want a delta with its 2 tunnels (local underlay)", su.Delta, ids(su))
	}
	if _, ok := other.Next(); ok {
		t.Error("an unrelated spoke got an update")
	}

	// A new spoke: the hubs get one added tunnel each, nobody else anything.
	if _, err := f.net.CreateSite(ctx, site(20, false)); err != nil {
		t.Fatal(err)
	}
	u = next(t, hub)
	if !u.Delta || !slices.Equal(ids(u), []string{"s000.inet1~s020.inet1"}) {
		t.Fatalf("hub update after a new spoke: delta=%v tunnels=%v", u.Delta, ids(u))
	}
	if _, ok := other.Next(); ok {
		t.Error("an unrelated spoke got an update when a spoke was added")
	}

	// Deleting it removes the tunnel by id.
	if err := f.net.DeleteSite(ctx, "s020"); err != nil {
		t.Fatal(err)
	}
	u = next(t, hub)
	if !u.Delta || len(u.State.Tunnels) != 0 || !slices.Equal(u.Removed, []string{"s000.inet1~s020.inet1"}) {
		t.Fatalf("hub update after a deletion: delta=%v tunnels=%v removed=%v", u.Delta, ids(u), u.Removed)
	}

	// A topology change reaches everybody, as a delta without tunnels
	// when only the header changed.
	top.MTU = 1380
	if _, err := f.net.SetTopology(ctx, top); err != nil {
		t.Fatal(err)
	}
	u = next(t, other)
	if !u.Delta || len(u.State.Tunnels) != 0 || u.State.Topology.MTU != 1380 {
		t.Fatalf("after an MTU change: delta=%v tunnels=%v mtu=%d", u.Delta, ids(u), u.State.Topology.MTU)
	}
}

func TestCurrentEdgeIsNotSentItsStateAgain(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	for i := range 3 {
		if _, err := f.net.CreateSite(ctx, site(i, i == 0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	s, err := f.hub.Subscribe(ctx, "s001", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	held := next(t, s).Hash
	s.Close()

	// A reconnect claiming the current hash gets only a confirmation (no
	// tunnels, no header) and then nothing; claiming another gets a full
	// state; an edge without deltas always gets full states.
	again, err := f.hub.Subscribe(ctx, "s001", held, true)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if u := next(t, again); !u.Unchanged || !bytes.Equal(u.Hash, held) || len(u.State.Tunnels) != 0 {
		t.Fatalf("reconnect with the current hash: unchanged=%v hash ok=%v tunnels=%v", u.Unchanged, bytes.Equal(u.Hash, held), ids(u))
	}
	marker, err := f.hub.Subscribe(ctx, "s002", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close()
	next(t, marker)
	quiet(t, f, again, marker, func() {
		s2 := site(2, false)
		s2.Transports[0].Addr = netip.MustParseAddr("20.7.7.7")
		if _, err := f.net.UpdateSite(ctx, s2); err != nil {
			t.Fatal(err)
		}
	})

	stale, err := f.hub.Subscribe(ctx, "s001", []byte("not the hash of anything, 32 b."), true)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	if u := next(t, stale); u.Delta || len(u.State.Tunnels) != 1 {
		t.Errorf("stale hash: delta=%v tunnels=%v, want a full state", u.Delta, ids(u))
	}
	old, err := f.hub.Subscribe(ctx, "s001", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	next(t, old)
	s1 := site(1, false)
	s1.LANPrefixes = append(s1.LANPrefixes, netip.MustParsePrefix("192.168.50.0/24"))
	if _, err := f.net.UpdateSite(ctx, s1); err != nil {
		t.Fatal(err)
	}
	if u := next(t, old); u.Delta || len(u.State.Tunnels) != 1 {
		t.Errorf("edge without deltas: delta=%v tunnels=%v, want a full state", u.Delta, ids(u))
	}

	// Deleting the site ends the feed.
	if err := f.net.DeleteSite(ctx, "s001"); err != nil {
		t.Fatal(err)
	}
	if u := next(t, old); !errors.Is(u.Err, intent.ErrNotFound) {
		t.Errorf("after deletion: %+v, want ErrNotFound", u.Err)
	}
}

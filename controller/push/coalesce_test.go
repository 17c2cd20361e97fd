package push_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/push"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
)

// newFixtureStore is newFixture that also returns the store the network
// uses, for tests that write what a crashed replica would leave.
func newFixtureStore(t *testing.T) (*fixture, *store.Store) {
	t.Helper()
	srv := etcdtest.Start(t)
	pool, _ := ipam.ParsePool30("10.255.0.0/16")
	asns, _ := ipam.ParseASNRange("4200000000-4200099999")
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{7}, 32))
	st := srv.NewStore()
	n := network.New(network.Config{Store: st, TunnelPool: pool, ASNs: asns, Sealer: sealer})
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h := push.New(n, nil)
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }() // owned by the test: ends at cleanup
	t.Cleanup(func() { cancel(); <-done; n.Wait() })
	return &fixture{net: n, hub: h, ctx: ctx}, st
}

func subscribe(t *testing.T, f *fixture, site string, held []byte) *push.Subscription {
	t.Helper()
	s, err := f.hub.Subscribe(f.ctx, site, held, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func hubAndSpoke(t *testing.T, f *fixture, spokes int) {
	t.Helper()
	for i := range spokes + 1 {
		if _, err := f.net.CreateSite(f.ctx, site(i, i == 0)); err != nil {
			t.Fatal(err)
		}
	}
	top := intent.Topology{Mode: intent.ModeHubAndSpoke, TransitPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/9")}}
	if _, err := f.net.SetTopology(f.ctx, top); err != nil {
		t.Fatal(err)
	}
}

// barrier moves spoke i to addr and waits until marker, a subscription on
// spoke i, has the update. Hub passes run one at a time and a change made
// now is taken by a later pass than any already running, so when barrier
// returns every pass that began before it is over. (The change also
// touches the hubs' tunnels to spoke i: callers pick a spoke whose change
// does not matter to what they check.)
func barrier(t *testing.T, f *fixture, marker *push.Subscription, i int, addr string) {
	t.Helper()
	s := site(i, false)
	s.Transports[0].Addr = netip.MustParseAddr(addr)
	if _, err := f.net.UpdateSite(f.ctx, s); err != nil {
		t.Fatal(err)
	}
	for {
		u := next(t, marker)
		for _, tun := range u.State.Tunnels {
			if tun.LocalUnderlay == s.Transports[0].Addr {
				return
			}
		}
	}
}

// TestChangesCoalesceForASlowEdge: however many changes happen while an
// edge does not take its updates, it then gets exactly one update, a delta
// from what it holds carrying their sum (final values only), and nothing
// after it.
func TestChangesCoalesceForASlowEdge(t *testing.T) {
	f, _ := newFixtureStore(t)
	hubAndSpoke(t, f, 3)
	slow := subscribe(t, f, "s001", nil)
	first := next(t, slow)
	if first.Delta || len(first.State.Tunnels) != 1 {
		t.Fatalf("first update: delta=%v tunnels=%v, want a full state with 1 tunnel", first.Delta, ids(first))
	}
	watcher := subscribe(t, f, "s001", nil) // same site, read at once
	next(t, watcher)
	marker := subscribe(t, f, "s002", nil) // a spoke the slow edge has no tunnel to
	next(t, marker)

	// Four changes to s001's state in four transactions: the hub moves
	// twice, s001 gains two LAN prefixes.
	hub := site(0, true)
	for _, a := range []string{"20.8.8.1", "20.8.8.2"} {
		hub.Transports[0].Addr = netip.MustParseAddr(a)
		if _, err := f.net.UpdateSite(f.ctx, hub); err != nil {
			t.Fatal(err)
		}
	}
	s1 := site(1, false)
	for _, p := range []string{"192.168.1.0/24", "192.168.2.0/24"} {
		s1.LANPrefixes = append(s1.LANPrefixes, netip.MustParsePrefix(p))
		if _, err := f.net.UpdateSite(f.ctx, s1); err != nil {
			t.Fatal(err)
		}
	}
	// The watcher shows when the hub has applied the last change to s001,
	// the barrier that the pass doing it is over.
	var final []byte
	for {
		u := next(t, watcher)
		if len(u.State.Site.LANPrefixes) == 3 {
			final = u.Hash
			break
		}
	}
	barrier(t, f, marker, 2, "20.7.7.2")

	u, ok := slow.Next()
	if !ok {
		t.Fatal("the slow edge has no update after four changes")
	}
	if !u.Delta || !bytes.Equal(u.BaseHash, first.Hash) || !bytes.Equal(u.Hash, final) {
		t.Errorf("coalesced update: delta=%v, base is what it holds=%v, hash is the final one=%v",
			u.Delta, bytes.Equal(u.BaseHash, first.Hash), bytes.Equal(u.Hash, final))
	}
	if !slices.Equal(ids(u), []string{"s000.inet1~s001.inet1"}) || u.State.Tunnels[0].RemoteUnderlay != hub.Transports[0].Addr {
		t.Errorf("coalesced update tunnels %v, want the one tunnel with the hub's last address %v", ids(u), hub.Transports[0].Addr)
	}
	if !slices.Equal(u.State.Site.LANPrefixes, s1.LANPrefixes) {
		t.Errorf("coalesced update LANs %v, want %v", u.State.Site.LANPrefixes, s1.LANPrefixes)
	}
	if u, ok := slow.Next(); ok {
		t.Errorf("a second update after the coalesced one: delta=%v tunnels=%v", u.Delta, ids(u))
	}
}

// TestStateWithheldWhileTunnelsPending: while a site's tunnels are not all
// allocated (an intent change committed, its reconcile not done: here the
// replica that made it crashed in between), the hub's state is withheld —
// its edge gets nothing, not a half-done change — and once the reconcile
// has run it gets one update with everything that changed meanwhile.
func TestStateWithheldWhileTunnelsPending(t *testing.T) {
	f, st := newFixtureStore(t)
	hubAndSpoke(t, f, 2)
	hub := subscribe(t, f, "s000", nil)
	first := next(t, hub)
	if len(first.State.Tunnels) != 2 {
		t.Fatalf("hub's first state has tunnels %v, want 2", ids(first))
	}
	s1 := subscribe(t, f, "s001", nil)
	next(t, s1)

	// A new spoke's intent, written as a change does (site record and the
	// intent revision in one transaction), without the reconcile after it.
	s3 := site(3, false)
	s3.ASN = 4200000099
	raw, err := json.Marshal(s3)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := st.Txn(f.ctx, nil, []store.Op{store.Put("intent/sites/s003", raw), store.Put("intent/rev", nil)}); err != nil || !ok {
		t.Fatalf("write the intent: ok=%v err=%v", ok, err)
	}
	// s001 moves meanwhile: s001 (whose tunnels are all there) gets it;
	// the second move shows the pass that saw the first one is over.
	barrier(t, f, s1, 1, "20.6.6.1")
	barrier(t, f, s1, 1, "20.6.6.2")
	if u, ok := hub.Next(); ok {
		t.Fatalf("hub got an update while a spoke's tunnel is unallocated: delta=%v tunnels=%v", u.Delta, ids(u))
	}
	newSpoke := subscribe(t, f, "s003", nil)
	if u, ok := newSpoke.Next(); ok {
		t.Fatalf("the new spoke got a state without its tunnel: tunnels=%v", ids(u))
	}

	// The reconcile (any replica's) allocates the tunnel: the hub gets one
	// update with s001's tunnel changed and s003's added.
	if err := f.net.Reconcile(f.ctx); err != nil {
		t.Fatal(err)
	}
	u := next(t, hub)
	if !u.Delta || !bytes.Equal(u.BaseHash, first.Hash) {
		t.Errorf("hub update: delta=%v from what it holds=%v", u.Delta, bytes.Equal(u.BaseHash, first.Hash))
	}
	if len(u.Removed) != 0 || !slices.Equal(ids(u), []string{"s000.inet1~s001.inet1", "s000.inet1~s003.inet1"}) {
		t.Errorf("hub update: tunnels %v removed %v, want s001's and s003's", ids(u), u.Removed)
	}
	if len(u.State.Tunnels) == 2 && u.State.Tunnels[0].RemoteUnderlay != netip.MustParseAddr("20.6.6.2") {
		t.Errorf("hub update carries s001 at %v, want its last address 20.6.6.2", u.State.Tunnels[0].RemoteUnderlay)
	}
	if u := next(t, newSpoke); u.Delta || !slices.Equal(ids(u), []string{"s000.inet1~s003.inet1"}) {
		t.Errorf("new spoke: delta=%v tunnels=%v, want a full state with its tunnel", u.Delta, ids(u))
	}
}

// TestSubscribeUnknownSite: subscribing for a site that does not exist
// fails with ErrNotFound and registers nothing.
func TestSubscribeUnknownSite(t *testing.T) {
	f, _ := newFixtureStore(t)
	if _, err := f.hub.Subscribe(f.ctx, "nope", nil, true); !errors.Is(err, intent.ErrNotFound) {
		t.Errorf("Subscribe(nope) = %v, want ErrNotFound", err)
	}
}

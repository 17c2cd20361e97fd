package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

func applySite(name string, hub bool, i int) intent.Site {
	role := intent.RoleSpoke
	if hub {
		role = intent.RoleHub
	}
	return intent.Site{Name: name, Role: role,
		Transports:  []intent.Transport{{Name: "inet1", Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})}},
		LANPrefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24)}}
}

func siteMap(sites ...intent.Site) map[string]intent.Site {
	m := map[string]intent.Site{}
	for _, s := range sites {
		m[s.Name] = s
	}
	return m
}

// tunnelSet is stored tunnels with the ends their ids name.
func tunnelSet(ids ...string) map[string]Tunnel {
	m := map[string]Tunnel{}
	for _, id := range ids {
		a, b, ok := topology.ParseID(id)
		if !ok {
			panic("bad tunnel id " + id)
		}
		m[id] = Tunnel{ID: id, A: a, B: b}
	}
	return m
}

func TestPlanNetwork(t *testing.T) {
	hs := intent.Topology{Mode: intent.ModeHubAndSpoke}
	hq, br1, br2 := applySite("hq", true, 1), applySite("br1", false, 2), applySite("br2", false, 3)
	br1moved := br1
	br1moved.LANPrefixes = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}
	br1hub := br1
	br1hub.Role = intent.RoleHub
	cases := []struct {
		name    string
		cur     map[string]intent.Site
		curTopo intent.Topology
		tunnels map[string]Tunnel
		want    []intent.Site
		topo    intent.Topology
		prune   bool
		plan    Plan
	}{
		{name: "empty to seed", cur: siteMap(), want: []intent.Site{hq, br1}, topo: hs,
			plan: Plan{Created: []string{"br1", "hq"}, Topology: []string{"mode"}, TunnelsAdded: []string{"br1.inet1~hq.inet1"}}},
		{name: "unchanged", cur: siteMap(hq, br1), curTopo: hs, tunnels: tunnelSet("hq.inet1~br1.inet1"), want: []intent.Site{hq, br1}, topo: hs,
			plan: Plan{TunnelsKept: 1}},
		{name: "spelled-out defaults are no change", cur: siteMap(hq, br1), curTopo: hs, tunnels: tunnelSet("hq.inet1~br1.inet1"), want: []intent.Site{hq, br1},
			topo: intent.Topology{Mode: intent.ModeHubAndSpoke, MTU: 1400, Match: intent.MatchSameName, Routing: intent.RoutingStatic},
			plan: Plan{TunnelsKept: 1}},
		{name: "add a spoke keeps the old tunnel", cur: siteMap(hq, br1), curTopo: hs, tunnels: tunnelSet("hq.inet1~br1.inet1"), want: []intent.Site{hq, br1, br2}, topo: hs,
			plan: Plan{Created: []string{"br2"}, TunnelsAdded: []string{"br2.inet1~hq.inet1"}, TunnelsKept: 1}},
		{name: "site missing without prune is kept", cur: siteMap(hq, br1, br2), curTopo: hs, tunnels: tunnelSet("hq.inet1~br1.inet1", "hq.inet1~br2.inet1"),
			want: []intent.Site{hq, br1}, topo: hs,
			plan: Plan{NotInRequest: []string{"br2"}, TunnelsKept: 2}},
		{name: "site missing with prune is deleted", cur: siteMap(hq, br1, br2), curTopo: hs, tunnels: tunnelSet("hq.inet1~br1.inet1", "hq.inet1~br2.inet1"),
			want: []intent.Site{hq, br1}, topo: hs, prune: true,
			plan: Plan{Deleted: []string{"br2"}, TunnelsRemoved: []string{"hq.inet1~br2.inet1"}, TunnelsKept: 1}},
		{name: "changed fields", cur: siteMap(hq, br1), curTopo: hs, tunnels: tunnelSet("hq.inet1~br1.inet1"), want: []intent.Site{hq, br1moved}, topo: hs,
			plan: Plan{Updated: []SiteUpdate{{"br1", []string{"lan_prefixes"}}}, TunnelsKept: 1}},
		// The stored ids name the hub first (an older version); the
		// tunnels are matched by their ends and kept.
		{name: "role and mode change keep every tunnel that stays", cur: siteMap(hq, br1, br2), curTopo: hs, tunnels: tunnelSet("hq.inet1~br1.inet1", "hq.inet1~br2.inet1"),
			want: []intent.Site{hq, br1hub, br2}, topo: intent.Topology{Mode: intent.ModeFullMesh, MTU: 1380},
			plan: Plan{Updated: []SiteUpdate{{"br1", []string{"role"}}}, Topology: []string{"mode", "mtu"},
				TunnelsAdded: []string{"br1.inet1~br2.inet1"}, TunnelsKept: 2}},
		{name: "demoting the hub removes only the spokes' tunnels", cur: siteMap(hq, br1hub, br2), curTopo: hs,
			tunnels: tunnelSet("br1.inet1~br2.inet1", "br1.inet1~hq.inet1", "br2.inet1~hq.inet1"),
			want:    []intent.Site{applySite("hq", false, 1), br1hub, br2}, topo: hs,
			plan: Plan{Updated: []SiteUpdate{{"hq", []string{"role"}}}, TunnelsRemoved: []string{"br2.inet1~hq.inet1"}, TunnelsKept: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := planNetwork(tc.cur, tc.curTopo, tc.tunnels, tc.want, tc.topo, tc.prune)
			if !reflect.DeepEqual(got, tc.plan) {
				t.Errorf("plan\n got %+v\nwant %+v", got, tc.plan)
			}
			if got.Changed() != tc.plan.Changed() {
				t.Errorf("Changed %v", got.Changed())
			}
		})
	}
}

func TestTxnErrorNamesLimit(t *testing.T) {
	err := txnError(fmt.Errorf("%w (200 ops): etcdserver: too many operations in txn request", store.ErrTxnTooLarge), 200)
	if !errors.Is(err, intent.ErrPrecondition) || !strings.Contains(err.Error(), "200 operations") || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Errorf("too many ops: %v", err)
	}
	err = txnError(errors.New("etcd txn: etcdserver: request is too large"), 7)
	if !errors.Is(err, intent.ErrPrecondition) || !strings.Contains(err.Error(), "--max-request-bytes") {
		t.Errorf("too large: %v", err)
	}
	other := errors.New("etcd txn: connection refused")
	if got := txnError(other, 3); got != other {
		t.Errorf("other error changed: %v", got)
	}
}

type applyFixture struct {
	st  *store.Store
	net *Network
}

func newApplyFixture(t *testing.T, pool string) *applyFixture {
	t.Helper()
	st := etcdtest.Start(t).NewStore()
	p, err := ipam.ParsePool30(pool)
	if err != nil {
		t.Fatal(err)
	}
	asns, _ := ipam.ParseASNRange("4200000000-4200099999")
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{42}, 32))
	n := New(Config{Store: st, TunnelPool: p, ASNs: asns, Sealer: sealer, EdgeKey: func(s string) string { return "enroll/edges/" + s }})
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); n.Wait() })
	return &applyFixture{st: st, net: n}
}

func (f *applyFixture) dump(t *testing.T) string {
	t.Helper()
	kvs, _, err := f.st.List(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s\n", kv.Key, kv.Value)
	}
	return b.String()
}

func TestApplyNetworkIdempotentAllOrNothingPrune(t *testing.T) {
	f := newApplyFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	hs := intent.Topology{Mode: intent.ModeHubAndSpoke}
	sites := []intent.Site{applySite("hq", true, 1), applySite("br1", false, 2), applySite("br2", false, 3)}

	// A dry run plans and writes nothing.
	before := f.dump(t)
	p, err := f.net.ApplyNetwork(ctx, sites, hs, false, true)
	if err != nil || len(p.Created) != 3 || len(p.TunnelsAdded) != 2 {
		t.Fatalf("dry run: %+v %v", p, err)
	}
	if f.dump(t) != before {
		t.Fatal("dry run wrote")
	}

	p, err = f.net.ApplyNetwork(ctx, sites, hs, false, false)
	if err != nil || !p.Changed() {
		t.Fatalf("apply: %+v %v", p, err)
	}
	tuns, _ := f.net.ListTunnels(ctx, "")
	if len(tuns) != 2 {
		t.Fatalf("%d tunnels, want 2", len(tuns))
	}
	got, _ := f.net.ListSites(ctx)
	asns := map[uint32]bool{}
	for _, s := range got {
		if s.ASN < 4200000000 || asns[s.ASN] {
			t.Fatalf("site %s ASN %d: outside the pool or duplicate", s.Name, s.ASN)
		}
		asns[s.ASN] = true
	}

	// Idempotent: the same declaration writes nothing.
	before = f.dump(t)
	p, err = f.net.ApplyNetwork(ctx, sites, hs, false, false)
	if err != nil || p.Changed() || p.TunnelsKept != 2 {
		t.Fatalf("second apply: %+v %v", p, err)
	}
	if f.dump(t) != before {
		t.Fatal("second apply wrote")
	}

	// All-or-nothing: one good new site, one changed site and one site
	// clashing with another: nothing is written, the error names the site.
	bad := append([]intent.Site{}, sites...)
	bad[1].LANPrefixes = append(bad[1].LANPrefixes, netip.MustParsePrefix("10.21.0.0/24"))
	clash := applySite("br4", false, 4)
	clash.LANPrefixes = []netip.Prefix{netip.MustParsePrefix("10.3.0.128/25")}
	bad = append(bad, applySite("br3", false, 9), clash)
	_, err = f.net.ApplyNetwork(ctx, bad, hs, false, false)
	if !errors.Is(err, intent.ErrConflict) || !strings.Contains(err.Error(), `site "br4"`) || !strings.Contains(err.Error(), "site.lan_prefixes[0]") {
		t.Fatalf("clash: %v", err)
	}
	// A topology the sites cannot have: refused, nothing written.
	if _, err := f.net.ApplyNetwork(ctx, sites[1:], hs, true, false); !errors.Is(err, intent.ErrPrecondition) || !strings.Contains(err.Error(), "topology.mode") {
		t.Fatalf("pruning the last hub: %v", err)
	}
	changedASN := append([]intent.Site{}, sites...)
	changedASN[0].ASN = 65000
	if _, err := f.net.ApplyNetwork(ctx, changedASN, hs, false, false); !errors.Is(err, intent.ErrPrecondition) || !strings.Contains(err.Error(), `site "hq": site.asn`) {
		t.Fatalf("ASN change: %v", err)
	}
	if f.dump(t) != before {
		t.Fatal("a refused apply wrote")
	}

	// Without prune a missing site stays (and is listed); with prune it
	// goes, with its tunnel, ASN key and enrollment.
	p, err = f.net.ApplyNetwork(ctx, sites[:2], hs, false, false)
	if err != nil || p.Changed() || !reflect.DeepEqual(p.NotInRequest, []string{"br2"}) {
		t.Fatalf("without prune: %+v %v", p, err)
	}
	p, err = f.net.ApplyNetwork(ctx, sites[:2], hs, true, false)
	if err != nil || !reflect.DeepEqual(p.Deleted, []string{"br2"}) || !reflect.DeepEqual(p.TunnelsRemoved, []string{"br2.inet1~hq.inet1"}) {
		t.Fatalf("prune: %+v %v", p, err)
	}
	if tuns, _ := f.net.ListTunnels(ctx, ""); len(tuns) != 1 {
		t.Fatalf("after prune %d tunnels, want 1", len(tuns))
	}
	if d := f.dump(t); strings.Contains(d, "br2") {
		t.Errorf("pruned site left keys:\n%s", d)
	}
}

// TestApplyNetworkOneTransaction: a 300-site network (over etcd's
// default of 128 operations) commits in one transaction: one revision.
func TestApplyNetworkOneTransaction(t *testing.T) {
	f := newApplyFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	var sites []intent.Site
	for i := range 300 {
		s := applySite(fmt.Sprintf("s%03d", i), i == 0, 1)
		s.Transports[0].Addr = netip.AddrFrom4([4]byte{198, 51, byte(i / 250), byte(1 + i%250)})
		s.LANPrefixes = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 200), byte(i % 200), 0}), 24)}
		sites = append(sites, s)
	}
	revBefore := f.net.v.copySnapshot().intentRev
	p, err := f.net.ApplyNetwork(ctx, sites, intent.Topology{Mode: intent.ModeHubAndSpoke}, false, false)
	if err != nil || len(p.Created) != 300 || len(p.TunnelsAdded) != 299 {
		t.Fatalf("apply: %d created, %d tunnels, %v", len(p.Created), len(p.TunnelsAdded), err)
	}
	snap := f.net.v.copySnapshot()
	if len(snap.Sites) != 300 || len(snap.Tunnels) != 299 {
		t.Fatalf("%d sites %d tunnels", len(snap.Sites), len(snap.Tunnels))
	}
	// Every site record and the topology carry the same mod revision as
	// intent/rev: one transaction.
	for name, rev := range snap.siteRevs {
		if rev != snap.intentRev {
			t.Fatalf("site %s written at %d, intent/rev at %d (before %d)", name, rev, snap.intentRev, revBefore)
		}
	}
}

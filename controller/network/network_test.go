package network_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/meshwan/meshwan/edge/dataplane"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
)

type fixture struct {
	srv *etcdtest.Server
	st  *store.Store
	net *network.Network
}

func newFixture(t testing.TB, pool string) *fixture {
	t.Helper()
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	p, err := ipam.ParsePool30(pool)
	if err != nil {
		t.Fatal(err)
	}
	asns, _ := ipam.ParseASNRange("4200000000-4200099999")
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{42}, 32))
	n := network.New(network.Config{Store: st, TunnelPool: p, ASNs: asns, Sealer: sealer})
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); n.Wait() })
	return &fixture{srv: srv, st: st, net: n}
}

func mkSite(i int, role intent.Role) intent.Site {
	return intent.Site{
		Name:        fmt.Sprintf("site%02d", i),
		Role:        role,
		Transports:  []intent.Transport{{Name: "inet1", Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)})}},
		LANPrefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24)},
	}
}

func (f *fixture) addSites(t *testing.T, sites ...intent.Site) {
	t.Helper()
	for _, s := range sites {
		if _, err := f.net.CreateSite(context.Background(), s); err != nil {
			t.Fatalf("CreateSite(%s): %v", s.Name, err)
		}
	}
}

func (f *fixture) tunnels(t *testing.T) map[string]network.TunnelView {
	t.Helper()
	ts, err := f.net.ListTunnels(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]network.TunnelView{}
	for _, tv := range ts {
		out[tv.ID] = tv
	}
	return out
}

// dump returns every key and value in etcd, for "nothing changed" checks.
func (f *fixture) dump(t *testing.T) string {
	t.Helper()
	kvs, _, err := f.st.List(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s\n", kv.Key, kv.Value)
	}
	return b.String()
}

func TestFullMeshOf50Sites(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	for i := range 50 {
		f.addSites(t, mkSite(i, intent.RoleSpoke))
	}
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh}); err != nil {
		t.Fatal(err)
	}
	ts := f.tunnels(t)
	if len(ts) != 1225 {
		t.Fatalf("%d tunnels, want 1225", len(ts))
	}
	pool := netip.MustParsePrefix("10.255.0.0/16")
	seen := map[netip.Prefix]string{}
	for id, tv := range ts {
		if tv.Prefix.Bits() != 30 || !pool.Contains(tv.Prefix.Addr()) {
			t.Fatalf("tunnel %s: %s is not a /30 inside %s", id, tv.Prefix, pool)
		}
		if other, dup := seen[tv.Prefix]; dup {
			t.Fatalf("tunnels %s and %s share %s", id, other, tv.Prefix)
		}
		seen[tv.Prefix] = id
		if tv.AEnd.Inner.Addr() != tv.Prefix.Addr().Next() || tv.BEnd.Inner.Addr() != tv.Prefix.Addr().Next().Next() {
			t.Fatalf("tunnel %s: ends %s %s are not the usable addresses of %s", id, tv.AEnd.Inner, tv.BEnd.Inner, tv.Prefix)
		}
	}
	// Every site got a distinct ASN from the pool.
	sites, _ := f.net.ListSites(ctx)
	asns := map[uint32]bool{}
	for _, s := range sites {
		if s.ASN < 4200000000 || s.ASN > 4200099999 || asns[s.ASN] {
			t.Fatalf("site %s: ASN %d duplicate or outside the pool", s.Name, s.ASN)
		}
		asns[s.ASN] = true
	}
	// Reconciling an unchanged intent writes nothing.
	before, _ := f.net.Snapshot(ctx)
	if err := f.net.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := f.net.Snapshot(ctx)
	if after.Revision != before.Revision {
		t.Errorf("Reconcile on an unchanged intent wrote: revision %d -> %d", before.Revision, after.Revision)
	}
}

func TestHubAndSpokeTwoHubs(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	f.addSites(t, mkSite(0, intent.RoleHub), mkSite(1, intent.RoleHub), mkSite(2, intent.RoleSpoke), mkSite(3, intent.RoleSpoke), mkSite(4, intent.RoleSpoke))
	if _, err := f.net.SetTopology(context.Background(), intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	ts := f.tunnels(t)
	// 3 spokes x 2 hubs + the hub-to-hub link.
	if len(ts) != 7 {
		t.Fatalf("%d tunnels, want 7: %v", len(ts), keys(ts))
	}
	for id, tv := range ts {
		if tv.A.Site != "site00" && tv.A.Site != "site01" {
			t.Errorf("tunnel %s: A end %s is not a hub", id, tv.A.Site)
		}
		if tv.B.Site != "site01" && tv.B.Site != "site00" && tv.A.Site == tv.B.Site {
			t.Errorf("tunnel %s joins a site to itself", id)
		}
	}
	for _, spoke := range []string{"site02", "site03", "site04"} {
		for _, other := range []string{"site02", "site03", "site04"} {
			if _, ok := ts[spoke+".inet1~"+other+".inet1"]; ok {
				t.Errorf("spoke-to-spoke tunnel %s~%s exists in hub-and-spoke", spoke, other)
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTopologyChangeMovesOnlyAffectedTunnels: going from full mesh to
// hub-and-spoke removes the spoke-to-spoke tunnels and keeps every
// hub tunnel's /30 and PSK; a released /30 is reused later.
func TestTopologyChangeMovesOnlyAffectedTunnels(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	f.addSites(t, mkSite(0, intent.RoleHub), mkSite(1, intent.RoleSpoke), mkSite(2, intent.RoleSpoke), mkSite(3, intent.RoleSpoke))
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh}); err != nil {
		t.Fatal(err)
	}
	mesh := f.tunnels(t)
	meshPSK := psks(t, f, mesh)
	if len(mesh) != 6 {
		t.Fatalf("mesh of 4: %d tunnels", len(mesh))
	}
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	hs := f.tunnels(t)
	if len(hs) != 3 {
		t.Fatalf("hub-and-spoke of 1+3: %d tunnels, want 3", len(hs))
	}
	hsPSK := psks(t, f, hs)
	for id, tv := range hs {
		old, ok := mesh[id]
		if !ok {
			t.Fatalf("hub tunnel %s is new after the change; it should have been kept", id)
		}
		if old.Prefix != tv.Prefix || !bytes.Equal(meshPSK[id], hsPSK[id]) {
			t.Errorf("tunnel %s changed: %s -> %s, PSK kept=%v", id, old.Prefix, tv.Prefix, bytes.Equal(meshPSK[id], hsPSK[id]))
		}
	}
	// A new spoke takes the lowest free /30, i.e. one of the released ones.
	f.addSites(t, mkSite(4, intent.RoleSpoke))
	nt := f.tunnels(t)["site00.inet1~site04.inet1"]
	released := map[netip.Prefix]bool{}
	for id, tv := range mesh {
		if _, kept := hs[id]; !kept {
			released[tv.Prefix] = true
		}
	}
	if !released[nt.Prefix] {
		t.Errorf("new tunnel got %s, want one of the released /30s %v", nt.Prefix, released)
	}
}

func psks(t *testing.T, f *fixture, ts map[string]network.TunnelView) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for id, tv := range ts {
		k, err := f.net.PSK(tv.Tunnel)
		if err != nil || len(k) != 32 {
			t.Fatalf("tunnel %s PSK: %d bytes, %v", id, len(k), err)
		}
		out[id] = k
	}
	return out
}

// TestPSKsSealedInEtcd dumps every raw value in etcd and looks for each
// tunnel's PSK in raw, hex and base64 form.
func TestPSKsSealedInEtcd(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	for i := range 5 {
		f.addSites(t, mkSite(i, intent.RoleSpoke))
	}
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh}); err != nil {
		t.Fatal(err)
	}
	ts := f.tunnels(t)
	raw := f.dump(t)
	for id, k := range psks(t, f, ts) {
		for _, form := range [][]byte{k, []byte(hex.EncodeToString(k)), []byte(base64.StdEncoding.EncodeToString(k)), []byte(base64.StdEncoding.EncodeToString(k)[:40])} {
			if bytes.Contains([]byte(raw), form) {
				t.Fatalf("etcd holds tunnel %s's PSK in clear", id)
			}
		}
	}
	// The snapshot's PSKs differ per tunnel.
	seen := map[string]bool{}
	for _, k := range psks(t, f, ts) {
		if seen[string(k)] {
			t.Fatal("two tunnels share a PSK")
		}
		seen[string(k)] = true
	}
}

// TestBadInputLeavesStateUnchanged checks every refused change names the
// field, carries the right sentinel, and writes nothing.
func TestBadInputLeavesStateUnchanged(t *testing.T) {
	f := newFixture(t, "10.255.0.0/29") // two /30s only
	ctx := context.Background()
	f.addSites(t, mkSite(0, intent.RoleSpoke), mkSite(1, intent.RoleSpoke))
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh}); err != nil {
		t.Fatal(err)
	}
	overlap := mkSite(5, intent.RoleSpoke)
	overlap.LANPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")} // covers site00's 10.0.0.0/24
	sameAddr := mkSite(6, intent.RoleSpoke)
	sameAddr.Transports[0].Addr = netip.MustParseAddr("198.51.100.1")
	dupASN := mkSite(7, intent.RoleSpoke)
	s0, _ := f.net.GetSite(ctx, "site00")
	dupASN.ASN = s0.ASN
	inPool := mkSite(8, intent.RoleSpoke)
	inPool.LANPrefixes = []netip.Prefix{netip.MustParsePrefix("10.255.0.0/24")}
	badRole := mkSite(9, "router")
	noLAN := mkSite(10, intent.RoleSpoke)
	noLAN.LANPrefixes = nil
	badName := mkSite(11, intent.RoleSpoke)
	badName.Name = "Bad_Name"
	changedASN := mkSite(1, intent.RoleSpoke)
	changedASN.ASN = 65001

	cases := []struct {
		name  string
		do    func() error
		want  error
		field string
	}{
		{"duplicate name", func() error { _, err := f.net.CreateSite(ctx, mkSite(0, intent.RoleSpoke)); return err }, intent.ErrExists, "site.name"},
		{"overlapping LAN", func() error { _, err := f.net.CreateSite(ctx, overlap); return err }, intent.ErrConflict, "site.lan_prefixes[0]"},
		{"same public address", func() error { _, err := f.net.CreateSite(ctx, sameAddr); return err }, intent.ErrConflict, "site.transports[0].address"},
		{"duplicate ASN", func() error { _, err := f.net.CreateSite(ctx, dupASN); return err }, intent.ErrConflict, "site.asn"},
		{"LAN inside tunnel pool", func() error { _, err := f.net.CreateSite(ctx, inPool); return err }, intent.ErrConflict, "site.lan_prefixes[0]"},
		{"bad role", func() error { _, err := f.net.CreateSite(ctx, badRole); return err }, intent.ErrInvalid, "site.role"},
		{"no LAN", func() error { _, err := f.net.CreateSite(ctx, noLAN); return err }, intent.ErrInvalid, "site.lan_prefixes"},
		{"bad name", func() error { _, err := f.net.CreateSite(ctx, badName); return err }, intent.ErrInvalid, "site.name"},
		{"pool too small", func() error { _, err := f.net.CreateSite(ctx, mkSite(2, intent.RoleSpoke)); return err }, ipam.ErrExhausted, "tunnel pool"},
		{"update unknown site", func() error { _, err := f.net.UpdateSite(ctx, mkSite(30, intent.RoleSpoke)); return err }, intent.ErrNotFound, "site30"},
		{"change ASN", func() error { _, err := f.net.UpdateSite(ctx, changedASN); return err }, intent.ErrPrecondition, "site.asn"},
		{"delete unknown site", func() error { return f.net.DeleteSite(ctx, "nosuch") }, intent.ErrNotFound, "nosuch"},
		{"hub-and-spoke without hub", func() error {
			_, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke})
			return err
		}, intent.ErrPrecondition, "topology.mode"},
		{"bad mode", func() error { _, err := f.net.SetTopology(ctx, intent.Topology{Mode: "ring"}); return err }, intent.ErrInvalid, "topology.mode"},
		{"bad routing", func() error {
			_, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh, Routing: "ospf"})
			return err
		}, intent.ErrInvalid, "topology.routing"},
		{"bad MTU", func() error {
			_, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh, MTU: 100})
			return err
		}, intent.ErrInvalid, "topology.mtu"},
		{"bad path policy interval", func() error {
			_, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh, PathPolicy: intent.PathPolicy{ProbeInterval: 5 * time.Millisecond}})
			return err
		}, intent.ErrInvalid, "topology.path_policy.probe_interval_ms"},
		{"path policy class without SLA class", func() error {
			_, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh, PathPolicy: intent.PathPolicy{
				SLAs:    []intent.SLAClass{{Name: "realtime"}},
				Classes: []intent.TrafficClass{{Name: "voice", SLA: "realtime"}, {Name: "video", SLA: "gold"}}}})
			return err
		}, intent.ErrInvalid, "topology.path_policy.traffic_classes[1].sla_class"},
		{"bad proposal", func() error {
			_, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh, IPsec: intent.IPsec{IKEProposal: "AES SHA 14"}})
			return err
		}, intent.ErrInvalid, "topology.ipsec.ike_proposal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.dump(t)
			err := tc.do()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(tc.field)) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
			if after := f.dump(t); after != before {
				t.Errorf("a refused change modified the store")
			}
		})
	}
}

func TestDesiredStateOnlyOwnTunnels(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	f.addSites(t, mkSite(0, intent.RoleHub), mkSite(1, intent.RoleSpoke), mkSite(2, intent.RoleSpoke))
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	snap, _ := f.net.Snapshot(ctx)
	d, err := f.net.DesiredState(snap, "site01")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Tunnels) != 1 || d.Tunnels[0].RemoteSite != "site00" {
		t.Fatalf("spoke site01 desired tunnels: %+v, want one to the hub", d.Tunnels)
	}
	tun := d.Tunnels[0]
	if tun.LocalInner.Addr() != tun.RemoteInner.Next() || tun.LocalUnderlay != netip.MustParseAddr("198.51.100.2") || tun.RemoteUnderlay != netip.MustParseAddr("198.51.100.1") {
		t.Errorf("spoke end of the tunnel wrong: %+v", tun)
	}
	// The hub's LAN, then (transit through the hub) the other spoke's.
	if fmt.Sprint(tun.RemoteLANs) != "[10.0.0.0/24 10.2.0.0/24]" || len(tun.PSK) != 32 {
		t.Errorf("remote LANs %v (want the hub's and, through it, site02's), PSK %d bytes", tun.RemoteLANs, len(tun.PSK))
	}
	hub, _ := f.net.DesiredState(snap, "site00")
	for _, ht := range hub.Tunnels {
		if len(ht.RemoteLANs) != 1 {
			t.Errorf("hub tunnel %s carries %v; a hub reaches every site directly", ht.ID, ht.RemoteLANs)
		}
	}
	if len(hub.Tunnels) != 2 || !bytes.Equal(hub.Tunnels[0].PSK, tun.PSK) {
		t.Errorf("hub sees %d tunnels; the shared tunnel's PSK must match the spoke's", len(hub.Tunnels))
	}
}

// twoTransportSite is mkSite with a second WAN transport, inet2.
func twoTransportSite(i int, role intent.Role) intent.Site {
	s := mkSite(i, role)
	s.Transports = append(s.Transports, intent.Transport{Name: "inet2", Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)})})
	return s
}

// TestTransitOnEveryTunnelToFirstHub: with two transports a spoke has two
// parallel tunnels to each hub; the other spokes' LANs ride on both tunnels
// to the first hub (so the edge has a backup route over the other
// transport) and on none to the second.
func TestTransitOnEveryTunnelToFirstHub(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	f.addSites(t, twoTransportSite(0, intent.RoleHub), twoTransportSite(1, intent.RoleHub),
		twoTransportSite(2, intent.RoleSpoke), twoTransportSite(3, intent.RoleSpoke), mkSite(4, intent.RoleSpoke))
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	snap, _ := f.net.Snapshot(ctx)
	d, err := f.net.DesiredState(snap, "site02")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, tun := range d.Tunnels {
		got[tun.ID] = fmt.Sprint(tun.RemoteLANs)
	}
	want := map[string]string{
		// The hub's own LAN, then site03's and site04's through it.
		"site00.inet1~site02.inet1": "[10.0.0.0/24 10.3.0.0/24 10.4.0.0/24]",
		"site00.inet2~site02.inet2": "[10.0.0.0/24 10.3.0.0/24 10.4.0.0/24]",
		"site01.inet1~site02.inet1": "[10.1.0.0/24]",
		"site01.inet2~site02.inet2": "[10.1.0.0/24]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("site02's remote LANs per tunnel:\n got %v\nwant %v", got, want)
	}
	// site04 has only inet1: one tunnel per hub, transit on the first.
	d4, _ := f.net.DesiredState(snap, "site04")
	if len(d4.Tunnels) != 2 || fmt.Sprint(d4.Tunnels[0].RemoteLANs) != "[10.0.0.0/24 10.2.0.0/24 10.3.0.0/24]" ||
		fmt.Sprint(d4.Tunnels[1].RemoteLANs) != "[10.1.0.0/24]" {
		t.Errorf("site04's tunnels: %+v", d4.Tunnels)
	}
	// A hub reaches every site directly: no transit.
	hub, _ := f.net.DesiredState(snap, "site00")
	for _, ht := range hub.Tunnels {
		if len(ht.RemoteLANs) != 1 {
			t.Errorf("hub tunnel %s carries %v", ht.ID, ht.RemoteLANs)
		}
	}
	// The stored site and the peer's LAN list are not modified by the
	// appends (each tunnel has its own slice).
	if s0 := snap.Sites["site00"]; len(s0.LANPrefixes) != 1 {
		t.Errorf("site00's LANs became %v", s0.LANPrefixes)
	}
}

// TestPathPolicyStoredAndSent: a path policy set through the network API
// comes back with the defaults filled in and reaches every edge's desired
// state.
func TestPathPolicyStoredAndSent(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	f.addSites(t, mkSite(0, intent.RoleSpoke), mkSite(1, intent.RoleSpoke))
	policy := intent.PathPolicy{
		DownAfter: 3,
		SLAs:      []intent.SLAClass{{Name: "realtime", MaxRTT: 150 * time.Millisecond, Transports: []string{"inet1"}}},
		Classes:   []intent.TrafficClass{{Name: "voice", SLA: "realtime", Protocol: "udp", Ports: []intent.PortRange{{From: 5004, To: 5005}}}},
	}
	got, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh, PathPolicy: policy})
	if err != nil {
		t.Fatal(err)
	}
	want := policy.WithDefaults()
	if !reflect.DeepEqual(got.PathPolicy, want) || want.ProbeInterval != dataplane.DefaultProbeInterval || want.SLAs[0].Damping != dataplane.DefaultDamping {
		t.Errorf("SetTopology returned %+v, want %+v", got.PathPolicy, want)
	}
	snap, _ := f.net.Snapshot(ctx)
	d, err := f.net.DesiredState(snap, "site01")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Topology.PathPolicy, want) {
		t.Errorf("desired state carries %+v, want %+v", d.Topology.PathPolicy, want)
	}
	// The stored intent is what was set, not the defaults.
	kv, _, _ := f.st.Get(ctx, "intent/topology")
	if bytes.Contains(kv.Value, []byte("probe_interval")) || !bytes.Contains(kv.Value, []byte(`"ports":["5004-5005"]`)) {
		t.Errorf("stored topology: %s", kv.Value)
	}
}

// TestBuildWithholdsUnfinishedStates: a site written to the intent whose
// tunnels are not allocated yet (a change whose reconcile has not run)
// makes the states that depend on it not ready — the new spoke's and the
// hub's — while an unrelated spoke stays ready; the reconcile makes them
// ready again.
func TestBuildWithholdsUnfinishedStates(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	for i, role := range []intent.Role{intent.RoleHub, intent.RoleSpoke, intent.RoleSpoke} {
		if _, err := f.net.CreateSite(ctx, mkSite(i, role)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	ready := func(site string) bool {
		t.Helper()
		b, err := f.net.Build(site, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b.Ready
	}
	for _, s := range []string{"site00", "site01", "site02"} {
		if !ready(s) {
			t.Fatalf("%s not ready after the reconcile", s)
		}
	}
	// Behind the API's back: the record without its reconcile.
	raw, _ := json.Marshal(mkSite(3, intent.RoleSpoke))
	ok, rev, err := f.st.Txn(ctx, nil, []store.Op{store.Put("intent/sites/site03", raw)})
	if err != nil || !ok {
		t.Fatal(err)
	}
	waitView(t, f, rev)
	if ready("site03") || ready("site00") {
		t.Error("the new spoke or the hub is ready before the new spoke's tunnel exists")
	}
	if !ready("site01") {
		t.Error("an unrelated spoke is held back")
	}
	if err := f.net.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !ready("site03") || !ready("site00") {
		t.Error("not ready after the reconcile")
	}
}

// waitView waits until the network's view has applied revision rev.
func waitView(t *testing.T, f *fixture, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.net.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
}

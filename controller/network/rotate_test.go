package network_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// keysOf returns what site's edge is told for tunnel id: its key, the
// keys it accepts and the serial.
func keysOf(t *testing.T, n *network.Network, site, id string) (psk []byte, accept [][]byte, serial uint64) {
	t.Helper()
	s, err := n.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d, err := n.DesiredState(s, site)
	if err != nil {
		t.Fatal(err)
	}
	for _, et := range d.Tunnels {
		if et.ID == id {
			return et.PSK, et.AcceptPSKs, et.PSKSerial
		}
	}
	t.Fatalf("site %s has no tunnel %s", site, id)
	return nil, nil, 0
}

// reports is what the edges report: site -> tunnel -> loaded serial.
type reports struct {
	mu sync.Mutex
	m  map[string]map[string]uint64
}

func (r *reports) set(site, id string, serial uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]map[string]uint64{}
	}
	if r.m[site] == nil {
		r.m[site] = map[string]uint64{}
	}
	r.m[site][id] = serial
}

func (r *reports) loaded(_ context.Context, site string) (map[string]uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range r.m[site] {
		out[k] = v
	}
	return out, nil
}

func fullMesh(t *testing.T, f *fixture) {
	t.Helper()
	if _, err := f.net.SetTopology(context.Background(), intent.Topology{Mode: intent.ModeFullMesh}); err != nil {
		t.Fatal(err)
	}
}

func twoSites(t *testing.T, f *fixture) string {
	t.Helper()
	f.addSites(t, mkSite(1, intent.RoleSpoke), mkSite(2, intent.RoleSpoke))
	fullMesh(t, f)
	ts := f.tunnels(t)
	if len(ts) != 1 {
		t.Fatalf("want 1 tunnel, got %d", len(ts))
	}
	for id := range ts {
		return id
	}
	return ""
}

func TestRotationAdvancesOnlyWhenBothEndsReport(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	id := twoSites(t, f)
	a, b := "site01", "site02"
	old, acc, serial := keysOf(t, f.net, a, id)
	if serial != 1 || len(acc) != 0 {
		t.Fatalf("a new tunnel: serial %d, %d accepted keys; want serial 1, none", serial, len(acc))
	}

	started, err := f.net.RotateTunnelKeys(ctx, network.RotationSelector{IDs: []string{id}}, "test")
	if err != nil || len(started) != 1 || started[0] != id {
		t.Fatalf("RotateTunnelKeys = %v, %v", started, err)
	}
	// A second request while it runs starts nothing.
	if again, err := f.net.RotateTunnelKeys(ctx, network.RotationSelector{Site: a}, "test"); err != nil || len(again) != 0 {
		t.Fatalf("second RotateTunnelKeys = %v, %v; want nothing started", again, err)
	}
	var next []byte
	for _, site := range []string{a, b} {
		psk, acc, serial := keysOf(t, f.net, site, id)
		if !bytes.Equal(psk, old) || len(acc) != 1 || bytes.Equal(acc[0], old) || serial != 2 {
			t.Fatalf("staged at %s: want the old key, the new one accepted, serial 2; got same key %v, %d accepted, serial %d",
				site, bytes.Equal(psk, old), len(acc), serial)
		}
		if next != nil && !bytes.Equal(next, acc[0]) {
			t.Fatalf("the two ends accept different new keys")
		}
		next = acc[0]
	}
	tv, _ := f.net.GetTunnel(ctx, id)
	if tv.PSKRotation != network.RotationStaged {
		t.Fatalf("phase %q, want staged", tv.PSKRotation)
	}

	var r reports
	// Only one end has loaded the staged keys: no step.
	r.set(a, id, 2)
	r.set(b, id, 1)
	if _, err := f.net.AdvanceRotations(ctx, r.loaded); err != nil {
		t.Fatal(err)
	}
	if _, _, serial := keysOf(t, f.net, a, id); serial != 2 {
		t.Fatalf("advanced with one end behind: serial %d", serial)
	}
	r.set(b, id, 2)
	rots, err := f.net.AdvanceRotations(ctx, r.loaded)
	if err != nil || len(rots) != 1 || !rots[0].AdvancedNow || rots[0].FinishedNow {
		t.Fatalf("AdvanceRotations = %+v, %v; want one committed", rots, err)
	}
	for _, site := range []string{a, b} {
		psk, acc, serial := keysOf(t, f.net, site, id)
		if !bytes.Equal(psk, next) || len(acc) != 1 || !bytes.Equal(acc[0], old) || serial != 3 {
			t.Fatalf("committed at %s: want the new key, the old accepted, serial 3; got new %v, %d accepted, serial %d",
				site, bytes.Equal(psk, next), len(acc), serial)
		}
	}
	// Committed, one end still on 2: no step.
	r.set(a, id, 3)
	if _, err := f.net.AdvanceRotations(ctx, r.loaded); err != nil {
		t.Fatal(err)
	}
	if tv, _ := f.net.GetTunnel(ctx, id); tv.PSKRotation != network.RotationCommitted {
		t.Fatalf("phase %q, want committed", tv.PSKRotation)
	}
	r.set(b, id, 3)
	rots, err = f.net.AdvanceRotations(ctx, r.loaded)
	if err != nil || len(rots) != 1 || !rots[0].FinishedNow {
		t.Fatalf("AdvanceRotations = %+v, %v; want one finished", rots, err)
	}
	for _, site := range []string{a, b} {
		psk, acc, serial := keysOf(t, f.net, site, id)
		if !bytes.Equal(psk, next) || len(acc) != 0 || serial != 4 {
			t.Fatalf("done at %s: want the new key alone, serial 4; got new %v, %d accepted, serial %d", site, bytes.Equal(psk, next), len(acc), serial)
		}
	}
	tv, _ = f.net.GetTunnel(ctx, id)
	if tv.PSKRotation != "" || tv.PSKRotatedAt.IsZero() || tv.Serial() != 4 {
		t.Fatalf("after the rotation: phase %q, rotated at %v, serial %d", tv.PSKRotation, tv.PSKRotatedAt, tv.Serial())
	}
	if rots, err := f.net.AdvanceRotations(ctx, r.loaded); err != nil || len(rots) != 0 {
		t.Fatalf("nothing in progress: AdvanceRotations = %+v, %v", rots, err)
	}
	// Neither key is in etcd in the clear.
	dump := f.dump(t)
	for _, k := range [][]byte{old, next} {
		if bytes.Contains([]byte(dump), k) {
			t.Fatal("a key is stored in the clear")
		}
	}
}

func TestRotationBadSelectionChangesNothing(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	id := twoSites(t, f)
	before := f.dump(t)
	for _, c := range []struct {
		name string
		sel  network.RotationSelector
		want error
	}{
		{"none", network.RotationSelector{}, intent.ErrInvalid},
		{"two", network.RotationSelector{IDs: []string{id}, All: true}, intent.ErrInvalid},
		{"unknown id", network.RotationSelector{IDs: []string{id, "nosuch~tunnel"}}, intent.ErrNotFound},
		{"unknown site", network.RotationSelector{Site: string(bytes.Repeat([]byte("x"), 10000))}, intent.ErrNotFound},
	} {
		got, err := f.net.RotateTunnelKeys(ctx, c.sel, "test")
		if !errors.Is(err, c.want) || len(got) != 0 {
			t.Errorf("%s: got %v, %v; want %v", c.name, got, err, c.want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("%s: error quotes unbounded input (%d bytes)", c.name, len(err.Error()))
		}
	}
	if after := f.dump(t); after != before {
		t.Fatal("a refused rotation changed the store")
	}
}

// A second controller on the same etcd (a restart) sees the rotation in
// progress and finishes it.
func TestRotationResumesAfterRestart(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	id := twoSites(t, f)
	if _, err := f.net.RotateTunnelKeys(ctx, network.RotationSelector{All: true}, "test"); err != nil {
		t.Fatal(err)
	}
	_, acc, _ := keysOf(t, f.net, "site01", id)
	next := acc[0]

	n2 := newReplica(t, f)
	var r reports
	r.set("site01", id, 2)
	r.set("site02", id, 2)
	if _, err := n2.AdvanceRotations(ctx, r.loaded); err != nil {
		t.Fatal(err)
	}
	r.set("site01", id, 3)
	r.set("site02", id, 3)
	if _, err := n2.AdvanceRotations(ctx, r.loaded); err != nil {
		t.Fatal(err)
	}
	psk, acc, serial := keysOf(t, n2, "site02", id)
	if !bytes.Equal(psk, next) || len(acc) != 0 || serial != 4 {
		t.Fatalf("restarted controller: new key %v, %d accepted, serial %d", bytes.Equal(psk, next), len(acc), serial)
	}
}

func newReplica(t *testing.T, f *fixture) *network.Network {
	t.Helper()
	p, _ := ipam.ParsePool30("10.255.0.0/16")
	asns, _ := ipam.ParseASNRange("4200000000-4200099999")
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{42}, 32))
	n := network.New(network.Config{Store: f.srv.NewStore(), TunnelPool: p, ASNs: asns, Sealer: sealer})
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); n.Wait() })
	return n
}

func TestRotationOfDeletedTunnelIsDropped(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	id := twoSites(t, f)
	if _, err := f.net.RotateTunnelKeys(ctx, network.RotationSelector{IDs: []string{id}}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := f.net.DeleteSite(ctx, "site02"); err != nil {
		t.Fatal(err)
	}
	var r reports
	r.set("site01", id, 2)
	r.set("site02", id, 2)
	rots, err := f.net.AdvanceRotations(ctx, r.loaded)
	if err != nil || len(rots) != 0 {
		t.Fatalf("AdvanceRotations after the tunnel's deletion = %+v, %v", rots, err)
	}
	if len(f.tunnels(t)) != 0 {
		t.Fatal("the rotation brought the deleted tunnel back")
	}
}

// Replicas advancing the same rotation at once take each step exactly
// once: the tunnel record is written once per step, whatever the race.
func TestRotationReplicasDoNotDoubleAdvance(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	f.addSites(t, mkSite(1, intent.RoleSpoke), mkSite(2, intent.RoleSpoke), mkSite(3, intent.RoleSpoke), mkSite(4, intent.RoleSpoke))
	fullMesh(t, f)
	ids, err := f.net.RotateTunnelKeys(ctx, network.RotationSelector{All: true}, "test")
	if err != nil || len(ids) != 6 {
		t.Fatalf("RotateTunnelKeys = %v, %v", ids, err)
	}
	replicas := []*network.Network{f.net, newReplica(t, f), newReplica(t, f), newReplica(t, f)}
	cli := f.srv.NewClient()
	versions := func() map[string]int64 {
		res, err := cli.Get(ctx, store.Root+"tunnels/", clientv3WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, kv := range res.Kvs {
			out[string(kv.Key)] = kv.Version
		}
		return out
	}
	v0 := versions()
	// Every end reports serial 2 (staged loaded): exactly one step each.
	var r reports
	for _, id := range ids {
		tv, _ := f.net.GetTunnel(ctx, id)
		r.set(tv.A.Site, id, 2)
		r.set(tv.B.Site, id, 2)
	}
	var wg sync.WaitGroup
	for _, n := range replicas {
		for range 3 {
			wg.Go(func() {
				if _, err := n.AdvanceRotations(ctx, r.loaded); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	v1 := versions()
	for k, v := range v1 {
		if v != v0[k]+1 {
			t.Errorf("%s written %d times for one step, want once", k, v-v0[k])
		}
	}
	for _, id := range ids {
		if tv, _ := f.net.GetTunnel(ctx, id); tv.PSKRotation != network.RotationCommitted || tv.Serial() != 3 {
			t.Errorf("%s: phase %q serial %d, want committed 3", id, tv.PSKRotation, tv.Serial())
		}
	}
}

func TestRotationScheduleBoundsRunning(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	f.addSites(t, mkSite(1, intent.RoleSpoke), mkSite(2, intent.RoleSpoke), mkSite(3, intent.RoleSpoke), mkSite(4, intent.RoleSpoke))
	fullMesh(t, f)
	if got := f.net.DueForRotation(time.Hour, 4); len(got) != 0 {
		t.Fatalf("fresh keys due: %v", got)
	}
	network.SetNow(f.net, func() time.Time { return time.Now().Add(2 * time.Hour) })
	started, err := f.net.StartDueRotations(ctx, time.Hour, 4)
	if err != nil || len(started) != 4 {
		t.Fatalf("StartDueRotations = %v, %v; want 4 of 6", started, err)
	}
	// 4 running, limit 4: nothing more starts until they finish.
	if more, err := f.net.StartDueRotations(ctx, time.Hour, 4); err != nil || len(more) != 0 {
		t.Fatalf("over the limit: started %v, %v", more, err)
	}
	if got := f.net.DueForRotation(0, 4); len(got) != 0 {
		t.Fatalf("interval 0 (off) lists %v", got)
	}
}

func clientv3WithPrefix() clientv3.OpOption { return clientv3.WithPrefix() }

// TestRotationSkipsUnmanagedEnds: a tunnel to a third-party router never
// rotates (its end cannot report a loaded serial, so the rotation would
// stay staged forever): neither on demand nor on the schedule, while the
// managed tunnels do.
func TestRotationSkipsUnmanagedEnds(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	tp := mkSite(3, intent.RoleSpoke)
	tp.Unmanaged = true
	f.addSites(t, mkSite(1, intent.RoleSpoke), mkSite(2, intent.RoleSpoke), tp)
	fullMesh(t, f)
	ts := f.tunnels(t)
	if len(ts) != 3 {
		t.Fatalf("want 3 tunnels, got %d", len(ts))
	}
	managed := 0
	for _, tn := range ts {
		if tn.A.Site != tp.Name && tn.B.Site != tp.Name {
			managed++
		}
	}
	started, err := f.net.RotateTunnelKeys(ctx, network.RotationSelector{All: true}, "test")
	if err != nil || len(started) != managed {
		t.Fatalf("RotateTunnelKeys(all) = %v, %v; want only the %d managed tunnel(s)", started, err, managed)
	}
	for _, id := range started {
		if tn := f.tunnels(t)[id]; tn.A.Site == tp.Name || tn.B.Site == tp.Name {
			t.Errorf("tunnel %s to the unmanaged site rotates", id)
		}
	}
	network.SetNow(f.net, func() time.Time { return time.Now().Add(2 * time.Hour) })
	for _, id := range f.net.DueForRotation(time.Hour, 10) {
		if tn := f.tunnels(t)[id]; tn.A.Site == tp.Name || tn.B.Site == tp.Name {
			t.Errorf("tunnel %s to the unmanaged site is due for rotation", id)
		}
	}
}

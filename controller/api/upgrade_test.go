package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/proto"
)

// upgradeGolden is what the controller of commit 61462e8 (before tunnels
// had an initiator) left in etcd for a hub-and-spoke network whose hubs
// sort last (so every spoke tunnel's id names the hub first, the order
// that is no longer derived), and the desired state it sent each edge
// (proto, deterministic, version zeroed). It was produced by running that
// commit's own code (network.CreateSite, SetTopology, Build, desiredToPB)
// with the test sealer key: testdata/upgrade-61462e8.gen.go.txt, placed
// in controller/api of a checkout of 61462e8 and run with
// GOLDEN_OUT=<file> go test -run TestGenUpgradeGolden ./controller/api.
type upgradeGolden struct {
	Commit string `json:"commit"`
	Store  []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"store"`
	Desired map[string][]byte `json:"desired"`
}

// TestUpgradeKeepsOldTunnelsAndStates: the records of the older version
// survive this version's start (PinPreviousDefaults and Reconcile, as the
// daemon runs them) byte for byte: no tunnel is re-created, renamed or
// re-keyed, nothing is written. Each edge's desired state is byte-identical
// to the older version's except the new role field, and the role names
// the end the older edges inferred (the lower /30 address initiates).
// Then promoting a spoke to hub leaves every old record as it was.
func TestUpgradeKeepsOldTunnelsAndStates(t *testing.T) {
	raw, err := os.ReadFile("testdata/upgrade-61462e8.json")
	if err != nil {
		t.Fatal(err)
	}
	var g upgradeGolden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := etcdtest.Start(t)
	st := srv.NewStore()
	var ops []store.Op
	want := map[string]string{}
	for _, kv := range g.Store {
		ops = append(ops, store.Put(kv.Key, []byte(kv.Value)))
		want[kv.Key] = kv.Value
	}
	if _, _, err := st.Txn(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	dump := func() map[string]string {
		kvs, _, err := st.List(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, kv := range kvs {
			out[kv.Key] = string(kv.Value)
		}
		return out
	}
	_, loadedRev, _ := st.List(ctx, "", 0)

	// This version's start on the old store.
	pool, _ := ipam.ParsePool30("10.255.0.0/16")
	asns, _ := ipam.ParseASNRange("4200000000-4200099999")
	sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{42}, 32))
	n := network.New(network.Config{Store: st, TunnelPool: pool, ASNs: asns, Sealer: sealer})
	nctx, ncancel := context.WithCancel(ctx)
	t.Cleanup(func() { ncancel(); n.Wait() })
	if err := n.Start(nctx); err != nil {
		t.Fatal(err)
	}
	if pinned, err := n.PinPreviousDefaults(ctx); err != nil || pinned {
		t.Fatalf("PinPreviousDefaults = %v, %v; want nothing to do", pinned, err)
	}
	if err := n.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	got := dump()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("start changed %s:\n was %s\n now %s", k, v, got[k])
		}
	}
	if len(got) != len(want) {
		t.Errorf("start left %d keys, the old store had %d", len(got), len(want))
	}
	if _, rev, _ := st.List(ctx, "", 0); rev != loadedRev {
		t.Errorf("start wrote: store revision %d -> %d", loadedRev, rev)
	}

	for site, old := range g.Desired {
		b, err := n.Build(site, nil)
		if err != nil || !b.Ready {
			t.Fatalf("Build(%s) = ready %v, %v", site, b.Ready, err)
		}
		d := desiredToPB(b.State)
		if len(d.Tunnels) == 0 {
			t.Fatalf("%s: no tunnels", site)
		}
		for _, et := range d.Tunnels {
			li, ri := netip.MustParsePrefix(et.LocalInner).Addr(), netip.MustParsePrefix(et.RemoteInner+"/32").Addr()
			wantRole := pb.TunnelRole_TUNNEL_ROLE_RESPONDER
			if li.Less(ri) {
				wantRole = pb.TunnelRole_TUNNEL_ROLE_INITIATOR
			}
			if et.Role != wantRole {
				t.Errorf("%s tunnel %s: role %v, want %v (what the older edge inferred from %s vs %s)", site, et.Id, et.Role, wantRole, li, ri)
			}
			et.Role = pb.TunnelRole_TUNNEL_ROLE_UNSPECIFIED
		}
		d.Version = 0
		now, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(now, old) {
			var was pb.DesiredState
			_ = proto.Unmarshal(old, &was)
			t.Errorf("%s: desired state differs from the older version's beyond the role:\n was %v\n now %v", site, &was, d)
		}
	}

	// A role change on the upgraded network: br2 becomes a hub. Its
	// tunnels to hq and zhub (ids naming the hub first) stay as stored.
	br2, err := n.GetSite(ctx, "br2")
	if err != nil {
		t.Fatal(err)
	}
	br2.Role = intent.RoleHub
	if _, err := n.UpdateSite(ctx, br2); err != nil {
		t.Fatal(err)
	}
	got = dump()
	for k, v := range want {
		if strings.HasPrefix(k, "tunnels/") && got[k] != v {
			t.Errorf("promoting br2 changed the old record %s:\n was %s\n now %s", k, v, got[k])
		}
	}
	added := 0
	for k := range got {
		if _, old := want[k]; !old && strings.HasPrefix(k, "tunnels/") {
			added++
			if k != "tunnels/br1.inet1~br2.inet1" {
				t.Errorf("promoting br2 created %s; only br1.inet1~br2.inet1 is new", k)
			}
		}
	}
	if added != 1 {
		t.Errorf("promoting br2 created %d tunnels, want 1 (br1.inet1~br2.inet1)", added)
	}
}

package network_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// facts is everything about a stored tunnel that a role change must not
// touch: ends, /30, key serial, the key itself, the initiator.
func (f *fixture) facts(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for id, tv := range f.tunnels(t) {
		psk, err := f.net.PSK(tv.Tunnel)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = fmt.Sprintf("a=%v b=%v prefix=%s serial=%d initiator=%s psk=%s", tv.A, tv.B, tv.Prefix, tv.Serial(), tv.InitiatorSide(), hex.EncodeToString(psk))
	}
	return out
}

// wantKeys is the set of tunnels (by pair of ends) the intent derives now.
func (f *fixture) wantKeys(t *testing.T) map[string]topology.Link {
	t.Helper()
	ctx := context.Background()
	sites, _ := f.net.ListSites(ctx)
	top, err := f.net.GetTopology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]topology.Link{}
	for _, l := range topology.Derive(sites, top) {
		out[l.ID] = l
	}
	return out
}

// checkRoleChange runs change and checks its effect on the tunnels: every
// tunnel that existed and is still derived keeps all its facts; the ones
// no longer derived are gone; the new ones are exactly the derived pairs
// that had no tunnel, named in canonical order, with the initiator
// topology.Initiator chooses now. It returns the ids added and removed.
func (f *fixture) checkRoleChange(t *testing.T, change func()) (added, removed []string) {
	t.Helper()
	before := f.facts(t)
	beforeTV := f.tunnels(t)
	change()
	after := f.facts(t)
	afterTV := f.tunnels(t)
	want := f.wantKeys(t)
	if len(after) != len(want) {
		t.Errorf("%d tunnels after the change, the intent derives %d", len(after), len(want))
	}
	for id, was := range before {
		key := beforeTV[id].Key()
		now, kept := after[id]
		_, wanted := want[key]
		switch {
		case wanted && !kept:
			t.Errorf("tunnel %s is still derived but was removed or renamed", id)
		case wanted && now != was:
			t.Errorf("tunnel %s changed:\n before %s\n after  %s", id, was, now)
		case !wanted && kept:
			t.Errorf("tunnel %s is no longer derived but stays", id)
		case !wanted:
			removed = append(removed, id)
		}
	}
	sites, _ := f.net.ListSites(context.Background())
	byName := map[string]intent.Site{}
	for _, s := range sites {
		byName[s.Name] = s
	}
	for id, tv := range afterTV {
		if _, old := before[id]; old {
			continue
		}
		added = append(added, id)
		l, ok := want[tv.Key()]
		if !ok || id != l.ID || tv.A != l.A || tv.B != l.B {
			t.Errorf("new tunnel %s (%v, %v) is not a derived link in canonical order", id, tv.A, tv.B)
		}
		sa, sb := byName[tv.A.Site], byName[tv.B.Site]
		ta, _ := sa.Transport(tv.A.Transport)
		tb, _ := sb.Transport(tv.B.Transport)
		if w := topology.Initiator(sa, sb, ta, tb); tv.InitiatorSide() != w {
			t.Errorf("new tunnel %s: initiator %s, want %s", id, tv.InitiatorSide(), w)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

func (f *fixture) setRole(t *testing.T, name string, role intent.Role) {
	t.Helper()
	s, err := f.net.GetSite(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	s.Role = role
	if _, err := f.net.UpdateSite(context.Background(), s); err != nil {
		t.Fatalf("UpdateSite(%s, %s): %v", name, role, err)
	}
}

// applyRoles declares the whole network again with the given hubs.
func (f *fixture) applyRoles(t *testing.T, hubs ...string) {
	t.Helper()
	ctx := context.Background()
	sites, _ := f.net.ListSites(ctx)
	for i := range sites {
		sites[i].Role = intent.RoleSpoke
		if slices.Contains(hubs, sites[i].Name) {
			sites[i].Role = intent.RoleHub
		}
	}
	top, _ := f.net.GetTopology(ctx)
	if _, err := f.net.ApplyNetwork(ctx, sites, top, false, false); err != nil {
		t.Fatalf("ApplyNetwork with hubs %v: %v", hubs, err)
	}
}

func addrOf(net byte, i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, net, byte(i + 1)}) }

// TestRoleChangeKeepsTunnelsHubAndSpoke: in a hub-and-spoke network whose
// hub sorts last (so older versions named it first in every id), promoting
// a spoke, demoting the hub and re-declaring the roles through
// ApplyNetwork each add and remove exactly the tunnels the new topology
// adds and removes; every tunnel that stays keeps its id, ends, /30, key
// serial, key bytes and initiator, even where topology.Initiator would now
// choose the other end.
func TestRoleChangeKeepsTunnelsHubAndSpoke(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	for i := range 5 {
		f.addSites(t, mkSite(i, intent.RoleSpoke))
	}
	f.addSites(t, mkSite(5, intent.RoleHub))
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.tunnels(t)); n != 5 {
		t.Fatalf("%d tunnels, want 5", n)
	}
	for id, tv := range f.tunnels(t) {
		if tv.InitiatorSide() != topology.SideB || tv.B.Site != "site05" {
			t.Errorf("tunnel %s: initiator %s, want the hub site05 as b", id, tv.InitiatorSide())
		}
	}

	added, removed := f.checkRoleChange(t, func() { f.setRole(t, "site02", intent.RoleHub) })
	if want := "site00.inet1~site02.inet1 site01.inet1~site02.inet1 site02.inet1~site03.inet1 site02.inet1~site04.inet1"; strings.Join(added, " ") != want || len(removed) != 0 {
		t.Errorf("promoting site02: added %v removed %v, want added %s", added, removed, want)
	}
	// site02~site05 was made when site05 alone was a hub: b (site05)
	// initiates, and keeps initiating now that both are hubs.
	if tv := f.tunnels(t)["site02.inet1~site05.inet1"]; tv.InitiatorSide() != topology.SideB {
		t.Errorf("site02~site05: initiator %s after the promotion, want b as created", tv.InitiatorSide())
	}

	added, removed = f.checkRoleChange(t, func() { f.setRole(t, "site05", intent.RoleSpoke) })
	if want := "site00.inet1~site05.inet1 site01.inet1~site05.inet1 site03.inet1~site05.inet1 site04.inet1~site05.inet1"; len(added) != 0 || strings.Join(removed, " ") != want {
		t.Errorf("demoting site05: added %v removed %v, want removed %s", added, removed, want)
	}

	// Through ApplyNetwork: site00 becomes the only hub.
	added, removed = f.checkRoleChange(t, func() { f.applyRoles(t, "site00") })
	if want := "site00.inet1~site01.inet1 site00.inet1~site03.inet1 site00.inet1~site04.inet1 site00.inet1~site05.inet1"; strings.Join(added, " ") != want {
		t.Errorf("site00 as the hub: added %v, want %s", added, want)
	}
	if want := "site01.inet1~site02.inet1 site02.inet1~site03.inet1 site02.inet1~site04.inet1 site02.inet1~site05.inet1"; strings.Join(removed, " ") != want {
		t.Errorf("site00 as the hub: removed %v, want %s", removed, want)
	}
	// Reconciling again changes nothing.
	before, _ := f.net.Snapshot(ctx)
	if err := f.net.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if after, _ := f.net.Snapshot(ctx); after.Revision != before.Revision {
		t.Errorf("Reconcile after the role changes wrote: revision %d -> %d", before.Revision, after.Revision)
	}
}

// TestRoleChangeKeepsTunnelsFullMesh: in a full mesh (two transports per
// site, all pairs), no role change adds, removes or rewrites any tunnel:
// the store's tunnel records are byte-identical before and after a
// promotion, a demotion and an ApplyNetwork that moves the hub.
func TestRoleChangeKeepsTunnelsFullMesh(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	ctx := context.Background()
	for i := range 5 {
		role := intent.RoleSpoke
		if i == 4 {
			role = intent.RoleHub
		}
		s := mkSite(i, role)
		s.Transports = append(s.Transports, intent.Transport{Name: "inet2", Addr: addrOf(101, i)})
		f.addSites(t, s)
	}
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeFullMesh, Match: intent.MatchAllPairs}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.tunnels(t)); n != 10*4 {
		t.Fatalf("%d tunnels, want 40", n)
	}
	records := func() string {
		var b strings.Builder
		for _, line := range strings.Split(f.dump(t), "\n") {
			if strings.HasPrefix(line, "tunnels/") || strings.HasPrefix(line, "ipam/tunnel/") {
				b.WriteString(line + "\n")
			}
		}
		return b.String()
	}
	orig := records()
	for _, step := range []struct {
		name   string
		change func()
	}{
		{"promote site01", func() { f.setRole(t, "site01", intent.RoleHub) }},
		{"demote site04", func() { f.setRole(t, "site04", intent.RoleSpoke) }},
		{"apply with site03 the only hub", func() { f.applyRoles(t, "site03") }},
	} {
		added, removed := f.checkRoleChange(t, step.change)
		if len(added)+len(removed) != 0 {
			t.Errorf("%s: added %v removed %v, want nothing", step.name, added, removed)
		}
		if now := records(); now != orig {
			t.Errorf("%s: the stored tunnel records changed", step.name)
		}
	}
	// Tunnels to the old hub site04 still have site04 as their initiator.
	for id, tv := range f.tunnels(t) {
		if tv.B.Site == "site04" && tv.InitiatorSide() != topology.SideB {
			t.Errorf("tunnel %s: initiator %s, want site04 (b) as created", id, tv.InitiatorSide())
		}
	}
}

// TestDuplicatePairConverges: two records for one pair of ends (what
// replicas of two versions racing during an upgrade could write: one id
// naming the hub first, one in canonical order) converge to the one with
// the smaller id on the next reconcile, whole-network or per site, and
// the winner is untouched.
func TestDuplicatePairConverges(t *testing.T) {
	for _, whole := range []bool{true, false} {
		t.Run(fmt.Sprintf("whole=%v", whole), func(t *testing.T) {
			f := newFixture(t, "10.255.0.0/16")
			ctx := context.Background()
			f.addSites(t, mkSite(0, intent.RoleSpoke), mkSite(1, intent.RoleHub))
			if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
				t.Fatal(err)
			}
			const keep, dup = "site00.inet1~site01.inet1", "site01.inet1~site00.inet1"
			winner := f.facts(t)[keep]
			if winner == "" {
				t.Fatalf("no tunnel %s", keep)
			}
			sealer, _ := secrets.NewSealer(bytes.Repeat([]byte{42}, 32))
			rec := network.Tunnel{ID: dup, A: topology.End{Site: "site01", Transport: "inet1"}, B: topology.End{Site: "site00", Transport: "inet1"},
				Index: 7, Prefix: netip.MustParsePrefix("10.255.0.28/30"), SealedPSK: sealer.Seal(bytes.Repeat([]byte{1}, 32), "tunnels/"+dup)}
			raw, _ := json.Marshal(rec)
			_, rev, err := f.st.Txn(ctx, nil, []store.Op{store.Put("tunnels/"+dup, raw), store.Put("ipam/tunnel/7", []byte(dup))})
			if err != nil {
				t.Fatal(err)
			}
			waitView(t, f, rev)
			if n := len(f.tunnels(t)); n != 2 {
				t.Fatalf("%d tunnels after writing the duplicate, want 2", n)
			}
			if whole {
				err = f.net.Reconcile(ctx)
			} else {
				err = f.net.ReconcileSites(ctx, "site00")
			}
			if err != nil {
				t.Fatal(err)
			}
			got := f.facts(t)
			if len(got) != 1 || got[keep] != winner {
				t.Errorf("after the reconcile: %v, want only %s as it was (%s)", got, keep, winner)
			}
			if strings.Contains(f.dump(t), "ipam/tunnel/7=") {
				t.Errorf("the duplicate's /30 was not released")
			}
		})
	}
}

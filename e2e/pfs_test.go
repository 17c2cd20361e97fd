//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/e2e/lab"
	"github.com/meshwan/meshwan/e2e/stream"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/strongswan/govici/vici"
)

// saView is one IKE_SA of a connection as charon's list-sas shows it,
// with its CHILD_SAs (unique id -> state and DH group).
type saView struct {
	id, state, dh string
	children      map[string]childView
}

type childView struct{ state, dh string }

func (v saView) String() string {
	var cs []string
	for id, c := range v.children {
		cs = append(cs, fmt.Sprintf("child %s %s dh=%q", id, c.state, c.dh))
	}
	slices.Sort(cs)
	return fmt.Sprintf("ike %s %s dh=%q [%s]", v.id, v.state, v.dh, strings.Join(cs, ", "))
}

// vici runs one command at a site's charon.
func (e *env) vici(site string, f func(ctx context.Context, s ipsec.Session) error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	s, err := ipsec.Dial(ctx, e.lab.Sites[site].ViciSocket())
	if err != nil {
		e.t.Fatalf("vici of %s: %v", site, err)
	}
	defer s.Close()
	if err := f(ctx, s); err != nil {
		e.t.Fatalf("vici at %s: %v", site, err)
	}
}

// sas lists a site's IKE_SAs of conn.
func (e *env) sas(site, conn string) []saView {
	e.t.Helper()
	var out []saView
	e.vici(site, func(ctx context.Context, s ipsec.Session) error {
		msgs, err := s.Stream(ctx, "list-sas", "list-sa", nil)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			sec, ok := m.Get(conn).(*vici.Message)
			if !ok {
				continue
			}
			v := saView{id: viciStr(sec, "uniqueid"), state: viciStr(sec, "state"), dh: viciStr(sec, "dh-group"), children: map[string]childView{}}
			if cs, ok := sec.Get("child-sas").(*vici.Message); ok {
				for _, k := range cs.Keys() {
					if c, ok := cs.Get(k).(*vici.Message); ok {
						v.children[viciStr(c, "uniqueid")] = childView{state: viciStr(c, "state"), dh: viciStr(c, "dh-group")}
					}
				}
			}
			out = append(out, v)
		}
		return nil
	})
	return out
}

func viciStr(m *vici.Message, k string) string {
	s, _ := m.Get(k).(string)
	return s
}

// established returns the one ESTABLISHED IKE_SA with exactly one
// INSTALLED CHILD_SA, and its child's id; ok is false otherwise.
func established(list []saView) (saView, string, bool) {
	var found []saView
	for _, v := range list {
		if v.state == "ESTABLISHED" {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		return saView{}, "", false
	}
	var installed []string
	for id, c := range found[0].children {
		if c.state == "INSTALLED" {
			installed = append(installed, id)
		}
	}
	if len(installed) != 1 {
		return found[0], "", false
	}
	return found[0], installed[0], true
}

func describe(list []saView) string {
	var s []string
	for _, v := range list {
		s = append(s, v.String())
	}
	return strings.Join(s, "; ")
}

// TestPFSRekeysUnderTraffic: two managed sites and a 500 pps stream across
// their tunnel. The topology starts with an explicit pre-PFS ESP proposal
// (aes256gcm16, as stored by older versions) and is switched to the
// default (aes256gcm16-modp2048): the edges re-load the connection (the
// outcome for the running SAs is logged). Then, on the initiating end,
// a CHILD_SA rekey (VICI rekey, the same exchange an ESP lifetime
// triggers) negotiates PFS with DH group 14 (list-sas shows dh-group
// MODP_2048 at both ends), and an IKE_SA rekey replaces the IKE_SA while
// the CHILD_SA stays; the stream loses 0 packets across both rekeys.
func TestPFSRekeysUnderTraffic(t *testing.T) {
	e := setup(t, "br1", "hq")
	e.declare()
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, Ipsec: &pb.IPsecPolicy{EspProposal: "aes256gcm16"}})
	e.enrollAndStart()
	e.waitAllPairs()
	ts, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{})
	if err != nil || len(ts.Tunnels) != 1 {
		t.Fatalf("tunnels: %v %v", ts, err)
	}
	tun := ts.Tunnels[0]
	conn := ipsec.ConnName(tun.Id)
	ini, resp := tun.A.Site, tun.B.Site // the A end is the active one

	st := e.startStream(lab.StreamSpec{From: "br1", To: "hq", Rate: 500})
	defer st.Stop()
	e.waitSustained(st, "the stream flows", time.Now(), func(stream.Record) bool { return true }, 2*time.Second, converge)

	// The upgrade: the stored proposal is dropped, the default applies.
	var before saView
	e.waitFor("an established IKE_SA without PFS", converge, func() (bool, string) {
		l := e.sas(ini, conn)
		v, _, ok := established(l)
		before = v
		return ok, describe(l)
	})
	upStart := time.Now()
	e.setTopologyApplied(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH})
	var cur saView
	var child string
	e.waitFor("an established IKE_SA after the proposal change", converge, func() (bool, string) {
		l := e.sas(ini, conn)
		var ok bool
		cur, child, ok = established(l)
		return ok, describe(l)
	})
	e.waitSustained(st, "the stream flows after the proposal change", time.Now(), func(stream.Record) bool { return true }, 2*time.Second, converge)
	recs, err := st.Records()
	if err != nil {
		t.Fatal(err)
	}
	upSum := stream.Summarize(stream.SentBetween(recs, upStart.Add(-time.Second), time.Now().Add(-2*time.Second)))
	t.Logf("proposal change aes256gcm16 -> default: IKE_SA %s -> %s (kept: %v); stream %v", before.id, cur.id, before.id == cur.id, upSum)

	// CHILD_SA rekey with PFS.
	rekeyStart := time.Now()
	oldChild := child
	e.vici(ini, func(ctx context.Context, s ipsec.Session) error {
		m := vici.NewMessage()
		id, _ := strconv.ParseUint(oldChild, 10, 32)
		if err := m.Set("child-id", strconv.FormatUint(id, 10)); err != nil {
			return err
		}
		_, err := s.Call(ctx, "rekey", m)
		return err
	})
	took := e.waitFor("the CHILD_SA is rekeyed with DH group 14 at both ends", converge, func() (bool, string) {
		var desc []string
		done := true
		for _, site := range []string{ini, resp} {
			l := e.sas(site, conn)
			v, c, ok := established(l)
			desc = append(desc, site+": "+describe(l))
			if !ok || v.children[c].dh != "MODP_2048" || (site == ini && c == oldChild) {
				done = false
			}
			if site == ini {
				cur, child = v, c
			}
		}
		return done, strings.Join(desc, " | ")
	})
	t.Logf("CHILD_SA rekey with PFS took %v: %s", took.Round(time.Millisecond), cur)

	// IKE_SA rekey: a new IKE_SA, the CHILD_SA moves over unchanged.
	oldIKE, keptChild := cur.id, child
	e.vici(ini, func(ctx context.Context, s ipsec.Session) error {
		m := vici.NewMessage()
		if err := m.Set("ike-id", oldIKE); err != nil {
			return err
		}
		_, err := s.Call(ctx, "rekey", m)
		return err
	})
	took = e.waitFor("the IKE_SA is rekeyed", converge, func() (bool, string) {
		l := e.sas(ini, conn)
		v, c, ok := established(l)
		cur = v
		return ok && v.id != oldIKE && len(l) == 1 && c == keptChild && v.dh == "MODP_2048", describe(l)
	})
	t.Logf("IKE_SA rekey took %v: %s", took.Round(time.Millisecond), cur)

	time.Sleep(2 * time.Second) // packets in flight at the end of the window
	doneAt := time.Now()
	recs, err = st.Stop()
	if err != nil {
		t.Fatal(err)
	}
	sum := stream.Summarize(stream.SentBetween(recs, rekeyStart.Add(-time.Second), doneAt.Add(-time.Second)))
	t.Logf("stream across the CHILD_SA and IKE_SA rekeys (%v): %v", doneAt.Sub(rekeyStart).Round(time.Millisecond), sum)
	if sum.Received < 500 {
		t.Fatalf("the stream window holds only %d packets", sum.Received)
	}
	if sum.Lost != 0 {
		t.Errorf("the rekeys lost %d packets: %v", sum.Lost, sum)
	}
	for _, s := range []string{ini, resp} {
		if log := readFile(e.lab.Sites[s].RunDir + "/charon.log"); strings.Contains(log, "NO_PROPOSAL_CHOSEN") {
			t.Errorf("charon of %s logged NO_PROPOSAL_CHOSEN:\n%s", s, tail(log, 40))
		}
	}
}

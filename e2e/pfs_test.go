//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
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

// rekeyChildren asks site's charon to rekey each CHILD_SA in ids (by
// unique id: a rekey by name reaches only one of two duplicate IKE_SAs).
func (e *env) rekeyChildren(site string, ids map[string]string) {
	e.t.Helper()
	e.vici(site, func(ctx context.Context, s ipsec.Session) error {
		for id := range ids {
			m := vici.NewMessage()
			if err := m.Set("child-id", id); err != nil {
				return err
			}
			if _, err := s.Call(ctx, "rekey", m); err != nil {
				return err
			}
		}
		return nil
	})
}

// rekeyIKE asks site's charon to rekey conn's IKE_SA and waits until
// none of old is up any more while every CHILD_SA in children still is
// (a rekeyed IKE_SA takes its CHILD_SAs along); it returns how long that
// took.
func (e *env) rekeyIKE(site, conn string, old []string, children map[string]string) time.Duration {
	e.t.Helper()
	e.vici(site, func(ctx context.Context, s ipsec.Session) error {
		m := vici.NewMessage()
		if err := m.Set("ike", conn); err != nil {
			return err
		}
		_, err := s.Call(ctx, "rekey", m)
		return err
	})
	return e.waitFor(site+"'s IKE_SA is rekeyed, its CHILD_SAs kept", converge, func() (bool, string) {
		l := e.sas(site, conn)
		ikes, ch := up(l)
		done := len(ikes) > 0
		for _, id := range ikes {
			if slices.Contains(old, id) {
				done = false
			}
		}
		for id := range children {
			if _, ok := ch[id]; !ok {
				done = false
			}
		}
		return done, describe(l)
	})
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

// up returns the ESTABLISHED IKE_SA ids and the INSTALLED CHILD_SA ids
// (with their DH groups) of a list. A changed connection can leave two
// IKE_SAs (see TestPFSRekeysUnderTraffic), so these are sets.
func up(list []saView) (ikes []string, children map[string]string) {
	children = map[string]string{}
	for _, v := range list {
		if v.state != "ESTABLISHED" {
			continue
		}
		ikes = append(ikes, v.id)
		for id, c := range v.children {
			if c.state == "INSTALLED" {
				children[id] = c.dh
			}
		}
	}
	slices.Sort(ikes)
	return ikes, children
}

func describe(list []saView) string {
	var s []string
	for _, v := range list {
		s = append(s, v.String())
	}
	return strings.Join(s, "; ")
}

// TestPFSRekeysUnderTraffic: two managed sites with the default ESP
// proposal (aes256gcm16-modp2048: PFS, DH group 14) and a 500 pps stream
// across their tunnel. On the initiating end a CHILD_SA rekey (VICI rekey,
// the same exchange an ESP lifetime triggers) of every CHILD_SA negotiates
// PFS with DH group 14 (list-sas shows dh-group MODP_2048 for every
// installed CHILD_SA at both ends), and an IKE_SA rekey replaces the
// IKE_SAs while the CHILD_SAs stay; the stream loses 0 packets across both
// rekeys.
//
// With MESHWAN_E2E_PFS=1 the topology starts with the pre-PFS proposal
// (aes256gcm16, as stored by older versions) and is switched to the
// default first: the edges re-load the connection and charon renegotiates
// at the initiating end (the loss is logged, not asserted: docs/ipsec.md).
// That variant is opt-in: after the proposal change the two ends sometimes
// hold different IKE_SAs (the passive end's trap starts its own) and a
// CHILD_SA rekey then stayed undone for 3 min in 2 of 3 runs.
func TestPFSRekeysUnderTraffic(t *testing.T) {
	switchProposal := os.Getenv("MESHWAN_E2E_PFS") != ""
	e := setup(t, "br1", "hq")
	e.declare()
	initial := &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH}
	if switchProposal {
		initial.Ipsec = &pb.IPsecPolicy{EspProposal: "aes256gcm16"}
	}
	e.setTopology(initial)
	e.enrollAndStart()
	e.waitAllPairs()
	ts, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{})
	if err != nil || len(ts.Tunnels) != 1 {
		t.Fatalf("tunnels: %v %v", ts, err)
	}
	tun := ts.Tunnels[0]
	conn := ipsec.ConnName(tun.Id)
	ini, resp := tun.A.Site, tun.B.Site // the initiator and the responder
	if tun.Initiator == "b" {
		ini, resp = resp, ini
	}

	st := e.startStream(lab.StreamSpec{From: "br1", To: "hq", Rate: 500})
	defer st.Stop()
	e.waitSustained(st, "the stream flows", time.Now(), func(stream.Record) bool { return true }, 2*time.Second, converge)

	if switchProposal {
		// The upgrade: the stored proposal is dropped, the default applies.
		// charon replaces a changed connection's config and, at the initiating
		// end, closes and re-initiates its IKE_SA (vici load-conn undoes the
		// old config's start action), so this costs a renegotiation: measured
		// and logged, not asserted.
		var beforeIKEs []string
		e.waitFor("an established IKE_SA without PFS", converge, func() (bool, string) {
			l := e.sas(ini, conn)
			ikes, ch := up(l)
			beforeIKEs = ikes
			return len(ikes) > 0 && len(ch) > 0, describe(l)
		})
		upStart := time.Now()
		e.setTopologyApplied(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH})
		if got, err := e.admin.GetTopology(e.actx, &pb.GetTopologyRequest{}); err != nil || got.GetIpsec().GetEspProposal() != "aes256gcm16-modp2048" {
			t.Fatalf("topology after the change: %v %v", got, err)
		}
		var afterIKEs []string
		e.waitFor("an established IKE_SA after the proposal change", converge, func() (bool, string) {
			l := e.sas(ini, conn)
			ikes, ch := up(l)
			afterIKEs = ikes
			return len(ikes) > 0 && len(ch) > 0, describe(l)
		})
		e.waitSustained(st, "the stream flows after the proposal change", time.Now(), func(stream.Record) bool { return true }, 2*time.Second, converge)
		time.Sleep(5 * time.Second) // let charon settle (duplicate IKE_SAs, DPD) before the measured window
		recs, err := st.Records()
		if err != nil {
			t.Fatal(err)
		}
		upSum := stream.Summarize(stream.SentBetween(recs, upStart.Add(-time.Second), time.Now().Add(-2*time.Second)))
		t.Logf("proposal change aes256gcm16 -> default: IKE_SAs at %s %v -> %v; stream %v", ini, beforeIKEs, afterIKEs, upSum)
	}

	// CHILD_SA rekey with PFS: every CHILD_SA named gre at the initiator.
	// Negotiation failures count from here on: an end may initiate before
	// its peer has loaded the connection at start (NO_PROPOSAL_CHOSEN
	// then), which is not what this test measures.
	logMark := map[string]int{}
	for _, site := range []string{ini, resp} {
		logMark[site] = len(readFile(e.lab.Sites[site].RunDir + "/charon.log"))
	}
	rekeyStart := time.Now()
	l := e.sas(ini, conn)
	_, oldChildren := up(l)
	t.Logf("before the CHILD_SA rekey at %s: %s", ini, describe(l))
	// By unique id, each one: after the proposal change the two ends may
	// hold two IKE_SAs with a CHILD_SA each (the passive end's trap), and
	// a rekey by name reaches only one of them.
	e.rekeyChildren(ini, oldChildren)
	var children map[string]string
	took := e.waitFor("the CHILD_SAs are rekeyed with DH group 14 at both ends", converge, func() (bool, string) {
		var desc []string
		done := true
		for _, site := range []string{ini, resp} {
			l := e.sas(site, conn)
			_, ch := up(l)
			desc = append(desc, site+": "+describe(l))
			if len(ch) == 0 {
				done = false
			}
			for id, dh := range ch {
				if dh != "MODP_2048" {
					done = false
				}
				if _, old := oldChildren[id]; old && site == ini {
					done = false
				}
			}
			if site == ini {
				children = ch
			}
		}
		return done, strings.Join(desc, " | ")
	})
	t.Logf("CHILD_SA rekey with PFS took %v: %s", took.Round(time.Millisecond), describe(e.sas(ini, conn)))

	// IKE_SA rekey: new IKE_SAs, the CHILD_SAs move over unchanged.
	oldIKEs, _ := up(e.sas(ini, conn))
	took = e.rekeyIKE(ini, conn, oldIKEs, children)
	t.Logf("IKE_SA rekey took %v: %s", took.Round(time.Millisecond), describe(e.sas(ini, conn)))

	time.Sleep(2 * time.Second) // packets in flight at the end of the window
	doneAt := time.Now()
	recs, err := st.Stop()
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
		if log := readFile(e.lab.Sites[s].RunDir + "/charon.log"); len(log) >= logMark[s] && strings.Contains(log[logMark[s]:], "NO_PROPOSAL_CHOSEN") {
			t.Errorf("charon of %s logged NO_PROPOSAL_CHOSEN:\n%s", s, tail(log, 40))
		}
	}
}

//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/e2e/lab"
	"github.com/meshwan/meshwan/e2e/stream"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/strongswan/govici/vici"
)

// saIdentity lists the ESTABLISHED IKE_SAs of conn at site with their
// SPIs and INSTALLED CHILD_SAs with theirs, as sorted text: equal texts
// mean charon negotiated nothing for the connection in between.
func (e *env) saIdentity(site, conn string) string {
	e.t.Helper()
	var lines []string
	e.vici(site, func(ctx context.Context, s ipsec.Session) error {
		msgs, err := s.Stream(ctx, "list-sas", "list-sa", nil)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			sa, ok := m.Get(conn).(*vici.Message)
			if !ok || viciStr(sa, "state") != "ESTABLISHED" {
				continue
			}
			lines = append(lines, fmt.Sprintf("ike %s spi %s/%s", viciStr(sa, "uniqueid"), viciStr(sa, "initiator-spi"), viciStr(sa, "responder-spi")))
			cs, _ := sa.Get("child-sas").(*vici.Message)
			if cs == nil {
				continue
			}
			for _, k := range cs.Keys() {
				c, ok := cs.Get(k).(*vici.Message)
				if !ok || viciStr(c, "state") != "INSTALLED" {
					continue
				}
				lines = append(lines, fmt.Sprintf("  child %s (of ike %s) spi in %s out %s", viciStr(c, "uniqueid"), viciStr(sa, "uniqueid"), viciStr(c, "spi-in"), viciStr(c, "spi-out")))
			}
		}
		return nil
	})
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// tunnelRecord is what must not change about a tunnel across a role
// change, as the admin API shows it.
func tunnelRecord(t *pb.Tunnel) string {
	return fmt.Sprintf("id %s a %s.%s %s b %s.%s %s prefix %s serial %d initiator %s", t.Id, t.A.Site, t.A.Transport, t.A.InnerAddress,
		t.B.Site, t.B.Transport, t.B.InnerAddress, t.Prefix, t.PskSerial, t.Initiator)
}

// TestRoleChangeRekeysNothing: a hub-and-spoke network (hub hq, spokes br1
// and br2) with a 500 pps stream from br1's LAN to hq's across their
// tunnel. Promoting br2 to hub (UpdateSite, the admin API) adds the tunnel
// br1~br2 and nothing else: the new tunnel comes up at both ends, the
// stream on the existing tunnel loses 0 packets, the existing tunnels keep
// their ids, /30s, key serials and initiators, and charon at each of their
// ends still holds the very IKE_SAs and CHILD_SAs it held before (same
// unique ids, same SPIs): nothing was renegotiated.
func TestRoleChangeRekeysNothing(t *testing.T) {
	e := setup(t, "br1", "br2", "hq")
	e.declare("hq")
	e.topology(pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE)
	e.enrollAndStart()
	e.waitAllPairs()

	list := func() map[string]*pb.Tunnel {
		ts, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*pb.Tunnel{}
		for _, tun := range ts.Tunnels {
			out[tun.Id] = tun
		}
		return out
	}
	old := list()
	oldIDs := slices.Sorted(maps.Keys(old))
	if want := []string{"br1.inet1~hq.inet1", "br2.inet1~hq.inet1"}; !slices.Equal(oldIDs, want) {
		t.Fatalf("tunnels of the hub-and-spoke network %v, want %v", oldIDs, want)
	}
	for _, tun := range old {
		if tun.Initiator != "b" {
			t.Errorf("tunnel %s: initiator %q, want the hub (b)", tun.Id, tun.Initiator)
		}
	}
	// The edges report the existing tunnels up before anything is taken.
	for _, id := range oldIDs {
		for _, site := range []string{old[id].A.Site, old[id].B.Site} {
			e.waitFor(site+" reports "+id+" up", converge, func() (bool, string) {
				st, err := e.siteStatus(site)
				if err != nil {
					return false, err.Error()
				}
				ts := tunnelStatusByID(st, id)
				return ts.GetState() == pb.TunnelState_TUNNEL_STATE_UP && ts.GetProbeState() == "up", fmtTunnel(ts)
			})
		}
	}

	st := e.startStream(lab.StreamSpec{From: "br1", To: "hq", Rate: 500})
	defer st.Stop()
	e.waitSustained(st, "the stream br1 -> hq flows", time.Now(), func(stream.Record) bool { return true }, 2*time.Second, converge)

	// What charon holds for the existing tunnels at both ends.
	before := map[string]string{}
	for _, id := range oldIDs {
		for _, site := range []string{old[id].A.Site, old[id].B.Site} {
			v := e.saIdentity(site, ipsec.ConnName(id))
			if !strings.Contains(v, "child ") {
				t.Fatalf("%s holds no installed CHILD_SA for %s before the role change:\n%s", site, id, v)
			}
			before[site+" "+id] = v
		}
	}

	// Promote br2 to hub through the admin API.
	promoteAt := time.Now()
	site, err := e.admin.GetSite(e.actx, &pb.GetSiteRequest{Name: "br2"})
	if err != nil {
		t.Fatal(err)
	}
	site.Status = nil
	site.Role = pb.SiteRole_SITE_ROLE_HUB
	if _, err := e.admin.UpdateSite(e.actx, &pb.UpdateSiteRequest{Site: site}); err != nil {
		t.Fatalf("promote br2 to hub: %v", err)
	}
	const added = "br1.inet1~br2.inet1"
	now := list()
	if len(now) != 3 || now[added] == nil {
		t.Fatalf("tunnels after the promotion: %v, want the two old ones and %s", now, added)
	}
	if got := now[added].Initiator; got != "b" {
		t.Errorf("new tunnel %s: initiator %q, want the hub br2 (b)", added, got)
	}
	for _, id := range oldIDs {
		if a, b := tunnelRecord(old[id]), tunnelRecord(now[id]); a != b {
			t.Errorf("tunnel record changed by the role change:\n before %s\n after  %s", a, b)
		}
	}
	took := e.waitFor("the new tunnel "+added+" comes up at br1 and br2", converge, func() (bool, string) {
		var desc []string
		ok := true
		for _, s := range []string{"br1", "br2"} {
			st, err := e.siteStatus(s)
			if err != nil {
				return false, err.Error()
			}
			ts := tunnelStatusByID(st, added)
			ok = ok && ts.GetState() == pb.TunnelState_TUNNEL_STATE_UP && ts.GetProbeState() == "up"
			desc = append(desc, s+": "+fmtTunnel(ts))
		}
		return ok, strings.Join(desc, "; ")
	})
	t.Logf("the new tunnel %s was up at both ends %v after the promotion", added, took.Round(time.Millisecond))
	// br1 reaches br2 directly now.
	link := e.innerLink("br1", added)
	e.waitFor("br1 routes br2's LAN over the new tunnel", converge, func() (bool, string) {
		dev, err := e.lab.RouteDev(e.ctx, "br1", e.lab.Sites["br2"].Host)
		return err == nil && dev == link, fmt.Sprintf("dev %q (%v), want %s", dev, err, link)
	})
	e.waitPing("br1", "br2")
	// Let a late reload or renegotiation show itself.
	time.Sleep(5 * time.Second)
	doneAt := time.Now()
	time.Sleep(2 * time.Second) // packets in flight at the end of the window
	recs, err := st.Stop()
	if err != nil {
		t.Fatal(err)
	}
	sum := stream.Summarize(stream.SentBetween(recs, promoteAt.Add(-time.Second), doneAt))
	t.Logf("stream br1 -> hq on the existing tunnel, from the promotion until %v after it: %v", doneAt.Sub(promoteAt).Round(time.Millisecond), sum)
	if sum.Received < 500 {
		t.Fatalf("the stream window holds only %d packets", sum.Received)
	}
	if sum.Lost != 0 {
		t.Errorf("the role change lost %d packets on the existing tunnel: %v", sum.Lost, sum)
	}
	for _, id := range oldIDs {
		for _, site := range []string{old[id].A.Site, old[id].B.Site} {
			if after := e.saIdentity(site, ipsec.ConnName(id)); after != before[site+" "+id] {
				t.Errorf("%s renegotiated %s across the role change:\n before:\n%s\n after:\n%s", site, id, before[site+" "+id], after)
			} else {
				t.Logf("%s %s kept its SAs:\n%s", site, id, after)
			}
		}
	}
	if final := list(); len(final) != 3 {
		t.Errorf("tunnels at the end: %d, want 3", len(final))
	}
}

// innerLink is the name of the GRE link of tunnel id (both ends name it
// after the /30).
func (e *env) innerLink(site, id string) string {
	e.t.Helper()
	return dataplane.LinkName(netip.MustParsePrefix(e.innerAddr(site, id) + "/30"))
}

//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
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

// charonView is what a site's charon holds for one connection: its
// secret ids and its IKE_SAs (unique id -> state).
type charonView struct {
	secrets []string
	ikeSAs  map[string]string
}

func (e *env) charon(site, conn string) charonView {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	s, err := ipsec.Dial(ctx, e.lab.Sites[site].ViciSocket())
	if err != nil {
		e.t.Fatalf("vici of %s: %v", site, err)
	}
	defer s.Close()
	v := charonView{ikeSAs: map[string]string{}}
	shared, err := s.Call(ctx, "get-shared", nil)
	if err != nil {
		e.t.Fatalf("get-shared at %s: %v", site, err)
	}
	keys, _ := shared.Get("keys").([]string)
	if k, ok := shared.Get("keys").(string); ok {
		keys = []string{k}
	}
	for _, k := range keys {
		if k == conn || strings.HasPrefix(k, conn+"#") {
			v.secrets = append(v.secrets, k)
		}
	}
	slices.Sort(v.secrets)
	msgs, err := s.Stream(ctx, "list-sas", "list-sa", nil)
	if err != nil {
		e.t.Fatalf("list-sas at %s: %v", site, err)
	}
	for _, m := range msgs {
		if sec, ok := m.Get(conn).(*vici.Message); ok {
			id, _ := sec.Get("uniqueid").(string)
			st, _ := sec.Get("state").(string)
			v.ikeSAs[id] = st
		}
	}
	return v
}

func (v charonView) established() []string {
	var ids []string
	for id, st := range v.ikeSAs {
		if st == "ESTABLISHED" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// nftCounter returns the packet counter of the meshwan rule whose comment
// starts with "mw:<label> " in site's namespace.
func (e *env) nftCounter(site, label string) uint64 {
	e.t.Helper()
	out, err := lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites[site].NS, "nft", "list", "table", "inet", "meshwan")
	if err != nil {
		e.t.Fatalf("nft list at %s: %v\n%s", site, err, out)
	}
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ .*comment "mw:` + regexp.QuoteMeta(label) + ` `)
	for _, l := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return n
		}
	}
	e.t.Fatalf("no rule mw:%s at %s:\n%s", label, site, out)
	return 0
}

// TestPSKRotationUnderTrafficAndListenerFilter: two managed sites with BGP
// over one tunnel and a 500 pps stream across it. A key rotation started
// through the API walks staged -> committed -> done as both edges report
// each key set, re-authenticates the IKE_SA (a new IKE_SA id) and loses no
// packet; afterwards each edge holds only the new key, which alone
// authenticates a further re-authentication. In the same lab: a host on
// the WAN cannot reach the edges' BGP port nor probe reflector (the
// meshwan drop counters count its packets), while the tunnel peer can
// (BGP sessions and probes over the tunnel work).
func TestPSKRotationUnderTrafficAndListenerFilter(t *testing.T) {
	e := setup(t, "br1", "hq")
	e.declare()
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, Routing: pb.RoutingMode_ROUTING_MODE_BGP})
	e.enrollAndStart()
	e.waitAllPairs()
	ts, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{})
	if err != nil || len(ts.Tunnels) != 1 {
		t.Fatalf("tunnels: %v %v", ts, err)
	}
	tun := ts.Tunnels[0]
	id, conn := tun.Id, ipsec.ConnName(tun.Id)
	initiator := tun.A.Site // the A end is the active one
	if tun.PskSerial != 1 || tun.PskRotation != "" {
		t.Fatalf("new tunnel: serial %d phase %q", tun.PskSerial, tun.PskRotation)
	}
	// The edges report the serial they loaded.
	serials := func() (map[string]uint64, string) {
		out := map[string]uint64{}
		var desc []string
		for _, s := range []string{"br1", "hq"} {
			st, err := e.siteStatus(s)
			if err != nil {
				return nil, err.Error()
			}
			out[s] = tunnelStatusByID(st, id).GetPskSerial()
			desc = append(desc, fmt.Sprintf("%s loaded %d", s, out[s]))
		}
		return out, strings.Join(desc, ", ")
	}
	e.waitFor("both edges report key serial 1", converge, func() (bool, string) {
		s, d := serials()
		return s["br1"] == 1 && s["hq"] == 1, d
	})
	// BGP from the tunnel peer works (sessions over the tunnel carry the
	// LAN routes) and so do its probes.
	for _, pair := range [][2]string{{"br1", "hq"}, {"hq", "br1"}} {
		me, peer := pair[0], pair[1]
		want := e.lab.Sites[peer].LAN.String() + " via "
		e.waitFor(me+" learns "+peer+"'s LAN over BGP", converge, func() (bool, string) {
			r := e.routes(me, 241)
			return strings.Contains(r, want), r
		})
		e.waitFor(me+" probes the tunnel up", converge, func() (bool, string) {
			st, err := e.siteStatus(me)
			if err != nil {
				return false, err.Error()
			}
			ts := tunnelStatusByID(st, id)
			return ts.GetProbeState() == "up", fmtTunnel(ts)
		})
	}

	// A WAN host (the WAN router's namespace) tries hq's BGP port and
	// probe reflector on hq's WAN address: dropped by meshwan's rules.
	hqWAN := e.lab.Sites["hq"].WAN.String()
	bgpDrops, probeDrops := e.nftCounter("hq", "bgp-other"), e.nftCounter("hq", "probe-other")
	out, err := lab.Run(e.ctx, "ip", "netns", "exec", "mw-wan", "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+hqWAN+"/179")
	if err == nil {
		t.Errorf("a WAN host opened TCP 179 on hq's WAN address: %s", out)
	}
	if _, err := lab.Run(e.ctx, "ip", "netns", "exec", "mw-wan", "bash", "-c", "echo probe > /dev/udp/"+hqWAN+"/7402"); err != nil {
		t.Fatalf("sending a UDP packet from the WAN: %v", err)
	}
	if n := e.nftCounter("hq", "bgp-other"); n <= bgpDrops {
		t.Errorf("hq's bgp-other drop counter did not move (%d -> %d)", bgpDrops, n)
	}
	if n := e.nftCounter("hq", "probe-other"); n <= probeDrops {
		t.Errorf("hq's probe-other drop counter did not move (%d -> %d)", probeDrops, n)
	}
	// The tunnel peer opens TCP 179 over the tunnel.
	hqInner, _, _ := strings.Cut(tun.A.InnerAddress, "/")
	if tun.A.Site != "hq" {
		hqInner, _, _ = strings.Cut(tun.B.InnerAddress, "/")
	}
	if out, err := lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites["br1"].NS, "timeout", "20", "bash", "-c", "exec 3<>/dev/tcp/"+hqInner+"/179"); err != nil {
		t.Errorf("the tunnel peer br1 cannot open TCP 179 on hq's tunnel address %s: %v %s", hqInner, err, out)
	}

	// The rotation, under a 500 pps stream br1 -> hq.
	before := e.charon(initiator, conn)
	if len(before.secrets) != 1 || len(before.established()) == 0 {
		t.Fatalf("before the rotation %s holds secrets %v, IKE_SAs %v", initiator, before.secrets, before.ikeSAs)
	}
	st := e.startStream(lab.StreamSpec{From: "br1", To: "hq", Rate: 500})
	defer st.Stop()
	streamStart := time.Now()
	e.waitSustained(st, "the stream flows", streamStart, func(stream.Record) bool { return true }, 2*time.Second, converge)
	rotStart := time.Now()
	resp, err := e.admin.RotateTunnelKeys(e.actx, &pb.RotateTunnelKeysRequest{Site: "hq"})
	if err != nil || !slices.Equal(resp.TunnelIds, []string{id}) {
		t.Fatalf("RotateTunnelKeys = %v, %v", resp, err)
	}
	sawAccept := false
	took := e.waitFor("the rotation completes at both ends", converge, func() (bool, string) {
		if v := e.charon("hq", conn); len(v.secrets) == 2 {
			sawAccept = true
		}
		got, err := e.admin.GetTunnel(e.actx, &pb.GetTunnelRequest{Id: id})
		if err != nil {
			return false, err.Error()
		}
		s, d := serials()
		return got.PskRotation == "" && got.PskSerial == 4 && s["br1"] == 4 && s["hq"] == 4,
			fmt.Sprintf("phase %q serial %d; %s", got.PskRotation, got.PskSerial, d)
	})
	t.Logf("rotation completed in %v (accept-only key seen loaded at hq: %v)", took.Round(time.Millisecond), sawAccept)
	// The initiating end re-authenticated: an IKE_SA that was not there
	// before is established, and the old ones are gone (make-before-break
	// deletes them once the new one is up).
	var after charonView
	e.waitFor("the IKE_SA is re-authenticated", converge, func() (bool, string) {
		after = e.charon(initiator, conn)
		est := after.established()
		for _, old := range before.established() {
			if _, still := after.ikeSAs[old]; still {
				return false, fmt.Sprintf("before %v, now %v", before.ikeSAs, after.ikeSAs)
			}
		}
		return len(est) > 0, fmt.Sprintf("before %v, now %v", before.ikeSAs, after.ikeSAs)
	})
	time.Sleep(2 * time.Second) // packets in flight at the end of the window
	doneAt := time.Now()
	recs, err := st.Stop()
	if err != nil {
		t.Fatal(err)
	}
	window := stream.SentBetween(recs, rotStart.Add(-time.Second), doneAt.Add(-time.Second))
	sum := stream.Summarize(window)
	t.Logf("stream during the rotation (%v): %v", doneAt.Sub(rotStart).Round(time.Millisecond), sum)
	if sum.Received < 500 {
		t.Fatalf("the stream window holds only %d packets", sum.Received)
	}
	if sum.Lost != 0 {
		t.Errorf("the rotation lost %d packets: %v", sum.Lost, sum)
	}
	// Only the new key is loaded at either end.
	for _, s := range []string{"br1", "hq"} {
		if v := e.charon(s, conn); !slices.Equal(v.secrets, []string{conn}) {
			t.Errorf("%s still holds %v after the rotation, want only %s", s, v.secrets, conn)
		}
	}
	// The new key alone authenticates: one more re-authentication works.
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	vs, err := ipsec.Dial(ctx, e.lab.Sites[initiator].ViciSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer vs.Close()
	msg := vici.NewMessage()
	_ = msg.Set("ike", conn)
	_ = msg.Set("reauth", "yes")
	if _, err := vs.Call(ctx, "rekey", msg); err != nil {
		t.Fatalf("rekey: %v", err)
	}
	e.waitFor("a re-authentication with the new key alone", converge, func() (bool, string) {
		now := e.charon(initiator, conn)
		for _, old := range after.established() {
			if _, still := now.ikeSAs[old]; still {
				return false, fmt.Sprintf("before %v, now %v", after.ikeSAs, now.ikeSAs)
			}
		}
		return len(now.established()) > 0, fmt.Sprintf("before %v, now %v", after.ikeSAs, now.ikeSAs)
	})
	for _, s := range []string{"br1", "hq"} {
		if log := readFile(filepath.Join(e.lab.Sites[s].RunDir, "charon.log")); strings.Contains(log, "AUTHENTICATION_FAILED") {
			t.Errorf("charon of %s logged an authentication failure:\n%s", s, tail(log, 40))
		}
	}
}

//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/export"
	"github.com/meshwan/meshwan/e2e/lab"
	"github.com/meshwan/meshwan/e2e/stream"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// TestThirdPartySiteFromExport: a hub-and-spoke network with BGP routing
// of two managed sites (hq the hub, br1 a spoke, each running meshwan-edge)
// and a third-party spoke "tp" declared unmanaged, whose namespace runs no
// meshwan code and is configured ONLY from the controller's LINUX export:
// the iproute2 script, nft -f the rules, charon with swanctl --load-all of
// the exported swanctl.conf, and FRR (zebra + bgpd, as user frr) with the
// exported frr.conf. It must reach both managed LANs (directly to hq,
// through hq to br1) with GRE only inside ESP, exchange BGP routes with
// hq, show up as unmanaged with its tunnel's state from hq's reports, and
// lose no packet of a 500 pps stream br1 -> tp while the third-party side
// rekeys its CHILD_SA (with PFS, DH group 14) and then its IKE_SA
// (triggered: the shortest lifetimes the validation allows, 5 and 10 min,
// would make the test far longer).
func TestThirdPartySiteFromExport(t *testing.T) {
	e := setupLab(t, lab.Config{Sites: []string{"hq", "br1", "tp"}})
	for _, name := range e.lab.Order {
		s := e.lab.Sites[name]
		site := &pb.Site{Name: name, Role: pb.SiteRole_SITE_ROLE_SPOKE, Unmanaged: name == "tp",
			Transports: []*pb.Transport{{Name: "inet1", Address: s.WAN.String()}}, LanPrefixes: []string{s.LAN.String()}}
		if name == "hq" {
			site.Role = pb.SiteRole_SITE_ROLE_HUB
		}
		if _, err := e.admin.CreateSite(e.actx, &pb.CreateSiteRequest{Site: site}); err != nil {
			t.Fatalf("create site %s: %v", name, err)
		}
	}
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, Routing: pb.RoutingMode_ROUTING_MODE_BGP})
	// The helpers treat every site in Order as running an edge (an edge
	// that is not running fails the wait): tp runs none. Order is restored
	// before the lab's Close (cleanups run last-in first-out), which stops
	// tp's charon through it.
	order := e.lab.Order
	e.lab.Order = []string{"hq", "br1"}
	t.Cleanup(func() { e.lab.Order = order })
	if _, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Site: "tp"}); err == nil {
		t.Fatal("an enrollment token was issued for the unmanaged site")
	}
	start := time.Now()
	for _, name := range []string{"hq", "br1"} {
		tok, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Site: name})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.lab.StartEdge(name, e.ctl.GRPCAddr.String(), "--token", tok.Secret, "--ca-hash", tok.CaSha256); err != nil {
			t.Fatal(err)
		}
	}

	// The export, and nothing else, configures tp.
	exp, err := e.admin.ExportSiteConfig(e.actx, &pb.ExportSiteConfigRequest{Site: "tp", Format: pb.ExportFormat_EXPORT_FORMAT_LINUX})
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	tp := e.lab.Sites["tp"]
	dir := filepath.Join("/run", "mw-tp-export") // tmpfs: FRR's sockets live next to its config
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	files := map[string]string{}
	for _, f := range exp.GetFiles() {
		files[f.GetName()] = filepath.Join(dir, f.GetName())
		if err := os.WriteFile(files[f.GetName()], []byte(f.GetContent()), 0o600); err != nil {
			t.Fatal(err)
		}
		if out := os.Getenv("MESHWAN_LAB_OUT"); out != "" && f.GetName() != "swanctl.conf" {
			os.WriteFile(filepath.Join(out, t.Name(), "tp-"+f.GetName()), []byte(f.GetContent()), 0o644)
		}
	}
	for _, name := range []string{"swanctl.conf", "meshwan-gre.sh", "meshwan.nft", "frr.conf"} {
		if files[name] == "" {
			t.Fatalf("the export lacks %s (got %v)", name, files)
		}
	}
	inNS := func(args ...string) string {
		t.Helper()
		out, err := lab.Run(e.ctx, "ip", append([]string{"netns", "exec", tp.NS}, args...)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return out
	}
	inNS("sh", files["meshwan-gre.sh"])
	inNS("nft", "-f", files["meshwan.nft"])
	if err := e.lab.StartCharon(e.ctx, "tp"); err != nil { // Debian's charon, a plain strongswan.conf
		t.Fatal(err)
	}
	inNS("swanctl", "--load-all", "--file", files["swanctl.conf"], "--uri", "unix://"+tp.ViciSocket())
	startFRRFromExport(t, e, "tp", dir, files["frr.conf"])

	// Encrypted LAN-to-LAN traffic both ways, with the hub and through it.
	for _, pair := range [][2]string{{"tp", "hq"}, {"hq", "tp"}, {"br1", "tp"}, {"tp", "br1"}} {
		e.waitPing(pair[0], pair[1])
	}
	t.Logf("third-party site reaches both managed LANs %v after the edges started", time.Since(start).Round(time.Millisecond))
	// hq initiates, but tp's trap policies initiate too when FRR
	// connects first, and the two negotiations can cross. charon then
	// either keeps both IKE_SAs at both ends (hq's Tidy ends the silent
	// one within seconds) or destroys one end's own IKE_SA on the other's
	// INITIAL_CONTACT without a DELETE. A stale IKE_SA left at hq is
	// ended by hq's Tidy; one left at tp (a third-party router runs no
	// Tidy) carries nothing (the kernel sends on the newer SA) and
	// lasts until tp's DPD gives up on it: dpd_delay 30 s plus about
	// 165 s of retransmits. Hence the longer wait.
	e.expectSAsWithin(converge+2*time.Minute, map[string][]string{"tp": {"hq"}})
	e.expectEncrypted()

	// BGP both ways: FRR installed the managed LANs, hq's edge tp's LAN.
	e.waitFor("tp's FRR installs hq's and br1's LANs", converge, func() (bool, string) {
		out, _ := lab.Run(e.ctx, "ip", "-n", tp.NS, "route", "show", "proto", "bgp")
		return strings.Contains(out, e.lab.Sites["hq"].LAN.String()) && strings.Contains(out, e.lab.Sites["br1"].LAN.String()), out
	})
	e.waitFor("hq learns tp's LAN over BGP", converge, func() (bool, string) {
		r := e.routes("hq", 241)
		return strings.Contains(r, tp.LAN.String()+" via "), r
	})

	// Health: tp is unmanaged, its tunnel shown as hq reports it.
	ts, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{Site: "tp"})
	if err != nil || len(ts.Tunnels) != 1 {
		t.Fatalf("tp's tunnels: %v %v", ts, err)
	}
	id := ts.Tunnels[0].Id
	// The connection's name at each end: the edge's, and the export's.
	conn, connOf := export.SwanctlConnName(id), map[string]string{"tp": export.SwanctlConnName(id), "hq": ipsec.ConnName(id)}
	// A third-party router does not answer meshwan's probes, so hq calls
	// the tunnel down ("probes unanswered") while its SAs carry traffic
	// (the first VM run: TUNNEL_STATE_DOWN, probe_state down, IKE
	// ESTABLISHED, child INSTALLED). Asserted is that tp shows hq's
	// report, whatever its verdict, and that the SAs are up in it.
	var health string
	e.waitFor("tp shows as unmanaged with its tunnel as hq reports it", converge, func() (bool, string) {
		s, err := e.admin.GetSite(e.actx, &pb.GetSiteRequest{Name: "tp"})
		if err != nil {
			return false, err.Error()
		}
		st := tunnelStatusByID(s.GetStatus(), id)
		health = fmt.Sprintf("unmanaged %v state %v tunnel %s ike %q child %q (%s)", s.GetUnmanaged(), s.GetStatus().GetState(), fmtTunnel(st), st.GetIkeState(), st.GetChildState(), st.GetDetail())
		return s.GetUnmanaged() && s.GetStatus().GetState() == pb.EdgeState_EDGE_STATE_UNSPECIFIED && st.GetIkeState() == "ESTABLISHED" &&
			st.GetChildState() == "INSTALLED" && st.GetState() != pb.TunnelState_TUNNEL_STATE_UNSPECIFIED &&
			strings.HasSuffix(st.GetDetail(), "as reported by hq"), health
	})
	t.Logf("tp's status: %s", health)

	// Rekeys on the third-party side under a 500 pps stream br1 -> tp.
	st := e.startStream(lab.StreamSpec{From: "br1", To: "tp", Rate: 500})
	defer st.Stop()
	e.waitSustained(st, "the stream flows", time.Now(), func(stream.Record) bool { return true }, 2*time.Second, converge)
	time.Sleep(2 * time.Second)
	// Negotiation failures are looked for from here on: hq starts
	// initiating before tp's connection is loaded, and tp's charon answers
	// those first attempts NO_PROPOSAL_CHOSEN (no config yet), which the
	// log then holds; they are logged, not asserted.
	logMark := map[string]int{}
	for _, s := range []string{"tp", "hq"} {
		log := readFile(e.lab.Sites[s].RunDir + "/charon.log")
		logMark[s] = len(log)
		if f := negotiationFailures(log); len(f) > 0 {
			t.Logf("before the rekeys, charon of %s logged (%d lines): %s", s, len(f), strings.Join(f[:min(len(f), 4)], " | "))
		}
	}
	rekeyStart := time.Now()
	ikes, oldChildren := up(e.sas("tp", conn))
	t.Logf("before the rekeys at tp: %s", describe(e.sas("tp", conn)))
	if len(ikes) == 0 || len(oldChildren) == 0 {
		t.Fatalf("no established SA at tp: %s", describe(e.sas("tp", conn)))
	}
	e.rekeyChildren("tp", oldChildren)
	var children map[string]string
	took := e.waitFor("tp's CHILD_SA is rekeyed with DH group 14 at both ends", converge, func() (bool, string) {
		var desc []string
		done := true
		for _, site := range []string{"tp", "hq"} {
			l := e.sas(site, connOf[site])
			_, ch := up(l)
			desc = append(desc, site+": "+describe(l))
			if len(ch) == 0 {
				done = false
			}
			pfs := 0
			for cid, dh := range ch {
				if dh == "MODP_2048" {
					pfs++
				} else if site == "tp" {
					done = false
				}
				if _, old := oldChildren[cid]; old && site == "tp" {
					done = false
				}
			}
			// hq may hold a second IKE_SA for a moment (both ends
			// negotiated at once; its Tidy ends the silent one): tp's
			// rekeyed CHILD_SA is what must show the group at hq.
			if pfs == 0 {
				done = false
			}
			if site == "tp" {
				children = ch
			}
		}
		return done, strings.Join(desc, " | ")
	})
	t.Logf("CHILD_SA rekey (PFS) from the third-party side took %v", took.Round(time.Millisecond))
	took = e.rekeyIKE("tp", conn, ikes, children)
	t.Logf("IKE_SA rekey from the third-party side took %v: %s", took.Round(time.Millisecond), describe(e.sas("tp", conn)))
	time.Sleep(2 * time.Second) // packets in flight at the end of the window
	doneAt := time.Now()
	recs, err := st.Stop()
	if err != nil {
		t.Fatal(err)
	}
	sum := stream.Summarize(stream.SentBetween(recs, rekeyStart.Add(-time.Second), doneAt.Add(-time.Second)))
	t.Logf("stream br1 -> tp across tp's CHILD_SA and IKE_SA rekeys (%v): %v", doneAt.Sub(rekeyStart).Round(time.Millisecond), sum)
	if sum.Received < 500 {
		t.Fatalf("the stream window holds only %d packets", sum.Received)
	}
	if sum.Lost != 0 {
		t.Errorf("the rekeys lost %d packets: %v", sum.Lost, sum)
	}
	e.expectEncrypted()
	for _, s := range []string{"tp", "hq"} {
		log := readFile(e.lab.Sites[s].RunDir + "/charon.log")
		if f := negotiationFailures(log[min(logMark[s], len(log)):]); len(f) > 0 {
			t.Errorf("charon of %s logged a negotiation failure during the rekeys:\n%s", s, strings.Join(f, "\n"))
		}
	}
}

// negotiationFailures returns the charon log lines that name a refused
// negotiation.
func negotiationFailures(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "NO_PROPOSAL_CHOSEN") || strings.Contains(l, "AUTHENTICATION_FAILED") || strings.Contains(l, "TS_UNACCEPTABLE") || strings.Contains(l, "INVALID_KE_PAYLOAD") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// startFRRFromExport runs FRR's zebra and bgpd in site's router namespace
// as user frr (zebra refuses root), bgpd reading the exported frr.conf
// unchanged. Per-instance pid, zserv and vty paths live in dir; the
// processes are killed at the end of the test.
func startFRRFromExport(t *testing.T, e *env, site, dir, frrConf string) {
	t.Helper()
	s := e.lab.Sites[site]
	if err := os.WriteFile(filepath.Join(dir, "zebra.conf"), []byte("hostname "+site+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := lab.Run(e.ctx, "chown", "-R", "frr:frr", dir); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	for _, d := range []struct{ name, conf string }{{"zebra", filepath.Join(dir, "zebra.conf")}, {"bgpd", frrConf}} {
		script := fmt.Sprintf("mount -t tmpfs none /var/tmp && exec /usr/lib/frr/%s -u frr -g frr -P 0 -i %s/%s.pid -z %s/zserv.api --vty_socket %s -f %s",
			d.name, dir, d.name, dir, dir, d.conf)
		cmd := exec.Command("ip", "netns", "exec", s.NS, "sh", "-c", script)
		logf, err := os.OpenFile(filepath.Join(e.lab.Dir, site, d.name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); logf.Close(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		if d.name == "zebra" {
			e.waitFor("zebra's socket", time.Minute, func() (bool, string) {
				_, err := os.Stat(filepath.Join(dir, "zserv.api"))
				return err == nil, fmt.Sprint(err)
			})
		}
	}
}

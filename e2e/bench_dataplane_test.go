//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/e2e/lab"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// The data-plane benchmark (docs/benchmarks.md, `make bench-dataplane`):
// opt-in, MESHWAN_BENCH_DATAPLANE=1.
//
//	MESHWAN_BENCH_DP_QUICK=1   5 repetitions of 5 s (iteration); default 9 of 6 s
//	MESHWAN_BENCH_DP_REPS      repetitions (overrides)
//	MESHWAN_BENCH_DP_SECONDS   seconds per iperf3 run (overrides)
//	MESHWAN_BENCH_DP_BARE=chain:NAME  the k -> l variant deletes only
//	                           chain NAME of table inet meshwan instead of
//	                           its tables, for that chain's share (e.g.
//	                           postrouting: with it go the NAT and
//	                           connection-tracking hooks it brings in)
//	MESHWAN_BENCH_DP_EDGE_BIN_B  a second meshwan-edge build (e.g. from
//	                           another commit) measured too, GRO on, on
//	                           sites i -> j: two builds in one run

// dpVariant is one way of carrying the LAN-to-LAN TCP stream.
type dpVariant struct {
	name string
	// from, to: the sites whose LAN hosts run the iperf3 client and server.
	from, to string
	// gro: the GRE links' receive offload (checked before and after).
	gro bool
	// links names the GRE links of both ends (site -> link).
	links map[string]string
	// bare: meshwan's nftables tables are deleted at both ends right
	// before each run, to tell the rules' share of a gap from the rest;
	// the agents put them back at their next drift repair (every 30 s),
	// and a run after which a table is back is not counted.
	bare bool
}

// TestBenchDataplane: iperf3 TCP, LAN host to LAN host over one netem-free
// WAN, (a) a -> b through meshwan's tunnel (real meshwan-edge agents and
// their charons, controller in this process, GRO on as shipped), (a')
// e -> f the same with GRO off (MESHWAN_LINK_GRO=off) and (b) c -> d
// through a hand-made GRE + transport-mode ESP tunnel with meshwan's IPsec
// connection and the same GRE MTU (lab.HandMadeTunnel), GRO on (a new GRE
// link's default), (b') g -> h the same with GRO off, so the two
// causes of a gap can be told apart, and (c) k -> l, meshwan with its
// nftables tables deleted right before each run, for the rules' share.
// The
// variants run interleaved, in a rotating order, one at a time; the
// table gives per-repetition (paired) ratios to the hand-made tunnel
// with GRO on, median and range, and TCP retransmits per MB.
func TestBenchDataplane(t *testing.T) {
	if os.Getenv("MESHWAN_BENCH_DATAPLANE") != "1" {
		t.Skip("benchmark: set MESHWAN_BENCH_DATAPLANE=1 (make bench-dataplane)")
	}
	reps, secs := 9, 6
	if os.Getenv("MESHWAN_BENCH_DP_QUICK") == "1" {
		reps, secs = 5, 5
	}
	reps = envInt(t, "MESHWAN_BENCH_DP_REPS", reps)
	secs = envInt(t, "MESHWAN_BENCH_DP_SECONDS", secs)

	// a -> b, e -> f and k -> l are meshwan sites (e and f with GRO off
	// their links: MESHWAN_LINK_GRO=off in their agents' environment; k
	// and l for the runs without meshwan's nftables tables); c -> d
	// and g -> h carry hand-made tunnels, g -> h with GRO off. One pair
	// per variant: nothing is switched between runs (each switch is a few
	// slow process starts in the VM), so the runs of a repetition follow
	// each other closely and share the machine's load.
	sites := []string{"a", "b", "c", "d", "e", "f", "g", "h", "k", "l"}
	meshwan := []string{"a", "b", "e", "f", "k", "l"}
	binB := os.Getenv("MESHWAN_BENCH_DP_EDGE_BIN_B")
	if binB != "" {
		sites, meshwan = append(sites, "i", "j"), append(meshwan, "i", "j")
	}
	e := setupLab(t, lab.Config{Sites: sites})
	binA := e.lab.EdgeBin
	for _, name := range meshwan {
		s := e.lab.Sites[name]
		if _, err := e.admin.CreateSite(e.actx, &pb.CreateSiteRequest{Site: &pb.Site{Name: name, Role: pb.SiteRole_SITE_ROLE_SPOKE,
			Transports: []*pb.Transport{{Name: s.Transports[0].Name, Address: s.WAN.String()}}, LanPrefixes: []string{s.LAN.String()}}}); err != nil {
			t.Fatalf("create site %s: %v", name, err)
		}
	}
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH})
	for _, name := range meshwan {
		switch name {
		case "e", "f":
			t.Setenv("MESHWAN_LINK_GRO", "off")
		case "i", "j":
			t.Setenv("MESHWAN_LINK_GRO", "on") // an older build B needs it for GRO
		default:
			t.Setenv("MESHWAN_LINK_GRO", "")
		}
		e.lab.EdgeBin = binA
		if name == "i" || name == "j" {
			e.lab.EdgeBin = binB
		}
		tok, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Site: name})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.lab.StartEdge(name, e.ctl.GRPCAddr.String(), "--token", tok.Secret, "--ca-hash", tok.CaSha256); err != nil {
			t.Fatal(err)
		}
	}
	// waitLANPing: e.waitPing would take c and d, which run no edge, for
	// exited edges.
	waitLANPing := func(from, to string) {
		deadline := time.Now().Add(converge)
		for {
			n, err := e.lab.Ping(e.ctx, from, to, 3)
			if n == 3 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("LAN %s -> LAN %s: %d/3 answers after %v (%v)", from, to, n, converge, err)
			}
			for _, s := range meshwan {
				if e.lab.EdgeExited(s) {
					t.Fatalf("edge %s exited:\n%s", s, tail(e.lab.EdgeLog(s), 40))
				}
			}
		}
	}
	waitLANPing("a", "b")
	waitLANPing("b", "a")
	waitLANPing("e", "f")
	waitLANPing("f", "e")
	waitLANPing("k", "l")
	waitLANPing("l", "k")
	// mwLink: the link each meshwan site routes its peer's LAN through.
	mwLink := map[string]string{}
	pairs := map[string]string{"a": "b", "b": "a", "e": "f", "f": "e", "k": "l", "l": "k"}
	if binB != "" {
		waitLANPing("i", "j")
		waitLANPing("j", "i")
		pairs["i"], pairs["j"] = "j", "i"
	}
	for from, to := range pairs {
		dev, err := e.lab.RouteDev(e.ctx, from, e.lab.Sites[to].Host)
		if err != nil || !strings.HasPrefix(dev, "mw-") {
			t.Fatalf("site %s reaches %s via %q (%v), not a meshwan link", from, to, dev, err)
		}
		mwLink[from] = dev
	}
	mtu, err := e.lab.LinkMTU(e.ctx, "a", mwLink["a"])
	if err != nil {
		t.Fatal(err)
	}
	hm := lab.HandMade{Link: "hm0", MTU: mtu, PSK: []byte("meshwan lab hand-made tunnel key"),
		Inner: [2]netip.Prefix{netip.MustParsePrefix("10.254.0.1/30"), netip.MustParsePrefix("10.254.0.2/30")}}
	for _, p := range [][2]string{{"c", "d"}, {"g", "h"}} {
		if err := e.lab.HandMadeTunnel(e.ctx, p[0], p[1], hm); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"g", "h"} {
		if on, err := e.lab.SetGRO(e.ctx, s, hm.Link, false); err != nil || on {
			t.Fatalf("GRO off on %s %s: %v (%v)", s, hm.Link, on, err)
		}
	}
	for _, p := range [][2]string{{"c", "d"}, {"d", "c"}, {"g", "h"}, {"h", "g"}} {
		waitLANPing(p[0], p[1])
	}
	for _, s := range []string{"a", "c"} {
		out, _ := lab.Run(e.ctx, "ip", "-n", e.lab.Sites[s].NS, "xfrm", "state")
		var algs []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 1 && (f[0] == "aead" || f[0] == "enc" || f[0] == "auth-trunc") {
				algs = append(algs, f[0]+" "+f[1])
			}
		}
		if len(algs) == 0 {
			t.Fatalf("site %s: no ESP SA:\n%s", s, out)
		}
		t.Logf("site %s ESP: %s", s, strings.Join(algs, "; "))
	}
	for _, s := range []string{"b", "d", "f", "h", "j", "l"} {
		if s == "j" && binB == "" {
			continue
		}
		if _, err := e.lab.StartIperfServer(e.ctx, s, 5201); err != nil {
			t.Fatal(err)
		}
	}

	links := func(a, b string) map[string]string { return map[string]string{a: mwLink[a], b: mwLink[b]} }
	variants := []dpVariant{
		{name: "meshwan (GRO on, as shipped)", from: "a", to: "b", gro: true, links: links("a", "b")},
		{name: "hand-made (GRO on, kernel default)", from: "c", to: "d", gro: true, links: map[string]string{"c": hm.Link, "d": hm.Link}},
		{name: "meshwan, GRO off (MESHWAN_LINK_GRO=off)", from: "e", to: "f", gro: false, links: links("e", "f")},
		{name: "hand-made, GRO off", from: "g", to: "h", gro: false, links: map[string]string{"g": hm.Link, "h": hm.Link}},
		{name: "meshwan (GRO on), its nftables tables deleted for the run", from: "k", to: "l", gro: true, links: links("k", "l"), bare: true},
	}
	bareChain, chainOnly := strings.CutPrefix(os.Getenv("MESHWAN_BENCH_DP_BARE"), "chain:")
	if chainOnly {
		variants[4].name = "meshwan (GRO on), its chain " + bareChain + " deleted for the run"
	}
	if binB != "" {
		variants = append(variants, dpVariant{name: "meshwan build B (" + filepath.Base(filepath.Dir(binB)) + "), GRO on", from: "i", to: "j", gro: true, links: links("i", "j")})
	}
	checkGRO := func(v dpVariant) bool {
		for s, link := range v.links {
			if got, err := e.lab.GRO(e.ctx, s, link); err != nil || got != v.gro {
				t.Logf("%s: GRO of %s %s is %v (%v)", v.name, s, link, got, err)
				return false
			}
		}
		return true
	}
	for _, v := range variants {
		if !checkGRO(v) {
			t.Fatalf("%s: GRO not as described", v.name)
		}
	}
	const base = 1 // the hand-made tunnel as the kernel configures it
	bps := make([][]float64, len(variants))
	rtx := make([][]float64, len(variants))
	reverted := make([]int, len(variants))
	counted := make([][]bool, len(variants))
	// meshwanTables lists the inet tables meshwan owns in a site's
	// namespace (firewall and steering).
	meshwanTables := func(site string) []string {
		if chainOnly { // the chain stands for the tables
			if _, err := lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites[site].NS, "nft", "list", "chain", "inet", "meshwan", bareChain); err != nil {
				return nil
			}
			return []string{"meshwan " + bareChain}
		}
		out, err := lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites[site].NS, "nft", "list", "tables")
		if err != nil {
			t.Fatalf("nft list tables in %s: %v %s", site, err, out)
		}
		var ts []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "table" && f[1] == "inet" && strings.HasPrefix(f[2], "meshwan") {
				ts = append(ts, f[2])
			}
		}
		return ts
	}
	d := time.Duration(secs) * time.Second
	// One warm-up run per tunnel (first-packet effects: ARP, PMTU, the
	// first rekey timers) that does not count.
	for _, v := range variants {
		if _, err := e.lab.Iperf(e.ctx, v.from, v.to, 5201, 2*time.Second); err != nil {
			t.Fatalf("%s: warm-up: %v", v.name, err)
		}
	}
	for r := range reps {
		for k := range variants {
			i := (k + r) % len(variants) // rotate the order: no variant always runs first
			v := variants[i]
			if v.bare {
				for _, s := range []string{v.from, v.to} {
					for _, tb := range meshwanTables(s) {
						what := []string{"table", "inet", tb}
						if chainOnly {
							what = []string{"chain", "inet", "meshwan", bareChain}
						}
						if out, err := lab.Run(e.ctx, "ip", append([]string{"netns", "exec", e.lab.Sites[s].NS, "nft", "delete"}, what...)...); err != nil {
							t.Fatalf("delete table %s in %s: %v %s", tb, s, err, out)
						}
					}
				}
			}
			res, err := e.lab.Iperf(e.ctx, v.from, v.to, 5201, d)
			if err != nil {
				t.Fatalf("%s #%d: %v", v.name, r+1, err)
			}
			ok := !v.bare || len(meshwanTables(v.from))+len(meshwanTables(v.to)) == 0
			counted[i] = append(counted[i], ok)
			bps[i] = append(bps[i], res.BitsPerSecond)
			rtx[i] = append(rtx[i], res.RetransmitsPerMB())
			t.Logf("%s #%d: %.1f Mbit/s, %d retransmits (%.2f per MB)", v.name, r+1, res.BitsPerSecond/1e6, res.Retransmits, res.RetransmitsPerMB())
		}
	}
	// GRO must not have changed meanwhile (the agents repair drift).
	for i, v := range variants {
		if !checkGRO(v) {
			reverted[i]++
		}
	}
	var ct []string
	for _, s := range e.lab.Order {
		out, _ := lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites[s].NS, "sh", "-c", "cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo none")
		ct = append(ct, s+" "+strings.TrimSpace(out))
	}
	var b strings.Builder
	b.WriteString(benchHeader("make bench-dataplane: TestBenchDataplane"))
	fmt.Fprintf(&b, "Data plane: iperf3 TCP LAN host -> LAN host, one netem-free WAN, GRE MTU %d, %d interleaved repetitions of %d s per variant; ratio = paired (same repetition) throughput / the hand-made tunnel's, median (min-max).\n\n", mtu, reps, secs)
	b.WriteString("| variant | Mbit/s median (min-max) | ratio to hand-made, paired: median (min-max) | retransmits per MB median (min-max) | GRO changed by the end |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: |\n")
	for i, v := range variants {
		// Only the counted runs (all but a bare variant's runs whose
		// tables came back), paired with the same repetition's base run.
		var num, den, rts []float64
		for r := range bps[i] {
			if counted[i][r] {
				num, den, rts = append(num, bps[i][r]), append(den, bps[base][r]), append(rts, rtx[i][r])
			}
		}
		m := lab.SpreadOf(num)
		ratio := lab.SpreadOf(lab.PairedRatios(num, den))
		rt := lab.SpreadOf(rts)
		if len(num) < len(bps[i]) {
			v.name += fmt.Sprintf(" (%d of %d runs counted)", len(num), len(bps[i]))
		}
		fmt.Fprintf(&b, "| %s | %.0f (%.0f-%.0f) | **%.2f** (%.2f-%.2f) | %.1f (%.1f-%.1f) | %d |\n", v.name, m.Median/1e6, m.Min/1e6, m.Max/1e6,
			ratio.Median, ratio.Min, ratio.Max, rt.Median, rt.Min, rt.Max, reverted[i])
	}
	fmt.Fprintf(&b, "\nconntrack entries per site namespace after the runs (a, b, e, f, k, l: meshwan; c, d, g, h: hand-made): %s.\n", strings.Join(ct, ", "))
	writeTable(t, "bench-dataplane.md", b.String())
}

//go:build e2e

// Package e2e runs meshwan end to end on a real kernel with GRE and ESP:
// sites as network namespaces, each with its own meshwan-edge and charon,
// the controller in this process. It needs root and a kernel with GRE/ESP,
// so it runs inside the VM lab (`make e2e`); elsewhere it skips.
package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/e2e/lab"
	"github.com/meshwan/meshwan/e2e/stream"
	"github.com/meshwan/meshwan/edge/dataplane"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// converge bounds how long the network may take to come up or change in
// the emulated VM (IKE alone takes ~2 s there; everything is 5-30x slower).
const converge = 3 * time.Minute

func TestMain(m *testing.M) {
	// The lab runs this binary as its measurement stream tool (see
	// setupLab): one binary to build and copy, no separate meshwan-stream.
	if os.Getenv(streamToolEnv) == "1" {
		os.Exit(stream.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped, needs root")
		os.Exit(0)
	}
	if out, err := exec.Command("sh", "-c", "ip netns add mw-probe && ip -n mw-probe link add g type gre local 1.1.1.1 remote 2.2.2.2; r=$?; ip netns del mw-probe; exit $r").CombinedOutput(); err != nil {
		fmt.Printf("e2e: skipped, kernel lacks GRE: %s\n", out)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type env struct {
	t     *testing.T
	ctx   context.Context
	lab   *lab.Lab
	ctl   *daemon.Daemon
	cfg   daemon.Config
	admin pb.AdminServiceClient
	actx  context.Context
}

func edgeBin(t *testing.T) string {
	bin := os.Getenv("MESHWAN_EDGE_BIN")
	if bin == "" {
		bin = "../bin/meshwan-edge"
	}
	bin, _ = filepath.Abs(bin)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("meshwan-edge binary: %v (build it with `make build`, or set MESHWAN_EDGE_BIN)", err)
	}
	return bin
}

// streamToolEnv makes the test binary act as meshwan-stream.
const streamToolEnv = "MESHWAN_STREAM_TOOL"

// setup builds a lab whose sites have one transport, inet1, and starts
// the controller.
func setup(t *testing.T, sites ...string) *env {
	return setupLab(t, lab.Config{Sites: sites})
}

// setupLab builds the lab cfg describes (Dir and EdgeBin are filled in)
// and starts the controller.
func setupLab(t *testing.T, cfg lab.Config, tweaks ...func(*daemon.Config)) *env {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	if out := os.Getenv("MESHWAN_LAB_OUT"); out != "" {
		dir = filepath.Join(out, t.Name())
		os.RemoveAll(dir)
		os.MkdirAll(dir, 0o755)
	}
	cfg.Dir, cfg.EdgeBin = dir, edgeBin(t)
	l, err := lab.Build(ctx, cfg)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	l.Logf = t.Logf
	if self, err := os.Executable(); err == nil {
		l.StreamTool, l.StreamEnv = []string{self}, []string{streamToolEnv + "=1"}
	}
	e := &env{t: t, ctx: ctx, lab: l}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range l.Order {
				t.Logf("---- edge %s log (tail) ----\n%s", s, tail(l.EdgeLog(s), 60))
			}
		}
		l.Close(context.Background())
	})
	// Not under MESHWAN_LAB_OUT: etcd's unix socket cannot live on 9p.
	e.cfg = daemon.Config{DataDir: filepath.Join(t.TempDir(), "controller"), GRPCListen: lab.ControllerAddr.String() + ":7400", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999"}
	for _, tw := range tweaks {
		tw(&e.cfg)
	}
	e.startController()
	return e
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) startController() {
	e.t.Helper()
	d, err := daemon.Start(e.ctx, e.cfg)
	if err != nil {
		e.t.Fatalf("controller: %v", err)
	}
	e.ctl = d
	e.t.Cleanup(func() {
		if e.ctl != nil {
			e.ctl.Close()
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.CAPEM)
	conn, err := grpc.NewClient(d.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	e.admin = pb.NewAdminServiceClient(conn)
	e.actx = metadata.AppendToOutgoingContext(e.ctx, "authorization", "Bearer "+d.AdminToken)
}

func (e *env) stopController() {
	e.ctl.Close()
	e.ctl = nil
}

// declare creates the sites (hubs first in the list of names given).
func (e *env) declare(hubs ...string) {
	e.t.Helper()
	for _, name := range e.lab.Order {
		s := e.lab.Sites[name]
		role := pb.SiteRole_SITE_ROLE_SPOKE
		if slices.Contains(hubs, name) {
			role = pb.SiteRole_SITE_ROLE_HUB
		}
		var transports []*pb.Transport
		for _, tr := range s.Transports {
			transports = append(transports, &pb.Transport{Name: tr.Name, Address: tr.Addr.String()})
		}
		_, err := e.admin.CreateSite(e.actx, &pb.CreateSiteRequest{Site: &pb.Site{Name: name, Role: role,
			Transports: transports, LanPrefixes: []string{s.LAN.String()}}})
		if err != nil {
			e.t.Fatalf("create site %s: %v", name, err)
		}
	}
}

func (e *env) topology(m pb.TopologyMode) { e.setTopology(&pb.Topology{Mode: m}) }

func (e *env) setTopology(t *pb.Topology) {
	e.t.Helper()
	if _, err := e.admin.SetTopology(e.actx, &pb.SetTopologyRequest{Topology: t}); err != nil {
		e.t.Fatalf("set topology: %v", err)
	}
}

// enrollAndStart creates a token per site and starts its edge with it.
func (e *env) enrollAndStart() {
	e.t.Helper()
	for _, name := range e.lab.Order {
		tok, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Site: name})
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.lab.StartEdge(name, e.ctl.GRPCAddr.String(), "--token", tok.Secret, "--ca-hash", tok.CaSha256); err != nil {
			e.t.Fatal(err)
		}
	}
}

// waitPing waits until from's LAN host gets 3 of 3 answers from to's.
func (e *env) waitPing(from, to string) {
	e.t.Helper()
	deadline := time.Now().Add(converge)
	for {
		n, err := e.lab.Ping(e.ctx, from, to, 3)
		if n == 3 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("LAN %s -> LAN %s: %d/3 answers after %v (%v)", from, to, n, converge, err)
		}
		for _, s := range e.lab.Order {
			if e.lab.EdgeExited(s) {
				e.t.Fatalf("edge %s exited:\n%s", s, tail(e.lab.EdgeLog(s), 40))
			}
		}
	}
}

func (e *env) waitAllPairs() {
	e.t.Helper()
	for _, a := range e.lab.Order {
		for _, b := range e.lab.Order {
			if a != b {
				e.waitPing(a, b)
			}
		}
	}
}

// expectSAs checks that each site's kernel holds exactly one inbound and
// one outbound ESP SA per tunnel peer (want: site -> peers).
func (e *env) expectSAs(want map[string][]string) {
	e.t.Helper()
	e.expectSAsWithin(converge, want)
}

// expectSAsWithin is expectSAs waiting up to d.
func (e *env) expectSAsWithin(d time.Duration, want map[string][]string) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var problems []string
		for site, peers := range want {
			sas, err := e.lab.Xfrm(e.ctx, site)
			if err != nil {
				e.t.Fatal(err)
			}
			me := e.lab.Sites[site].WAN.String()
			var got, exp []string
			for _, sa := range sas {
				got = append(got, sa.Src+">"+sa.Dst)
			}
			for _, p := range peers {
				pa := e.lab.Sites[p].WAN.String()
				exp = append(exp, me+">"+pa, pa+">"+me)
			}
			slices.Sort(got)
			slices.Sort(exp)
			if !slices.Equal(got, exp) {
				problems = append(problems, fmt.Sprintf("%s: SAs %v, want %v", site, got, exp))
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("xfrm states: %s", strings.Join(problems, "; "))
		}
		time.Sleep(time.Second)
	}
}

// expectEncrypted asserts ESP crossed the WAN and GRE never did in clear.
func (e *env) expectEncrypted() {
	e.t.Helper()
	gre, esp, err := e.lab.WANCounters(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if gre != 0 || esp == 0 {
		e.t.Fatalf("WAN router forwarded %d GRE packets in clear and %d ESP packets; want 0 and > 0", gre, esp)
	}
	e.t.Logf("WAN router: %d ESP packets, 0 GRE in clear", esp)
}

func TestHubAndSpoke(t *testing.T) {
	e := setup(t, "hub", "br1", "br2")
	e.declare("hub")
	e.topology(pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE)
	start := time.Now()
	e.enrollAndStart()
	e.waitAllPairs()
	t.Logf("hub-and-spoke converged: every LAN reaches every LAN after %v", time.Since(start).Round(time.Millisecond))
	e.expectSAs(map[string][]string{"hub": {"br1", "br2"}, "br1": {"hub"}, "br2": {"hub"}})
	e.expectEncrypted()
}

func TestFullMeshThenHubAndSpoke(t *testing.T) {
	e := setup(t, "hq", "s1", "s2", "s3")
	e.declare("hq")
	e.topology(pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH)
	start := time.Now()
	e.enrollAndStart()
	e.waitAllPairs()
	t.Logf("full mesh of 4 converged after %v", time.Since(start).Round(time.Millisecond))
	mesh := map[string][]string{"hq": {"s1", "s2", "s3"}, "s1": {"hq", "s2", "s3"}, "s2": {"hq", "s1", "s3"}, "s3": {"hq", "s1", "s2"}}
	e.expectSAs(mesh)
	e.expectEncrypted()

	// Remember the kept tunnels' links and SAs to prove they do not flap.
	// Link names come from the tunnel's /30 (dataplane.LinkName).
	toHQ := map[string]bool{}
	tl, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{Site: "hq"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range tl.Tunnels {
		toHQ[dataplane.LinkName(netip.MustParsePrefix(tn.Prefix))] = true
	}
	keptLinks := map[string]map[string]string{}
	keptSPIs := map[string][]string{}
	for _, s := range []string{"s1", "s2", "s3"} {
		links, _ := e.lab.Links(e.ctx, s)
		keptLinks[s] = map[string]string{}
		for name, idx := range links {
			if toHQ[name] {
				keptLinks[s][name] = idx
			}
		}
		sas, _ := e.lab.Xfrm(e.ctx, s)
		for _, sa := range sas {
			if sa.Dst == e.lab.Sites["hq"].WAN.String() || sa.Src == e.lab.Sites["hq"].WAN.String() {
				keptSPIs[s] = append(keptSPIs[s], sa.SPI)
			}
		}
		slices.Sort(keptSPIs[s])
	}

	for s, kept := range keptLinks {
		if len(kept) != 1 {
			t.Fatalf("%s: links to hq %v, want exactly one", s, kept)
		}
	}
	e.topology(pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE)
	e.expectSAs(map[string][]string{"hq": {"s1", "s2", "s3"}, "s1": {"hq"}, "s2": {"hq"}, "s3": {"hq"}})
	for _, s := range []string{"s1", "s2", "s3"} {
		deadline := time.Now().Add(converge)
		for {
			links, _ := e.lab.Links(e.ctx, s)
			if len(links) == 1 {
				for name, idx := range keptLinks[s] {
					if links[name] != idx {
						t.Errorf("%s: kept link %s was re-created (ifindex %s -> %s)", s, name, idx, links[name])
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GRE links %v after the change, want only the one to hq", s, links)
			}
			time.Sleep(time.Second)
		}
		sas, _ := e.lab.Xfrm(e.ctx, s)
		var spis []string
		for _, sa := range sas {
			spis = append(spis, sa.SPI)
		}
		slices.Sort(spis)
		if !slices.Equal(spis, keptSPIs[s]) {
			t.Errorf("%s: SAs to hq changed across the topology change (%v -> %v): the tunnel flapped", s, keptSPIs[s], spis)
		}
	}
	e.waitAllPairs() // spoke to spoke now crosses hq
	for _, s := range e.lab.Order {
		want := 2 // each spoke lost its tunnels to the two other spokes
		if s == "hq" {
			want = 0
		}
		if n := checkRetireOrder(t, s, e.lab.EdgeLog(s)); n != want {
			t.Errorf("%s: the log shows %d links deleted, want %d", s, n, want)
		}
	}
}

var (
	unloadedRE = regexp.MustCompile(`msg="ipsec connection unloaded" conn=mw-(\S+)`)
	deletedRE  = regexp.MustCompile(`msg="link deleted" link=\S+ alias=meshwan:(\S+)`)
)

// checkRetireOrder: every link the agent deleted had its IPsec connection
// unloaded and its SAs gone first (edge/agent Kernel.retire): no link is
// torn down while ESP for it is still being decrypted. It returns how many link deletions the log shows.
func checkRetireOrder(t *testing.T, site, log string) int {
	t.Helper()
	unloaded := map[string]bool{}
	deleted := 0
	for _, line := range strings.Split(log, "\n") {
		if m := unloadedRE.FindStringSubmatch(line); m != nil {
			unloaded[m[1]] = true
		}
		if strings.Contains(line, "deleting links whose SAs are still installed") {
			t.Errorf("%s: %s", site, line)
		}
		if m := deletedRE.FindStringSubmatch(line); m != nil {
			deleted++
			if !unloaded[m[1]] {
				t.Errorf("%s: link of tunnel %s deleted before its IPsec connection was unloaded", site, m[1])
			}
		}
	}
	return deleted
}

// TestHeadless: with the controller gone, traffic keeps flowing; an agent
// restarted while the controller is down comes back from its cache, and —
// with strongSwan running on its own, as on a router — restarting the agent
// on an unchanged state does not flap the tunnel (same GRE link, same SAs).
func TestHeadless(t *testing.T) {
	e := setup(t, "hub", "br1")
	for _, s := range e.lab.Order {
		if err := e.lab.StartCharon(e.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	e.declare("hub")
	e.topology(pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE)
	e.enrollAndStart()
	e.waitAllPairs()
	e.expectSAs(map[string][]string{"hub": {"br1"}, "br1": {"hub"}})
	linksBefore, _ := e.lab.Links(e.ctx, "br1")
	sasBefore, _ := e.lab.Xfrm(e.ctx, "br1")
	appliesBefore := strings.Count(e.lab.EdgeLog("br1"), "desired state applied")

	e.stopController()
	if n, _ := e.lab.Ping(e.ctx, "br1", "hub", 5); n != 5 {
		t.Fatalf("with the controller down: %d/5 answers, want 5", n)
	}
	// Restart an edge while the controller is down: it comes back from its
	// cache.
	e.lab.StopEdge("br1")
	if err := e.lab.StartEdge("br1", lab.ControllerAddr.String()+":7400"); err != nil {
		t.Fatal(err)
	}
	e.waitPing("br1", "hub")
	e.waitPing("hub", "br1")
	if !strings.Contains(e.lab.EdgeLog("br1"), "applying cached desired state") {
		t.Error("restarted edge did not apply its cached state")
	}
	waitApplied(t, e, "br1", appliesBefore+1) // the restarted agent applied its cache
	linksAfter, _ := e.lab.Links(e.ctx, "br1")
	sasAfter, _ := e.lab.Xfrm(e.ctx, "br1")
	if fmt.Sprint(linksAfter) != fmt.Sprint(linksBefore) {
		t.Errorf("agent restart re-created links: %v -> %v", linksBefore, linksAfter)
	}
	if spis(sasAfter) != spis(sasBefore) {
		t.Errorf("agent restart renegotiated SAs: %s -> %s", spis(sasBefore), spis(sasAfter))
	}
}

func spis(sas []lab.XfrmState) string {
	var out []string
	for _, sa := range sas {
		out = append(out, sa.SPI)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// waitApplied waits until a site's agent log shows n applied states.
func waitApplied(t *testing.T, e *env, site string, n int) {
	t.Helper()
	deadline := time.Now().Add(converge)
	for strings.Count(e.lab.EdgeLog(site), "desired state applied") < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: fewer than %d applies in its log", site, n)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// routes lists a site's kernel routes of one protocol (240 static, 241 BGP).
func (e *env) routes(site string, proto int) string {
	out, err := lab.Run(e.ctx, "ip", "-n", e.lab.Sites[site].NS, "route", "show", "proto", fmt.Sprint(proto))
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// TestBGPDualHub: with routing BGP in a two-hub hub-and-spoke network,
// every site learns every other site's LAN over eBGP (no static routes),
// spokes reach each other through the hubs with ECMP over both, and when
// one hub's WAN link dies the spokes still reach each other through the
// other hub.
func TestBGPDualHub(t *testing.T) {
	e := setup(t, "hub1", "hub2", "br1", "br2")
	e.declare("hub1", "hub2")
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, Routing: pb.RoutingMode_ROUTING_MODE_BGP})
	start := time.Now()
	e.enrollAndStart()
	e.waitAllPairs()
	t.Logf("BGP dual-hub network converged after %v", time.Since(start).Round(time.Millisecond))
	for _, s := range e.lab.Order {
		if static := strings.TrimSpace(e.routes(s, 240)); static != "" {
			t.Errorf("%s has static routes with BGP on:\n%s", s, static)
		}
		bgpRoutes := e.routes(s, 241)
		for _, other := range e.lab.Order {
			if other != s && !strings.Contains(bgpRoutes, e.lab.Sites[other].LAN.String()) {
				t.Errorf("%s did not learn %s's LAN %s over BGP:\n%s", s, other, e.lab.Sites[other].LAN, bgpRoutes)
			}
		}
	}
	// br1 reaches br2's LAN through both hubs: one route, two next hops.
	deadline := time.Now().Add(converge)
	for {
		r := e.routes("br1", 241)
		i := strings.Index(r, e.lab.Sites["br2"].LAN.String())
		if i >= 0 && strings.Count(r[i:], "nexthop via") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("br1's route to br2 is not ECMP over both hubs:\n%s", r)
		}
		time.Sleep(time.Second)
	}
	// Routing status reaches the controller.
	deadline = time.Now().Add(converge)
	for {
		s, err := e.admin.GetSite(e.actx, &pb.GetSiteRequest{Name: "br1"})
		est := 0
		for _, p := range s.GetStatus().GetBgpPeers() {
			if p.State == "established" && p.Received > 0 {
				est++
			}
		}
		if err == nil && est == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("br1's BGP status at the controller: %v (%v), want 2 established sessions with prefixes", s.GetStatus().GetBgpPeers(), err)
		}
		time.Sleep(time.Second)
	}
	// Cut hub1's WAN: spoke to spoke survives through hub2.
	if err := e.lab.SetWAN(e.ctx, "hub1", false); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	e.waitPing("br1", "br2")
	e.waitPing("br2", "br1")
	t.Logf("br1 <-> br2 with hub1 cut off: reachable %v after the cut", time.Since(cut).Round(time.Millisecond))
}

// TestBGPLANPeerAndGracefulRestart: FRR, a third-party router on br1's LAN,
// peers with br1's edge and learns the overlay's routes into its kernel,
// while the prefix it announces is not passed into the overlay. Then br1's
// agent restarts: thanks to BGP graceful restart the hub's route to br1's
// LAN never disappears and traffic keeps flowing.
func TestBGPLANPeerAndGracefulRestart(t *testing.T) {
	e := setup(t, "hub", "br1")
	for _, s := range e.lab.Order {
		if err := e.lab.StartCharon(e.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	e.declare("hub")
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, Routing: pb.RoutingMode_ROUTING_MODE_BGP})
	br1, err := e.admin.GetSite(e.actx, &pb.GetSiteRequest{Name: "br1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.lab.StartFRR(e.ctx, "br1", 64512, br1.Asn); err != nil {
		t.Fatal(err)
	}
	lanPeer := e.lab.Sites["br1"].Host.String() + ":64512"
	for _, name := range e.lab.Order {
		tok, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Site: name})
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--token", tok.Secret, "--ca-hash", tok.CaSha256}
		if name == "br1" {
			args = append(args, "--bgp-lan-peer", lanPeer)
		}
		if err := e.lab.StartEdge(name, e.ctl.GRPCAddr.String(), args...); err != nil {
			t.Fatal(err)
		}
	}
	e.waitAllPairs()

	hubLAN := e.lab.Sites["hub"].LAN.String()
	deadline := time.Now().Add(converge)
	for {
		out, _ := lab.Run(e.ctx, "ip", "-n", e.lab.Sites["br1"].LANNS, "route", "show", "proto", "bgp")
		if strings.Contains(out, hubLAN) {
			t.Logf("FRR on br1's LAN learned: %s", strings.TrimSpace(out))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("FRR on br1's LAN did not learn the hub's LAN %s: %q\nFRR log:\n%s", hubLAN, out, tail(readFile("/run/frr-br1/frr.log"), 30))
		}
		time.Sleep(time.Second)
	}
	if r := e.routes("hub", 241); strings.Contains(r, e.lab.Sites["br1"].Host.String()) || strings.Contains(r, "192.168.") {
		t.Errorf("the hub learned routes from br1's LAN router: %s", r)
	}

	// Graceful restart: watch the hub's route to br1's LAN while br1's
	// agent restarts.
	br1LAN := e.lab.Sites["br1"].LAN.String()
	stop := make(chan struct{})
	lost := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stop:
				close(lost)
				return
			default:
			}
			if r := e.routes("hub", 241); !strings.Contains(r, br1LAN) {
				select {
				case lost <- r:
				default:
				}
			}
		}
	}()
	applies := strings.Count(e.lab.EdgeLog("br1"), "desired state applied")
	e.lab.StopEdge("br1")
	if err := e.lab.StartEdge("br1", e.ctl.GRPCAddr.String(), "--bgp-lan-peer", lanPeer); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, e, "br1", applies+1)
	e.waitPing("hub", "br1")
	e.waitPing("br1", "hub")
	close(stop)
	if r, ok := <-lost; ok {
		t.Errorf("the hub lost its BGP route to br1's LAN %s during br1's agent restart; routes then:\n%s", br1LAN, r)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestBGPFullMesh: in a BGP full mesh every site reaches every other's LAN
// over the direct tunnel (one next hop, the peer's /30 address), not
// through a third site.
func TestBGPFullMesh(t *testing.T) {
	e := setup(t, "a", "b", "c")
	e.declare()
	e.setTopology(&pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, Routing: pb.RoutingMode_ROUTING_MODE_BGP})
	e.enrollAndStart()
	e.waitAllPairs()
	ts, err := e.admin.ListTunnels(e.actx, &pb.ListTunnelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range ts.Tunnels {
		for _, end := range [][2]*pb.TunnelEnd{{tn.A, tn.B}, {tn.B, tn.A}} {
			me, peer := end[0], end[1]
			peerAddr, _, _ := strings.Cut(peer.InnerAddress, "/")
			want := fmt.Sprintf("%s via %s", e.lab.Sites[peer.Site].LAN, peerAddr)
			deadline := time.Now().Add(converge)
			for !strings.Contains(e.routes(me.Site, 241), want) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: no direct BGP route %q:\n%s", me.Site, want, e.routes(me.Site, 241))
				}
				time.Sleep(time.Second)
			}
		}
	}
}

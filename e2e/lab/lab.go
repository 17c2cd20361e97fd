// Package lab builds a small WAN of network namespaces on one Linux kernel
// for meshwan's end-to-end tests and for `make lab`:
//
//	root ns (controller 192.0.2.1) --veth-- ns "mw-wan" (router) --veth(s)-- ns "mw-s-<site>" (edge) --veth-- ns "mw-l-<site>" (LAN host)
//
// Every site has one or more WAN transports (uplinks), each a veth pair
// between the site's namespace and the WAN router, in its own address
// block: transport k of site i has 198.51.100.(4i+2)/30 (k=0, "inet1" by
// default), 203.0.113.(4i+2)/30 (k=1) or 100.64.0.(4i+2)/30 (k=2), gateway
// .(4i+1) in the WAN router. The site's LAN is 10.(100+i).0.0/24 (edge .1,
// host .2). Optionally (Config.ManagementLink) a site reaches the
// controller over a separate link that no transport fault touches. Every site runs its own meshwan-edge with its own charon. It
// shells out to iproute2, tc and nft, batching commands because each
// invocation is slow in the emulated VM.
package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
)

// ControllerAddr is the root namespace's address on its link to the WAN.
var ControllerAddr = netip.MustParseAddr("192.0.2.1")

const wanNS = "mw-wan"

// Site is one lab site.
type Site struct {
	Name  string
	Index int
	WAN   netip.Addr // the first transport's address
	// Transports are the site's WAN uplinks, in Config.Transports order.
	Transports []Transport
	LAN        netip.Prefix
	Mgmt       netip.Addr // the management link's address (Config.ManagementLink), else invalid
	Host       netip.Addr // the LAN host's address
	NS         string     // the edge router's namespace
	LANNS      string     // the LAN host's namespace

	StateDir, RunDir string
	charonStop       context.CancelFunc
	charonDone       chan struct{}
	edge             *exec.Cmd
	edgeDone         chan struct{}
	logFile          *os.File
}

// Transport is one WAN uplink of a site: a veth pair between the site's
// namespace (Dev) and the WAN router (RouterDev).
type Transport struct {
	Name      string     // as declared to the controller ("inet1")
	Addr      netip.Addr // the site's address (x.x.x.(4i+2)/30)
	Gateway   netip.Addr // the WAN router's end (x.x.x.(4i+1))
	Block     netip.Prefix
	Dev       string // in the site's namespace: eth0, eth1, ...
	RouterDev string // in mw-wan: w<i> for the first transport, w<i>t<k> for the others
}

// Transport returns the site's transport called name, or nil.
func (s *Site) Transport(name string) *Transport {
	for i := range s.Transports {
		if s.Transports[i].Name == name {
			return &s.Transports[i]
		}
	}
	return nil
}

// Lab is a running lab.
type Lab struct {
	Dir     string
	EdgeBin string
	Sites   map[string]*Site
	Order   []string
	Logf    func(format string, args ...any)
	// StreamTool runs meshwan-stream: a program and leading arguments
	// (default: meshwan-stream next to EdgeBin); StreamEnv is added to
	// its environment. The e2e test binary points these at itself.
	StreamTool []string
	StreamEnv  []string
	mu         sync.Mutex
	frr        []*exec.Cmd
	streams    []*Stream
}

// Config describes a lab to build.
type Config struct {
	Dir     string // logs and edge state
	EdgeBin string
	Sites   []string
	// Transports names every site's WAN uplinks, at most three (default
	// one, "inet1"); each gets its own address block (see the package doc).
	Transports []string
	// Control names the transport the site's default route uses
	// (default: the last one). Each transport's block is routed through
	// its own uplink, so a tunnel between two sites' same-named transports
	// stays on them.
	Control string
	// ManagementLink gives every site an out-of-band link to the WAN
	// router (mgmt0, 192.0.2.(4i+6)/30) that carries the edge's control
	// connection to ControllerAddr, so that cutting or degrading any
	// transport leaves the edge reporting to the controller. Without it
	// the control connection follows the default route.
	ManagementLink bool
}

// transportBlocks are the WAN address blocks, one per transport slot.
var transportBlocks = [][3]byte{{198, 51, 100}, {203, 0, 113}, {100, 64, 0}}

// Run executes a command and returns its combined output.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// batch runs iproute2 commands in one process (ip -batch), optionally in a
// namespace.
func batch(ctx context.Context, ns string, lines ...string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s batch %q: %w: %s", ns, lines, err, bytes.TrimSpace(out))
	}
	return nil
}

// New builds the WAN, the controller link and one namespace pair per
// site, each site with a single transport, "inet1".
func New(ctx context.Context, dir, edgeBin string, names ...string) (*Lab, error) {
	return Build(ctx, Config{Dir: dir, EdgeBin: edgeBin, Sites: names})
}

// Build builds the WAN, the controller link and one namespace pair per
// site with the configured transports.
func Build(ctx context.Context, cfg Config) (*Lab, error) {
	if len(cfg.Transports) == 0 {
		cfg.Transports = []string{"inet1"}
	}
	if len(cfg.Transports) > len(transportBlocks) {
		return nil, fmt.Errorf("lab: at most %d transports", len(transportBlocks))
	}
	if len(cfg.Sites) > 63 {
		return nil, fmt.Errorf("lab: at most 63 sites")
	}
	control := len(cfg.Transports) - 1
	if cfg.Control != "" {
		control = slices.Index(cfg.Transports, cfg.Control)
		if control < 0 {
			return nil, fmt.Errorf("lab: control transport %q is not one of %v", cfg.Control, cfg.Transports)
		}
	}
	l := &Lab{Dir: cfg.Dir, EdgeBin: cfg.EdgeBin, Sites: map[string]*Site{}, Logf: func(string, ...any) {},
		StreamTool: []string{filepath.Join(filepath.Dir(cfg.EdgeBin), "meshwan-stream")}}
	Destroy(ctx) // leftovers of an earlier run
	root := []string{
		"netns add " + wanNS,
		"link add mw-ctl type veth peer name ctl0 netns " + wanNS,
		"addr add 192.0.2.1/30 dev mw-ctl",
		"link set mw-ctl up",
	}
	for k := range cfg.Transports {
		b := transportBlocks[k]
		root = append(root, fmt.Sprintf("route add %d.%d.%d.0/24 via 192.0.2.2", b[0], b[1], b[2]))
	}
	if cfg.ManagementLink {
		root = append(root, "route add 192.0.2.0/24 via 192.0.2.2")
	}
	wan := []string{"link set lo up", "addr add 192.0.2.2/30 dev ctl0", "link set ctl0 up"}
	for i, name := range cfg.Sites {
		s := &Site{
			Name: name, Index: i,
			LAN:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i), 0, 0}), 24),
			Host: netip.AddrFrom4([4]byte{10, byte(100 + i), 0, 2}),
			NS:   "mw-s-" + name, LANNS: "mw-l-" + name,
			StateDir: filepath.Join(cfg.Dir, name, "state"), RunDir: filepath.Join("/run", "mw-"+name),
		}
		root = append(root, "netns add "+s.NS, "netns add "+s.LANNS,
			fmt.Sprintf("link add lan0 netns %s type veth peer name eth0 netns %s", s.NS, s.LANNS))
		for k, tn := range cfg.Transports {
			b := transportBlocks[k]
			t := Transport{Name: tn,
				Addr:      netip.AddrFrom4([4]byte{b[0], b[1], b[2], byte(4*i + 2)}),
				Gateway:   netip.AddrFrom4([4]byte{b[0], b[1], b[2], byte(4*i + 1)}),
				Block:     netip.PrefixFrom(netip.AddrFrom4([4]byte{b[0], b[1], b[2], 0}), 24),
				Dev:       fmt.Sprintf("eth%d", k),
				RouterDev: fmt.Sprintf("w%d", i),
			}
			if k > 0 {
				t.RouterDev = fmt.Sprintf("w%dt%d", i, k)
			}
			s.Transports = append(s.Transports, t)
			root = append(root, fmt.Sprintf("link add %s netns %s type veth peer name %s netns %s", t.RouterDev, wanNS, t.Dev, s.NS))
			wan = append(wan, fmt.Sprintf("addr add %s/30 dev %s", t.Gateway, t.RouterDev), "link set "+t.RouterDev+" up")
		}
		s.WAN = s.Transports[0].Addr
		if cfg.ManagementLink {
			s.Mgmt = netip.AddrFrom4([4]byte{192, 0, 2, byte(4*i + 6)})
			root = append(root, fmt.Sprintf("link add m%d netns %s type veth peer name mgmt0 netns %s", i, wanNS, s.NS))
			wan = append(wan, fmt.Sprintf("addr add %s/30 dev m%d", s.Mgmt.Prev(), i), fmt.Sprintf("link set m%d up", i))
		}
		l.Sites[name], l.Order = s, append(l.Order, name)
		if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
			return nil, err
		}
	}
	if err := batch(ctx, "", root...); err != nil {
		return nil, err
	}
	if err := batch(ctx, wanNS, wan...); err != nil {
		return nil, err
	}
	for _, name := range cfg.Sites {
		s := l.Sites[name]
		cmds := []string{"link set lo up"}
		for _, t := range s.Transports {
			cmds = append(cmds, "addr add "+t.Addr.String()+"/30 dev "+t.Dev, "link set "+t.Dev+" up")
			if len(s.Transports) > 1 {
				cmds = append(cmds, fmt.Sprintf("route add %s via %s dev %s", t.Block, t.Gateway, t.Dev))
			}
		}
		if s.Mgmt.IsValid() {
			cmds = append(cmds, "addr add "+s.Mgmt.String()+"/30 dev mgmt0", "link set mgmt0 up",
				fmt.Sprintf("route add %s via %s dev mgmt0", netip.PrefixFrom(ControllerAddr, 30).Masked(), s.Mgmt.Prev()))
		}
		cmds = append(cmds, "route add default via "+s.Transports[control].Gateway.String(),
			"addr add "+s.LAN.Addr().Next().String()+"/24 dev lan0", "link set lan0 up")
		if err := batch(ctx, s.NS, cmds...); err != nil {
			return nil, err
		}
		if err := batch(ctx, s.LANNS, "link set lo up", "addr add "+s.Host.String()+"/24 dev eth0", "link set eth0 up",
			"route add default via "+s.LAN.Addr().Next().String()); err != nil {
			return nil, err
		}
	}
	for _, ns := range append([]string{wanNS}, nsOfSites(l)...) {
		if _, err := Run(ctx, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			return nil, err
		}
	}
	// Count GRE and ESP crossing the WAN router: GRE must never appear in
	// clear there.
	if _, err := Run(ctx, "ip", "netns", "exec", wanNS, "nft", "add table ip mwlab; add chain ip mwlab counted { type filter hook forward priority 0; }; "+
		"add rule ip mwlab counted ip protocol gre counter; add rule ip mwlab counted ip protocol esp counter"); err != nil {
		return nil, err
	}
	return l, nil
}

func nsOfSites(l *Lab) []string {
	var out []string
	for _, n := range l.Order {
		out = append(out, l.Sites[n].NS)
	}
	return out
}

// Destroy removes every lab namespace and the controller link.
func Destroy(ctx context.Context) {
	out, _ := Run(ctx, "ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.HasPrefix(name, "mw-") {
			Run(ctx, "ip", "netns", "del", name)
		}
	}
	Run(ctx, "ip", "link", "del", "mw-ctl")
}

// StartCharon runs the site's own charon in its namespace, supervised by
// this process rather than by the agent, as a system strongSwan would be:
// restarting the agent then leaves the SAs alone.
func (l *Lab) StartCharon(ctx context.Context, name string) error {
	s := l.Sites[name]
	ch, err := ipsec.NewCharon(ipsec.CharonConfig{RunDir: s.RunDir, NetNS: "/run/netns/" + s.NS})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.charonStop, s.charonDone = cancel, make(chan struct{})
	go func() { defer close(s.charonDone); ch.Run(cctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := ch.WaitReady(wctx); err != nil {
		return fmt.Errorf("charon of %s: %w", name, err)
	}
	return nil
}

// ViciSocket is the site's charon VICI socket (with StartCharon).
func (s *Site) ViciSocket() string { return filepath.Join(s.RunDir, "charon.vici") }

// StartEdge starts meshwan-edge in the site's namespace. With a charon
// started by StartCharon the agent uses it; otherwise the agent starts and
// supervises its own.
func (l *Lab) StartEdge(name, controller string, extra ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.Sites[name]
	if s.edge != nil {
		return fmt.Errorf("edge %s already running", name)
	}
	if err := os.MkdirAll(s.RunDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(l.Dir, name, "edge.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	charon := []string{"--charon-run-dir", s.RunDir}
	if s.charonStop != nil {
		charon = []string{"--vici-socket", s.ViciSocket()}
	}
	var wans []string
	for _, t := range s.Transports {
		wans = append(wans, t.Dev)
	}
	args := append([]string{"netns", "exec", s.NS, l.EdgeBin, "--controller", controller, "--state-dir", s.StateDir,
		"--wan-interface", strings.Join(wans, ","), "--log-level", "debug"}, charon...)
	args = append(args, extra...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	s.edge, s.logFile, s.edgeDone = cmd, logf, make(chan struct{})
	go func() { cmd.Wait(); close(s.edgeDone) }()
	return nil
}

// StopEdge stops the site's agent (SIGTERM, then SIGKILL). Its tunnels stay
// up: the agent does not tear down on exit; charon goes with it only when
// the agent supervised it, so tests restart the agent promptly.
func (l *Lab) StopEdge(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.Sites[name]
	if s.edge == nil {
		return
	}
	syscall.Kill(-s.edge.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.edgeDone:
	case <-time.After(20 * time.Second):
		syscall.Kill(-s.edge.Process.Pid, syscall.SIGKILL)
		<-s.edgeDone
	}
	s.logFile.Close()
	s.edge = nil
}

// EdgeExited reports whether the site's agent process has ended.
func (l *Lab) EdgeExited(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.Sites[name]
	if s.edge == nil {
		return true
	}
	select {
	case <-s.edgeDone:
		return true
	default:
		return false
	}
}

// Close stops every stream, agent, charon and FRR and removes the
// namespaces.
func (l *Lab) Close(ctx context.Context) {
	l.mu.Lock()
	for _, c := range l.frr {
		c.Process.Kill()
	}
	streams := l.streams
	l.streams = nil
	l.mu.Unlock()
	for _, st := range streams {
		st.kill()
	}
	for _, n := range l.Order {
		l.StopEdge(n)
		if s := l.Sites[n]; s.charonStop != nil {
			s.charonStop()
			<-s.charonDone
		}
	}
	Destroy(ctx)
}

// Ping pings from one site's LAN host to another's, count packets, and
// returns how many answers came back.
func (l *Lab) Ping(ctx context.Context, from, to string, count int) (int, error) {
	out, err := Run(ctx, "ip", "netns", "exec", l.Sites[from].LANNS, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", l.Sites[to].Host.String())
	m := regexp.MustCompile(`(\d+) received`).FindStringSubmatch(out)
	if m == nil {
		return 0, err
	}
	n, _ := strconv.Atoi(m[1])
	return n, nil
}

// XfrmState is one kernel SA.
type XfrmState struct {
	Src, Dst string
	SPI      string
	Bytes    uint64
}

var (
	xfrmHead  = regexp.MustCompile(`(?m)^src (\S+) dst (\S+)\s*\n\s*proto esp spi (0x[0-9a-f]+)`)
	xfrmBytes = regexp.MustCompile(`(?m)^\s*(\d+)\(bytes\), \d+\(packets\)`)
)

// Xfrm lists the ESP SAs in a site's namespace.
func (l *Lab) Xfrm(ctx context.Context, name string) ([]XfrmState, error) {
	out, err := Run(ctx, "ip", "-n", l.Sites[name].NS, "-s", "xfrm", "state")
	if err != nil {
		return nil, err
	}
	var res []XfrmState
	for _, block := range regexp.MustCompile(`(?m)^src `).Split(out, -1)[1:] {
		block = "src " + block
		h := xfrmHead.FindStringSubmatch(block)
		if h == nil {
			continue
		}
		st := XfrmState{Src: h[1], Dst: h[2], SPI: h[3]}
		if b := xfrmBytes.FindAllStringSubmatch(block, -1); len(b) > 0 {
			// The "stats" section's lifetime current line comes last.
			st.Bytes, _ = strconv.ParseUint(b[len(b)-1][1], 10, 64)
		}
		res = append(res, st)
	}
	return res, nil
}

// Links returns the meshwan GRE links of a site and their ifindexes.
func (l *Lab) Links(ctx context.Context, name string) (map[string]string, error) {
	out, err := Run(ctx, "ip", "-n", l.Sites[name].NS, "-o", "link", "show", "type", "gre")
	if err != nil {
		return nil, err
	}
	res := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(\d+): (mw-[^:@]+)[@:]`).FindAllStringSubmatch(out, -1) {
		res[m[2]] = m[1]
	}
	return res, nil
}

// WANCounters returns the packets of GRE and ESP the WAN router forwarded.
func (l *Lab) WANCounters(ctx context.Context) (gre, esp uint64, err error) {
	out, err := Run(ctx, "ip", "netns", "exec", wanNS, "nft", "list", "chain", "ip", "mwlab", "counted")
	if err != nil {
		return 0, 0, err
	}
	for _, m := range regexp.MustCompile(`ip protocol (gre|esp) counter packets (\d+)`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.ParseUint(m[2], 10, 64)
		if m[1] == "gre" {
			gre = n
		} else {
			esp = n
		}
	}
	return gre, esp, nil
}

// SetWAN brings a site's (first) WAN link up or down (in the WAN router).
func (l *Lab) SetWAN(ctx context.Context, name string, up bool) error {
	return l.SetTransport(ctx, name, l.Sites[name].Transports[0].Name, up)
}

// SetTransport brings one of a site's WAN links up or down, at the WAN
// router's end (the site still sees its own end up, as with a failed
// line behind a modem).
func (l *Lab) SetTransport(ctx context.Context, site, transport string, up bool) error {
	t, err := l.transport(site, transport)
	if err != nil {
		return err
	}
	state := "down"
	if up {
		state = "up"
	}
	_, err = Run(ctx, "ip", "-n", wanNS, "link", "set", t.RouterDev, state)
	return err
}

func (l *Lab) transport(site, transport string) (*Transport, error) {
	s, ok := l.Sites[site]
	if !ok {
		return nil, fmt.Errorf("lab: no site %q", site)
	}
	t := s.Transport(transport)
	if t == nil {
		return nil, fmt.Errorf("lab: site %s has no transport %q", site, transport)
	}
	return t, nil
}

// EdgeLog returns a site's agent log.
func (l *Lab) EdgeLog(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, name, "edge.log"))
	return string(b)
}

// RouteToHost lets the sites reach the VM's user-mode network (the host at
// 10.0.2.2): the WAN router sends everything else to the root namespace,
// which forwards it out of eth0 masqueraded as the guest's own address.
func (l *Lab) RouteToHost(ctx context.Context) error {
	if err := batch(ctx, wanNS, "route add default via "+ControllerAddr.String()); err != nil {
		return err
	}
	if _, err := Run(ctx, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	_, err := Run(ctx, "nft", "add table ip mwlabnat; add chain ip mwlabnat post { type nat hook postrouting priority 100; }; "+
		"add rule ip mwlabnat post oifname eth0 masquerade")
	return err
}

// StartFRR runs FRR (zebra + bgpd, Debian's frr) on a site's LAN host as a
// third-party BGP router with AS asn, peering with the site's edge (at the
// LAN's .1, the edge's own ASN edgeASN). Its processes end with the lab's
// namespaces; its files live in /run/frr-<site>.
func (l *Lab) StartFRR(ctx context.Context, name string, asn, edgeASN uint32) error {
	s := l.Sites[name]
	dir := "/run/frr-" + name
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	edgeAddr := s.LAN.Addr().Next()
	conf := fmt.Sprintf(`frr defaults traditional
hostname lan-%s
log file %s/frr.log
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor %s remote-as %d
 neighbor %s timers 3 9
 neighbor %s timers connect 5
 address-family ipv4 unicast
  network 192.168.77.0/24
 exit-address-family
`, name, dir, asn, s.Host, edgeAddr, edgeASN, edgeAddr, edgeAddr)
	files := map[string]string{"bgpd.conf": conf, "zebra.conf": "hostname lan-" + name + "\n"}
	for f, c := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			return err
		}
	}
	if _, err := Run(ctx, "chown", "-R", "frr:frr", dir); err != nil {
		return err
	}
	for _, d := range []string{"zebra", "bgpd"} {
		script := fmt.Sprintf("mount -t tmpfs none /var/tmp && exec /usr/lib/frr/%s -u frr -g frr -P 0 -i %s/%s.pid -z %s/zserv.api --vty_socket %s -f %s/%s.conf",
			d, dir, d, dir, dir, dir, d)
		cmd := exec.Command("ip", "netns", "exec", s.LANNS, "sh", "-c", script)
		logf, err := os.OpenFile(filepath.Join(l.Dir, name, d+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return err
		}
		go func() { cmd.Wait(); logf.Close() }() // ends when Destroy removes the namespace's processes below
		l.mu.Lock()
		l.frr = append(l.frr, cmd)
		l.mu.Unlock()
		if d == "zebra" {
			// bgpd needs zebra's socket.
			deadline := time.Now().Add(time.Minute)
			for {
				if _, err := os.Stat(dir + "/zserv.api"); err == nil {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("zebra on %s did not start; see %s", s.LANNS, logf.Name())
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return nil
}

// RouteDev returns the device the kernel in a site's namespace picks for
// dst (`ip route get DST [extra...]`, e.g. extra "mark", "0x10" or "from",
// ADDR, "iif", "lan0").
func (l *Lab) RouteDev(ctx context.Context, site string, dst netip.Addr, extra ...string) (string, error) {
	out, err := Run(ctx, "ip", append([]string{"-n", l.Sites[site].NS, "route", "get", dst.String()}, extra...)...)
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`\bdev (\S+)`).FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("ip route get %s in %s: no device in %q", dst, site, out)
	}
	return m[1], nil
}

// LinkCounters are a link's kernel packet counters.
type LinkCounters struct {
	RxPackets, TxPackets uint64
}

// GRECounters returns the packet counters of a site's GRE links by name.
func (l *Lab) GRECounters(ctx context.Context, site string) (map[string]LinkCounters, error) {
	out, err := Run(ctx, "ip", "-j", "-s", "-n", l.Sites[site].NS, "link", "show", "type", "gre")
	if err != nil {
		return nil, err
	}
	var links []struct {
		Name  string `json:"ifname"`
		Stats struct {
			Rx struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
			Tx struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("ip -j link in %s: %w", site, err)
	}
	res := map[string]LinkCounters{}
	for _, k := range links {
		res[k.Name] = LinkCounters{RxPackets: k.Stats.Rx.Packets, TxPackets: k.Stats.Tx.Packets}
	}
	return res, nil
}

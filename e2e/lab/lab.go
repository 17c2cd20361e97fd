// Package lab builds a small WAN of network namespaces on one Linux kernel
// for meshwan's end-to-end tests and for `make lab`:
//
//	root ns (controller 192.0.2.1) --veth-- ns "mw-wan" (router) --veth-- ns "mw-s-<site>" (edge) --veth-- ns "mw-l-<site>" (LAN host)
//
// Site i has WAN address 198.51.100.(4i+2)/30 (gateway .(4i+1) in the WAN
// router) and LAN 10.(100+i).0.0/24 (edge .1, host .2). Every site runs its
// own meshwan-edge with its own charon. It shells out to iproute2 and nft,
// batching commands because each invocation is slow in the emulated VM.
package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	WAN   netip.Addr
	LAN   netip.Prefix
	Host  netip.Addr // the LAN host's address
	NS    string     // the edge router's namespace
	LANNS string     // the LAN host's namespace

	StateDir, RunDir string
	charonStop       context.CancelFunc
	charonDone       chan struct{}
	edge             *exec.Cmd
	edgeDone         chan struct{}
	logFile          *os.File
}

// Lab is a running lab.
type Lab struct {
	Dir     string
	EdgeBin string
	Sites   map[string]*Site
	Order   []string
	Logf    func(format string, args ...any)
	mu      sync.Mutex
	frr     []*exec.Cmd
}

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

// New builds the WAN, the controller link and one namespace pair per site.
func New(ctx context.Context, dir, edgeBin string, names ...string) (*Lab, error) {
	l := &Lab{Dir: dir, EdgeBin: edgeBin, Sites: map[string]*Site{}, Logf: func(string, ...any) {}}
	Destroy(ctx) // leftovers of an earlier run
	root := []string{
		"netns add " + wanNS,
		"link add mw-ctl type veth peer name ctl0 netns " + wanNS,
		"addr add 192.0.2.1/30 dev mw-ctl",
		"link set mw-ctl up",
		"route add 198.51.100.0/24 via 192.0.2.2",
	}
	wan := []string{"link set lo up", "addr add 192.0.2.2/30 dev ctl0", "link set ctl0 up"}
	for i, name := range names {
		s := &Site{
			Name: name, Index: i,
			WAN:  netip.AddrFrom4([4]byte{198, 51, 100, byte(4*i + 2)}),
			LAN:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i), 0, 0}), 24),
			Host: netip.AddrFrom4([4]byte{10, byte(100 + i), 0, 2}),
			NS:   "mw-s-" + name, LANNS: "mw-l-" + name,
			StateDir: filepath.Join(dir, name, "state"), RunDir: filepath.Join("/run", "mw-"+name),
		}
		gw := netip.AddrFrom4([4]byte{198, 51, 100, byte(4*i + 1)})
		l.Sites[name], l.Order = s, append(l.Order, name)
		root = append(root,
			"netns add "+s.NS, "netns add "+s.LANNS,
			fmt.Sprintf("link add w%d netns %s type veth peer name eth0 netns %s", i, wanNS, s.NS),
			fmt.Sprintf("link add lan0 netns %s type veth peer name eth0 netns %s", s.NS, s.LANNS),
		)
		wan = append(wan, fmt.Sprintf("addr add %s/30 dev w%d", gw, i), fmt.Sprintf("link set w%d up", i))
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
	for _, name := range names {
		s := l.Sites[name]
		gw := s.WAN.Prev()
		if err := batch(ctx, s.NS, "link set lo up",
			"addr add "+s.WAN.String()+"/30 dev eth0", "link set eth0 up", "route add default via "+gw.String(),
			"addr add "+s.LAN.Addr().Next().String()+"/24 dev lan0", "link set lan0 up"); err != nil {
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
	args := append([]string{"netns", "exec", s.NS, l.EdgeBin, "--controller", controller, "--state-dir", s.StateDir,
		"--wan-interface", "eth0", "--log-level", "debug"}, charon...)
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

// Close stops every agent, charon and FRR and removes the namespaces.
func (l *Lab) Close(ctx context.Context) {
	l.mu.Lock()
	for _, c := range l.frr {
		c.Process.Kill()
	}
	l.mu.Unlock()
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

// SetWAN brings a site's WAN link up or down (in the WAN router).
func (l *Lab) SetWAN(ctx context.Context, name string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	_, err := Run(ctx, "ip", "-n", wanNS, "link", "set", fmt.Sprintf("w%d", l.Sites[name].Index), state)
	return err
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

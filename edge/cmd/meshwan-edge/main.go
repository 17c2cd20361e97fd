// Command meshwan-edge is the meshwan agent for a site router: it enrolls
// with the controller once, then keeps one Sync stream and builds the
// site's GRE-over-IPsec tunnels (netlink, strongSwan over VICI, nftables)
// from the desired state it receives.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"net"
	"net/http"
	"net/netip"

	"github.com/meshwan/meshwan/edge/agent"
	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/config"
	"github.com/meshwan/meshwan/edge/dataplane/firewall"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/identity"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/steer"
	"github.com/meshwan/meshwan/edge/syncer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netns"
)

const defaultConfig = "/etc/meshwan/edge.yaml"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type flags struct {
	controller, token, caHash, site, stateDir string
	insecure, cleanup                         bool
	wan                                       string
	transports                                string
	viciSocket, charonRunDir                  string
	lanPeers                                  string
	logLevel                                  string
	metricsListen, probeListen                string
	claimToken, deviceID                      string
	greGRO                                    bool
}

func main() {
	var f flags
	flag.StringVar(&f.controller, "controller", "", "controller gRPC address HOST:PORT (required)")
	flag.StringVar(&f.token, "token", "", "one-time enrollment token (first start only)")
	flag.StringVar(&f.caHash, "ca-hash", "", "SHA-256 of the controller CA, shown with the token (first start only)")
	flag.BoolVar(&f.insecure, "insecure-skip-ca-verify", false, "enroll without pinning the controller CA (labs only)")
	flag.StringVar(&f.site, "site", "", "site to enroll as, when the token is not bound to one")
	flag.StringVar(&f.stateDir, "state-dir", "/var/lib/meshwan", "directory for the identity and the cached desired state")
	flag.StringVar(&f.wan, "wan-interface", "", "comma-separated WAN interfaces (for the firewall permits); empty matches any")
	flag.StringVar(&f.transports, "transport", "", "comma-separated NAME=IFACE: the interface of each WAN transport, as named in the site's declaration (inet1=eth0,lte=wwan0); its address is reported for transports declared dynamic, and behind NAT tunnels run from it (docs/nat.md)")
	flag.StringVar(&f.viciSocket, "vici-socket", "/var/run/charon.vici", "VICI socket of the system charon (ignored with --charon-run-dir)")
	flag.StringVar(&f.charonRunDir, "charon-run-dir", "", "start and supervise a private charon with this run directory (tmpfs) instead of using the system one")
	flag.StringVar(&f.lanPeers, "bgp-lan-peer", "", "comma-separated IPV4:ASN of LAN routers to peer with when the controller enables BGP (they learn the overlay's routes)")
	flag.BoolVar(&f.cleanup, "cleanup", false, "remove every link, rule, connection and route meshwan created, then exit")
	flag.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.StringVar(&f.metricsListen, "metrics-listen", "127.0.0.1:7403", "serve Prometheus metrics on this address (/metrics); empty disables")
	flag.StringVar(&f.probeListen, "probe-listen", "0.0.0.0:7402", "UDP address the probe reflector answers on (the far ends probe port 7402)")
	flag.BoolVar(&f.greGRO, "gre-gro", true, "generic receive offload on meshwan's GRE links (the kernel's default; --gre-gro=false turns it off at a measured ×0.8 of the TCP throughput, see docs/edge.md)")
	flag.StringVar(&f.claimToken, "claim-token", "", "fleet claim token (zero-touch: the box waits until an admin approves its device id)")
	flag.StringVar(&f.deviceID, "device-id", "", "device identity presented with --claim-token (default: hardware serial, else machine-id)")
	configPath := flag.String("config", defaultConfig, "configuration file with the same settings as the flags (keys are flag names); flags given here win")
	flag.Parse()
	explicit := false
	flag.Visit(func(fl *flag.Flag) { explicit = explicit || fl.Name == "config" })
	if err := config.Apply(flag.CommandLine, *configPath, explicit); err != nil {
		fatal(2, "%v", err)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		fatal(2, "--log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f, log); err != nil && !errors.Is(err, context.Canceled) {
		fatal(1, "%v", err)
	}
}

func fatal(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "meshwan-edge: "+format+"\n", args...)
	os.Exit(code)
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	viciPath := f.viciSocket
	if f.charonRunDir != "" {
		dir, err := filepath.Abs(f.charonRunDir)
		if err != nil {
			return err
		}
		ch, err := ipsec.NewCharon(ipsec.CharonConfig{RunDir: dir, Logger: log})
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := ch.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("charon supervisor stopped", "err", err)
			}
		})
		readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
		err = ch.WaitReady(readyCtx)
		readyCancel()
		if err != nil {
			return fmt.Errorf("charon did not start: %w (log: %s)", err, ch.LogPath())
		}
		viciPath = ch.SocketPath()
	}
	h, err := kernel.NewNetlinkHandle(netns.None())
	if err != nil {
		return err
	}
	defer h.Close()
	lanPeers, err := agent.ParseLANPeers(f.lanPeers)
	if err != nil {
		return err
	}
	im := ipsec.NewManager(func(ctx context.Context) (ipsec.Session, error) { return ipsec.Dial(ctx, viciPath) }, ipsec.Options{Logger: log})
	defer im.Close()
	probeAddr, err := netip.ParseAddrPort(f.probeListen)
	if err != nil {
		return fmt.Errorf("--probe-listen: %w", err)
	}
	sk, err := steer.NewKernel(steer.KernelOptions{Logger: log, Netlink: h,
		NFT: func() (kernel.NFT, error) { return kernel.NewNFT(-1) }})
	if err != nil {
		return err
	}
	// One owner of kernel state (edge/agent): the firewall, links,
	// routes and steering are written by its goroutine only; charon and
	// GoBGP are driven by its workers, never awaited by it.
	a := agent.New(agent.Config{
		StateDir: f.stateDir, Logger: log, WANInterfaces: splitList(f.wan),
		Firewall: firewall.NewManager(func() (kernel.NFT, error) { return kernel.NewNFT(-1) },
			firewall.Options{Logger: log, ProbePort: probeAddr.Port(), BGPLANPeers: lanPeerAddrs(lanPeers)}),
		Links:    link.NewManager(h, link.Options{Logger: log, NoGRO: !f.greGRO}),
		Steering: sk,
		IPsec:    im,
		SAs:      ipsec.KernelSAs,
		BGP: func(ctx context.Context, c agent.BGPStart) (agent.Speaker, error) {
			return bgp.Start(ctx, bgp.Config{ASN: c.ASN, RouterID: c.RouterID, Logger: log, OnRIB: c.OnRIB, Restarting: c.Restarting})
		},
		LANPeers:        lanPeers,
		ListenReflector: func(ctx context.Context) (probe.PacketConn, error) { return probe.ListenUDP(ctx, probeAddr) },
	})
	if f.cleanup {
		if err := a.Cleanup(ctx); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		log.Info("cleanup done")
		return nil
	}
	if f.controller == "" {
		return errors.New("--controller is required")
	}

	id, err := identity.Load(f.stateDir)
	if errors.Is(err, identity.ErrNotEnrolled) && f.token == "" && f.claimToken != "" {
		dev := f.deviceID
		if dev == "" {
			if dev, err = identity.DeviceID("/"); err != nil {
				return err
			}
		}
		host, _ := os.Hostname()
		log.Info("claiming: waiting for an admin to approve this device", "device_id", dev, "controller", f.controller)
		pending := 0
		id, err = identity.Claim(ctx, f.stateDir, identity.ClaimOptions{Controller: f.controller, ClaimToken: f.claimToken, DeviceID: dev,
			Hostname: host, CAHash: f.caHash, Insecure: f.insecure, OnPending: func() {
				if pending++; pending == 1 {
					log.Info("device pending approval", "device_id", dev, "public_key_sha256", identity.KeyFingerprint(f.stateDir))
				}
			}})
		if err != nil {
			return err
		}
		log.Info("claimed", "site", id.Site, "device_id", dev)
	} else if errors.Is(err, identity.ErrNotEnrolled) {
		if f.token == "" {
			return fmt.Errorf("not enrolled yet (no identity in %s): pass --token and --ca-hash, or --claim-token and --ca-hash", f.stateDir)
		}
		enrollCtx, enrollCancel := context.WithTimeout(ctx, time.Minute)
		id, err = identity.Enroll(enrollCtx, f.stateDir, identity.EnrollOptions{Controller: f.controller, Token: f.token, Site: f.site, CAHash: f.caHash, Insecure: f.insecure})
		enrollCancel()
		if err != nil {
			return err
		}
		log.Info("enrolled", "site", id.Site)
	} else if err != nil {
		return fmt.Errorf("identity: %w", err)
	}

	// The cached state is the base of the controller's first delta, and
	// its hash spares a reconnect the transfer of an unchanged state.
	var initial *syncer.State
	if st, ok, err := a.LoadCache(); err == nil && ok {
		initial = &st
	}
	renew := func(ctx context.Context, cur *identity.Identity) (*identity.Identity, error) {
		return identity.Renew(ctx, f.stateDir, f.controller, cur)
	}
	transports, err := parseTransports(f.transports)
	if err != nil {
		return err
	}
	s, err := syncer.New(syncer.Config{Controller: f.controller, Identity: id, AgentVersion: version, Applied: a.Applied, Initial: initial, Logger: log, Renew: renew,
		Transports: transportAddrs(transports, log)})
	if err != nil {
		return err
	}
	if f.metricsListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if err := agent.RegisterMetrics(reg, a); err != nil {
			return err
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshwan_edge_cert_expiry_timestamp_seconds",
			Help: "When this edge's certificate expires (Unix time); it is renewed at 2/3 of its lifetime."},
			func() float64 { return float64(s.Identity().NotAfter().Unix()) }))
		ln, err := net.Listen("tcp", f.metricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			_ = srv.Close()
		})
	}
	log.Info("meshwan-edge starting", "site", id.Site, "version", version, "controller", f.controller)
	errc := make(chan error, 2)
	wg.Go(func() { errc <- s.Run(ctx) })
	wg.Go(func() { errc <- a.Run(ctx, s.Updates(), s.Report) })
	err = <-errc
	cancel()
	if errors.Is(err, syncer.ErrPermanent) {
		return fmt.Errorf("%w; re-enroll: remove %s/edge.crt and start with a new --token (or --claim-token)", err, f.stateDir)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseTransports reads --transport: NAME=IFACE pairs, each name once.
func parseTransports(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range splitList(s) {
		name, iface, ok := strings.Cut(p, "=")
		if !ok || name == "" || iface == "" {
			return nil, fmt.Errorf("--transport: %q is not NAME=IFACE", p)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("--transport: transport %q given twice", name)
		}
		out[name] = iface
	}
	return out, nil
}

// transportAddrs returns the syncer's view of the transports: each
// interface's first global unicast IPv4 address, read when asked (at
// every connection and every desired state), so an address a DHCP or PPP
// client changes is followed. An interface without one is left out (and
// logged); nil when no transport is configured.
func transportAddrs(ifaces map[string]string, log *slog.Logger) func() map[string]netip.Addr {
	if len(ifaces) == 0 {
		return nil
	}
	return func() map[string]netip.Addr {
		out := map[string]netip.Addr{}
		for name, dev := range ifaces {
			a, err := ifaceAddr(dev)
			if err != nil {
				log.Warn("transport interface has no usable address", "transport", name, "interface", dev, "err", err)
				continue
			}
			out[name] = a
		}
		return out
	}
}

func ifaceAddr(dev string) (netip.Addr, error) {
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		return netip.Addr{}, err
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, errors.New("no global unicast IPv4 address")
}

// lanPeerAddrs are the LAN BGP peers' addresses: the firewall lets them
// reach TCP 179.
func lanPeerAddrs(ns []bgp.Neighbor) []netip.Addr {
	out := make([]netip.Addr, 0, len(ns))
	for _, n := range ns {
		out = append(out, n.Addr)
	}
	return out
}

// Package daemon assembles a running controller from its parts: the store
// (embedded etcd or an external cluster), secrets, CA, network API, push
// hub, gRPC and HTTP servers, and the background reconcile loop. The
// binary's main only parses flags into a Config and calls Run; tests call
// Start to get a live controller on loopback.
package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/controller/api"
	"github.com/meshwan/meshwan/controller/credentials"
	"github.com/meshwan/meshwan/controller/enroll"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/keys"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/push"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/web"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Config is the controller's process configuration (flags).
type Config struct {
	DataDir        string
	EtcdEndpoints  []string // empty: embedded etcd in DataDir/etcd
	Etcd           store.ClientOptions
	GRPCListen     string
	HTTPListen     string
	TunnelPool     string
	ASNPool        string
	MasterKeyFile  string // default DataDir/master.key
	AdminTokenFile string // default DataDir/admin.token
	TLSNames       []string
	Logger         *slog.Logger
	// ReportSummaryPeriod: a connected edge's report is written to etcd
	// when its state changes and otherwise at most this often (0: 30 s).
	// Between writes this process serves the latest report from memory.
	ReportSummaryPeriod time.Duration
	// UnsafeNoFsync is for tests only.
	UnsafeNoFsync bool
	// DashboardNoAuth serves the dashboard without login (lab only): anyone
	// who reaches the HTTP port can view the network and change it through
	// the page (REST calls carrying the dashboard's CSRF header need no
	// token).
	DashboardNoAuth bool
	// PProf serves Go's profiles under /debug/pprof/ (admin token needed).
	PProf bool
	// EdgeCertValidity is the lifetime of edge certificates (0: 1 year);
	// edges renew at 2/3 of it.
	EdgeCertValidity time.Duration
	// ServerCertValidity is the lifetime of the controller's own TLS
	// certificate (0: 1 year); it is re-issued at 2/3 of it.
	ServerCertValidity time.Duration
	// PendingDeviceTTL: a claimed device not approved is forgotten this
	// long after its last claim (0: 24 h).
	PendingDeviceTTL time.Duration
	// PSKRotationInterval rotates every tunnel key older than this,
	// make-before-break, a few at a time (0: only on demand).
	PSKRotationInterval time.Duration
	// PSKRotationTick is how often rotations in progress are looked at
	// (0: 1 s; tests shorten it).
	PSKRotationTick time.Duration

	// Admin surface (issue 11).
	// HTTPPlaintext serves --http-listen as plain HTTP even on a
	// non-loopback address (behind a TLS-terminating proxy; session cookies
	// stay Secure). Without it the port serves HTTPS with the controller's
	// certificate, unless HTTPListen is a loopback address (nothing
	// off-host reaches it).
	HTTPPlaintext bool
}

// Daemon is a running controller.
type Daemon struct {
	GRPCAddr net.Addr
	HTTPAddr net.Addr
	// HTTPURL is the base URL of the HTTP port (https:// unless plain).
	HTTPURL     string
	AdminToken  string
	Credentials *credentials.Service
	CAPEM       []byte
	Net         *network.Network
	Health      *health.Registry
	Hub         *push.Hub
	Enroll      *enroll.Service
	Events      *Events

	dash       *dashboardSource
	serverCert atomic.Pointer[tls.Certificate]
	log        *slog.Logger
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closers    []func()
	grpc       *grpc.Server
	http       *http.Server
	// closing is closed by Close first, to end the Sync streams.
	closing chan struct{}
	errc    chan error
}

// Run starts the controller and blocks until ctx ends or a server fails.
func Run(ctx context.Context, cfg Config) error {
	d, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err = <-d.errc:
	}
	d.Close()
	return err
}

// Start brings the controller up and returns once it serves.
func Start(ctx context.Context, cfg Config) (_ *Daemon, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pool, err := ipam.ParsePool30(cfg.TunnelPool)
	if err != nil {
		return nil, fmt.Errorf("--tunnel-pool: %w", err)
	}
	asns, err := ipam.ParseASNRange(cfg.ASNPool)
	if err != nil {
		return nil, fmt.Errorf("--asn-pool: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	d := &Daemon{log: log, errc: make(chan error, 4), Events: NewEvents(200)}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	var cli *clientv3.Client
	if len(cfg.EtcdEndpoints) == 0 && cfg.Etcd != (store.ClientOptions{}) {
		// Ignoring them would run an embedded etcd where the operator
		// meant a secured external one.
		return nil, errors.New("--etcd-ca, --etcd-cert, --etcd-key, --etcd-user and --etcd-password-file need --etcd-endpoints")
	}
	if len(cfg.EtcdEndpoints) == 0 {
		e, err := store.StartEmbedded(ctx, filepath.Join(cfg.DataDir, "etcd"), store.EmbeddedOptions{UnsafeNoFsync: cfg.UnsafeNoFsync, Logger: log})
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, e.Close)
		log.Info("embedded etcd started", "endpoint", e.Endpoint)
		if cli, err = e.Client(); err != nil {
			return nil, err
		}
	} else if cli, err = store.NewClient(cfg.EtcdEndpoints, cfg.Etcd, log); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { cli.Close() })
	st := store.New(cli, "")

	keyFile := orDefault(cfg.MasterKeyFile, filepath.Join(cfg.DataDir, "master.key"))
	key, created, err := secrets.LoadOrCreateMasterKey(keyFile)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("master key created; back it up: without it the stored PSKs and CA key cannot be opened", "path", keyFile)
	}
	sealer, err := secrets.NewSealer(key)
	if err != nil {
		return nil, err
	}
	if d.AdminToken, err = loadOrCreateToken(orDefault(cfg.AdminTokenFile, filepath.Join(cfg.DataDir, "admin.token"))); err != nil {
		return nil, err
	}
	d.Credentials = credentials.New(st, d.AdminToken, log)
	if err := d.Credentials.Load(ctx); err != nil {
		return nil, err
	}
	ca, err := enroll.LoadOrCreateCA(ctx, st, sealer)
	if err != nil {
		return nil, err
	}
	d.CAPEM = ca.PEM
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "ca.crt"), ca.PEM, 0o644); err != nil {
		return nil, err
	}

	d.Net = network.New(network.Config{Store: st, TunnelPool: pool, ASNs: asns, Sealer: sealer, Logger: log, EdgeKey: enroll.EdgeKey})
	d.Health = health.New(st, health.Config{SummaryPeriod: cfg.ReportSummaryPeriod, Logger: log})
	d.Enroll = enroll.NewService(st, ca, enroll.Config{SiteKey: network.SiteKey, EdgeCertValidity: cfg.EdgeCertValidity, PendingTTL: cfg.PendingDeviceTTL})
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	if err := d.Net.Start(runCtx); err != nil {
		return nil, fmt.Errorf("load the network from the store: %w", err)
	}
	// Before any edge is served: keep the ESP proposal a network stored
	// by an older version runs with (PFS became the default; a changed
	// proposal re-keys every tunnel, docs/ipsec.md).
	if pinned, err := d.Net.PinPreviousDefaults(ctx); err != nil {
		return nil, fmt.Errorf("record the intent schema: %w", err)
	} else if pinned {
		msg := "the topology used the default ESP proposal of an older version; kept as esp_proposal " + intent.PreviousESPProposal + " (no PFS) so the upgrade re-keys nothing: set esp_proposal " + intent.DefaultESPProposal + " in a maintenance window to enable PFS"
		log.Warn(msg)
		d.Events.Add(msg)
	}
	// What an older version stored under looser rules: edges refuse the
	// states it produces, so say so here, not only in their logs.
	for _, err := range d.Net.Audit() {
		log.Error("stored intent breaks the validation rules: the edges concerned refuse their new states until it is fixed (UpdateSite or a network apply)", "err", err)
		d.Events.Add("stored intent refused by today's rules: " + err.Error())
	}
	// Not an error (hub-and-spoke routes such spokes through a hub), but
	// in a full mesh these sites do not reach each other: say it once.
	if u := d.Net.Unjoined(); len(u) > 0 {
		log.Warn("site pairs the topology connects get no tunnel: every transport pair between them is dynamic at both ends (see GetTopology's unjoined, docs/nat.md)",
			"pairs", len(u), "first", fmt.Sprintf("%s~%s", u[0].A, u[0].B))
	}
	d.Hub = push.New(d.Net, log)
	admin := &api.Admin{Net: d.Net, Enroll: d.Enroll, Health: d.Health, Credentials: d.Credentials, Log: log, OnChange: d.Events.Add}
	d.closing = make(chan struct{})
	edge := &api.Edge{Net: d.Net, Enrollment: d.Enroll, Health: d.Health, Hub: d.Hub, Log: log, OnEvent: d.Events.Add, Closing: d.closing}

	httpTLS := !cfg.HTTPPlaintext && !loopback(cfg.HTTPListen)
	d.dash = &dashboardSource{d: d, st: st, ctx: runCtx}
	dash, err := web.New(web.Config{Source: d.dash,
		Token: d.AdminToken, NoAuth: cfg.DashboardNoAuth, Logger: log,
		// Secure unless the port is loopback-only: behind --http-plaintext a
		// TLS proxy faces the browser (and a plain-HTTP browser gets no
		// session to leak).
		SecureCookies: !loopback(cfg.HTTPListen),
		Login: func(tok string) (web.Identity, bool) {
			p, err := d.Credentials.Authenticate(tok)
			return web.Identity{ID: p.ID, Name: p.Name, Role: p.Role.String()}, err == nil
		},
		Usable: d.Credentials.Usable})
	if err != nil {
		return nil, err
	}
	if cfg.DashboardNoAuth {
		log.Warn("dashboard login disabled (--dashboard-no-auth): anyone who reaches the HTTP port can see and change the network through the dashboard; lab use only")
	}

	names, ips := tlsNames(cfg.TLSNames)
	issue := func() error {
		cert, err := ca.IssueServer(names, ips, cfg.ServerCertValidity)
		if err == nil {
			d.serverCert.Store(&cert)
		}
		return err
	}
	if err := issue(); err != nil {
		return nil, err
	}
	// Browser requests authenticate with the dashboard's session cookie,
	// with the role of the credential the session was made with.
	auth := api.Auth{Authenticate: d.Credentials.Authenticate, Log: log, Session: func(r *http.Request) (credentials.Principal, bool) {
		id, ok := dash.Session(r)
		if !ok {
			return credentials.Principal{}, false
		}
		role, err := credentials.ParseRole(id.Role)
		return credentials.Principal{ID: id.ID, Name: "dashboard session of " + id.ID, Role: role}, err == nil
	}}
	gs, hs := api.NewGRPCServer(d.serverCert.Load, ca, auth, admin, edge)
	d.grpc = gs
	glis, err := net.Listen("tcp", cfg.GRPCListen)
	if err != nil {
		return nil, fmt.Errorf("--grpc-listen: %w", err)
	}
	d.GRPCAddr = glis.Addr()

	// REST reaches the gRPC server over an in-memory connection, so the
	// same interceptors authorize it (see controller/api/gateway.go).
	inproc := api.NewInproc()
	gwConn, err := api.DialGateway(inproc, ca.Pool())
	if err != nil {
		glis.Close()
		return nil, err
	}
	d.closers = append(d.closers, func() { gwConn.Close() })
	gw, err := api.NewGateway(runCtx, gwConn, auth)
	if err != nil {
		glis.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	mux.Handle("/metrics", metricsHandler(d, len(cfg.EtcdEndpoints) == 0))
	if cfg.PProf {
		mux.Handle("/debug/pprof/", auth.RequireRole(credentials.Admin, pprofHandler()))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if _, err := d.Net.GetTopology(ctx); err != nil {
			http.Error(w, "store unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/", dash)
	hlis, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		glis.Close()
		return nil, fmt.Errorf("--http-listen: %w", err)
	}
	d.HTTPAddr = hlis.Addr()
	// TLS handshake failures (scanners, a browser refusing the CA) go to
	// the controller's log at debug level, not to stderr.
	d.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	d.HTTPURL = "http://" + d.HTTPAddr.String()
	if httpTLS {
		d.HTTPURL = "https://" + d.HTTPAddr.String()
		d.http.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return d.serverCert.Load(), nil }}
	} else if cfg.HTTPPlaintext && !loopback(cfg.HTTPListen) {
		log.Warn("HTTP port serves plain HTTP (--http-plaintext): admin tokens and dashboard sessions cross the network in the clear unless a TLS proxy fronts it", "http", d.HTTPAddr.String())
	}
	d.http.RegisterOnShutdown(dash.CloseStreams) // event streams never go idle

	// Converge tunnels left half-done by a crash before serving.
	if err := d.Net.Reconcile(ctx); err != nil {
		glis.Close()
		hlis.Close()
		return nil, fmt.Errorf("initial reconcile: %w", err)
	}
	d.wg.Go(func() { d.rotateServerCert(runCtx, issue) })
	d.wg.Go(func() { d.Health.Run(runCtx) })
	d.wg.Go(func() {
		if err := d.Credentials.Run(runCtx); err != nil && runCtx.Err() == nil {
			d.errc <- fmt.Errorf("credentials watch: %w", err)
		}
	})
	d.wg.Go(func() { d.Hub.Run(runCtx) })
	rot := keys.New(keys.Config{Net: d.Net, Loaded: keys.HealthSerials(d.Health), Interval: cfg.PSKRotationInterval,
		Tick: cfg.PSKRotationTick, OnEvent: d.Events.Add, Logger: log})
	d.wg.Go(func() { rot.Run(runCtx) })
	d.wg.Go(func() {
		if err := d.Enroll.Run(runCtx); err != nil && runCtx.Err() == nil {
			d.errc <- fmt.Errorf("enrollment watch: %w", err)
		}
	})
	recon := d.Net.Listen()
	d.wg.Go(func() { d.reconcileLoop(runCtx, recon) })
	d.wg.Go(func() { dash.Run(runCtx) })
	d.wg.Go(func() {
		if err := gs.Serve(glis); err != nil {
			d.errc <- fmt.Errorf("grpc server: %w", err)
		}
	})
	d.wg.Go(func() {
		if err := gs.Serve(inproc); err != nil {
			d.errc <- fmt.Errorf("grpc server (in-process, for REST): %w", err)
		}
	})
	d.wg.Go(func() {
		serve := d.http.Serve
		if httpTLS {
			serve = func(l net.Listener) error { return d.http.ServeTLS(l, "", "") }
		}
		if err := serve(hlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.errc <- fmt.Errorf("http server: %w", err)
		}
	})
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	log.Info("controller serving", "grpc", d.GRPCAddr.String(), "http", d.HTTPURL, "tunnel_pool", pool.Prefix().String())
	return d, nil
}

// reconcileLoop re-derives the tunnels of every site whose intent changed,
// whichever replica changed it, so a change half-applied by a crashed
// replica still converges. A change made through this process was
// reconciled by the call itself; finding nothing to do costs a derivation
// per changed site, not a read of the store.
func (d *Daemon) reconcileLoop(ctx context.Context, l *network.Listener) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.C():
		}
		ch := l.Take()
		var err error
		if ch.All {
			err = d.Net.Reconcile(ctx)
		} else if len(ch.Intent) > 0 {
			sites := make([]string, 0, len(ch.Intent))
			for s := range ch.Intent {
				sites = append(sites, s)
			}
			err = d.Net.ReconcileSites(ctx, sites...)
		}
		if err != nil && ctx.Err() == nil {
			d.log.Warn("reconcile failed", "err", err)
			time.AfterFunc(time.Second, func() { l.Poke(ch) })
		}
	}
}

// rotateServerCert re-issues the controller's TLS certificate at 2/3 of
// its lifetime (retrying every minute on failure); new handshakes get the
// new one, established connections keep theirs.
func (d *Daemon) rotateServerCert(ctx context.Context, issue func() error) {
	for {
		c := d.serverCert.Load()
		life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
		wait := time.Until(c.Leaf.NotBefore.Add(life * 2 / 3))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, time.Second)):
		}
		if err := issue(); err != nil {
			d.log.Error("rotate the controller's TLS certificate", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
			continue
		}
		d.log.Info("controller TLS certificate rotated", "not_after", d.serverCert.Load().Leaf.NotAfter)
	}
}

// ServerCertNotAfter is when the controller's current TLS certificate expires.
func (d *Daemon) ServerCertNotAfter() time.Time { return d.serverCert.Load().Leaf.NotAfter }

// Close stops everything Start started, in reverse order.
func (d *Daemon) Close() {
	if d.grpc != nil {
		stopped := make(chan struct{})
		close(d.closing) // Sync streams end now; unary calls finish
		go func() { d.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			d.grpc.Stop() // Sync streams never end on their own; edges reconnect
		}
	}
	if d.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d.http.Shutdown(ctx)
		cancel()
	}
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	if d.Net != nil {
		d.Net.Wait()
	}
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// loadOrCreateToken reads the admin token file or creates it (0600). A
// file readable by group or others is refused, like the master key: whoever
// reads it is admin.
func loadOrCreateToken(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("admin token %s has mode %04o: it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
		}
		tok := strings.TrimSpace(string(raw))
		if len(tok) < 16 {
			return "", fmt.Errorf("--admin-token-file %s: token shorter than 16 characters", path)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	b := make([]byte, 24)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	return tok, nil
}

// loopback reports whether addr (host:port) listens on a loopback address
// only: nothing off-host can reach it. An empty host means every interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsNames lists the names and addresses the server certificate covers:
// localhost, the host name, every local interface address, and extras.
func tlsNames(extra []string) ([]string, []net.IP) {
	names := []string{"localhost"}
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	var ips []net.IP
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ips = append(ips, n.IP)
			}
		}
	}
	for _, e := range extra {
		if ip := net.ParseIP(e); ip != nil {
			ips = append(ips, ip)
		} else if e != "" {
			names = append(names, e)
		}
	}
	return names, ips
}

// GRPCServices lists the services and methods the gRPC server registers
// (the authorization test checks every one against the method table).
func (d *Daemon) GRPCServices() map[string]grpc.ServiceInfo { return d.grpc.GetServiceInfo() }

// Command meshwan-controller runs the meshwan controller: the gRPC API for
// edges and admins, REST and the dashboard on HTTP, backed by an embedded
// etcd (default) or an external etcd cluster.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/controller/health"
)

func main() {
	var cfg daemon.Config
	var endpoints, tlsNames, logLevel string
	flag.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for the embedded etcd, master key, admin token and CA certificate")
	flag.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated external etcd endpoints; empty runs an embedded etcd in --data-dir")
	flag.StringVar(&cfg.Etcd.CAFile, "etcd-ca", "", "PEM CA bundle to verify the external etcd's server certificates (default with https:// endpoints: the system pool)")
	flag.StringVar(&cfg.Etcd.CertFile, "etcd-cert", "", "PEM client certificate for an external etcd with --client-cert-auth (needs --etcd-key)")
	flag.StringVar(&cfg.Etcd.KeyFile, "etcd-key", "", "PEM private key of --etcd-cert")
	flag.StringVar(&cfg.Etcd.Username, "etcd-user", "", "user for an external etcd with auth enabled (needs --etcd-password-file)")
	flag.StringVar(&cfg.Etcd.PasswordFile, "etcd-password-file", "", "file holding the password of --etcd-user (mode 0600; a file readable by group or others is refused)")
	flag.StringVar(&cfg.GRPCListen, "grpc-listen", ":7400", "gRPC listen address (edges and admin API, TLS)")
	flag.StringVar(&cfg.HTTPListen, "http-listen", ":8080", "HTTP listen address (REST under /v1, /metrics, /healthz, dashboard, /debug/pprof/ with --pprof); HTTPS unless loopback or --http-plaintext")
	flag.StringVar(&cfg.TunnelPool, "tunnel-pool", "10.255.0.0/16", "IPv4 prefix the tunnel /30s are allocated from")
	flag.StringVar(&cfg.ASNPool, "asn-pool", "4200000000-4200099999", "range site ASNs are allocated from")
	flag.StringVar(&cfg.MasterKeyFile, "master-key-file", "", "file holding the master key that seals PSKs and the CA key (default DATA-DIR/master.key; created 0600 if absent)")
	flag.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "file holding the bootstrap admin bearer token, role admin (default DATA-DIR/admin.token; created 0600 if absent; refused if group- or world-readable)")
	flag.StringVar(&tlsNames, "tls-san", "", "extra comma-separated DNS names or IPs for the controller's TLS certificate (the address edges dial)")
	flag.BoolVar(&cfg.DashboardNoAuth, "dashboard-no-auth", false, "serve the dashboard without login (lab only: anyone reaching --http-listen can see and change the network through it)")
	flag.DurationVar(&cfg.ReportSummaryPeriod, "report-summary-period", health.DefaultSummaryPeriod, "how often a connected edge's report is written to etcd while only its figures (RTT, loss, counters) change; state changes are written at once")
	flag.DurationVar(&cfg.EdgeCertValidity, "edge-cert-validity", 365*24*time.Hour, "lifetime of edge certificates; edges renew at 2/3 of it")
	flag.DurationVar(&cfg.ServerCertValidity, "server-cert-validity", 365*24*time.Hour, "lifetime of the controller's TLS certificate; re-issued at 2/3 of it without a restart")
	flag.DurationVar(&cfg.PendingDeviceTTL, "pending-device-ttl", 24*time.Hour, "how long a claimed device waiting for approval is remembered after its last claim")
	flag.DurationVar(&cfg.PSKRotationInterval, "psk-rotation-interval", 0, "rotate each tunnel's IPsec pre-shared key when it is older than this, make-before-break, a few tunnels at a time (0: only on demand; 720h is a sensible value)")
	flag.BoolVar(&cfg.PProf, "pprof", false, "serve Go's profiles under /debug/pprof/ on --http-listen (a credential with role admin required)")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error (the embedded etcd's own logs: warn and above)")
	// Admin surface (issue 11).
	flag.BoolVar(&cfg.HTTPPlaintext, "http-plaintext", false, "serve --http-listen as plain HTTP on a non-loopback address (behind a TLS proxy; logged as a warning). Default: HTTPS with the controller's certificate, plain HTTP only on a loopback address")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "meshwan-controller: --log-level: %v\n", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.EtcdEndpoints = splitList(endpoints)
	cfg.TLSNames = splitList(tlsNames)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "meshwan-controller: %v\n", err)
		os.Exit(1)
	}
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

package store

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClientOptions secures the connection to an external etcd. The zero value
// is a plain connection without credentials (what the embedded etcd's unix
// socket, inside the 0700 data directory, needs).
//
// Anyone who can write to meshwan's keys can rewrite intent and enrollment
// records, so an etcd reached over a network should be reached with TLS,
// a client certificate and/or a user with a role limited to the key root.
type ClientOptions struct {
	// CAFile is a PEM bundle of the CAs that sign etcd's server
	// certificates (--etcd-ca). Empty: the system pool, for https://
	// endpoints.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its key
	// (--etcd-cert, --etcd-key), for an etcd started with
	// --client-cert-auth. Both or neither.
	CertFile, KeyFile string
	// Username and PasswordFile authenticate to an etcd with auth enabled
	// (--etcd-user, --etcd-password-file). The password is read from a
	// file, not taken from argv (world-readable in /proc); the file must
	// not be readable by group or others, like the master key.
	Username, PasswordFile string
}

// tls reports whether any TLS material was given.
func (o ClientOptions) tls() bool { return o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" }

// NewClient connects to etcd endpoints (host:port, http(s)://..., unix://...).
// The client's own logs go to log at warn level and above (nil discards).
//
// TLS is used when an endpoint is https:// (or unixs://) or when TLS
// material is given; then every endpoint must be https://, unixs:// or a
// bare host:port: etcd's client silently drops TLS for http:// endpoints,
// and a CA given next to an http:// endpoint is a mistake to report, not
// a plaintext connection to make. The server name checked is each
// endpoint's host. Credentials go with every request, so a password over
// a plaintext TCP endpoint is logged as a warning.
//
// clientv3 dials lazily, and a request to a server that refuses the TLS
// handshake only ends with its context ("context deadline exceeded"). So
// with TLS, NewClient first shakes hands with the endpoints itself
// (probeTLS): a wrong CA, a certificate for another name or a refused
// client certificate is an error here that says so. An endpoint that does
// not answer at all is not an error (a member may be down; the client
// keeps trying).
func NewClient(endpoints []string, opts ClientOptions, log *slog.Logger) (*clientv3.Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      ZapLogger(log, slog.LevelWarn),
	}
	secure, tcp := opts.tls(), false
	for _, ep := range endpoints {
		switch scheme(ep) {
		case "https", "unixs":
			secure = true
		case "http", "":
			tcp = true
		}
	}
	// Local mistakes first, before anything touches the network.
	if opts.Username != "" || opts.PasswordFile != "" {
		if opts.Username == "" {
			return nil, errors.New("--etcd-password-file needs --etcd-user")
		}
		if opts.PasswordFile == "" {
			return nil, errors.New("--etcd-user needs --etcd-password-file")
		}
		pw, err := readPassword(opts.PasswordFile)
		if err != nil {
			return nil, err
		}
		cfg.Username, cfg.Password = opts.Username, pw
		if !secure && tcp {
			log.Warn("etcd password sent over a plaintext connection: use https:// endpoints with --etcd-ca", "endpoints", strings.Join(endpoints, ","))
		}
	}
	if secure {
		for _, ep := range endpoints {
			if s := scheme(ep); s == "http" || s == "unix" {
				return nil, fmt.Errorf("--etcd-endpoints: %s is a plaintext endpoint but TLS is configured (--etcd-ca/--etcd-cert or another https:// endpoint): use https:// (or unixs://)", truncate(ep))
			}
		}
		tc, err := clientTLS(opts)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
		if err := probeTLS(endpoints, tc); err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}

// scheme is the URL scheme of an endpoint, "" for a bare host:port.
func scheme(ep string) string {
	if i := strings.Index(ep, "://"); i >= 0 {
		return strings.ToLower(ep[:i])
	}
	if strings.HasPrefix(ep, "unix:") {
		return "unix"
	}
	if strings.HasPrefix(ep, "unixs:") {
		return "unixs"
	}
	return ""
}

// clientTLS builds the client's TLS configuration. ServerName is left
// empty on purpose: the client sets it per endpoint from the endpoint's
// host, so one configuration serves every member of a cluster.
func clientTLS(opts ClientOptions) (*tls.Config, error) {
	// TLS 1.2 is etcd's own minimum.
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca: %s holds no PEM certificate", opts.CAFile)
		}
		tc.RootCAs = pool
	}
	// nil RootCAs: crypto/tls verifies against the system pool.
	switch {
	case opts.CertFile != "" && opts.KeyFile == "":
		return nil, errors.New("--etcd-cert needs --etcd-key (the client certificate's private key)")
	case opts.CertFile == "" && opts.KeyFile != "":
		return nil, errors.New("--etcd-key needs --etcd-cert (the client certificate)")
	case opts.CertFile != "":
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// probeTLS shakes hands with the endpoints in turn until one succeeds. A
// TLS failure (the server's certificate, or the server refusing ours) is
// returned; endpoints that cannot be reached are skipped.
func probeTLS(endpoints []string, tc *tls.Config) error {
	var tlsErr error
	for _, ep := range endpoints {
		host := hostPort(ep)
		if host == "" {
			continue // unix sockets: nothing to probe by TCP
		}
		err := handshake(host, tc)
		if err == nil {
			return nil
		}
		if errors.Is(err, errUnreachable) {
			continue
		}
		tlsErr = fmt.Errorf("etcd endpoint %s: TLS: %w", truncate(ep), err)
	}
	return tlsErr
}

var errUnreachable = errors.New("unreachable")

// handshake dials host:port and completes a TLS handshake with tc (server
// name from the host). With TLS 1.3 a server refuses a client certificate
// only after the client's handshake has completed, by an alert on the
// next read: a short read catches it, and a read that times out means the
// server is waiting for the client to speak (accepted).
func handshake(host string, tc *tls.Config) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", host)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer raw.Close()
	cfg := tc.Clone()
	if h, _, err := net.SplitHostPort(host); err == nil {
		cfg.ServerName = h
	}
	// gRPC negotiates h2 by ALPN; offering it makes the probe look like
	// the real client to servers that insist.
	cfg.NextProtos = []string{"h2"}
	conn := tls.Client(raw, cfg)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.Handshake(); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return errors.New("the server closed the connection after the handshake (client certificate refused?)")
		}
		return err
	}
	return nil
}

// hostPort is the host:port of a TCP endpoint, "" for a unix socket.
func hostPort(ep string) string {
	switch scheme(ep) {
	case "unix", "unixs":
		return ""
	case "":
		return ep
	}
	u, err := url.Parse(ep)
	if err != nil {
		return ""
	}
	return u.Host
}

// readPassword reads the etcd password: the file's content without a
// trailing newline. A file readable by group or others is refused.
func readPassword(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("--etcd-password-file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("--etcd-password-file %s has mode %04o: it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--etcd-password-file: %w", err)
	}
	pw := strings.TrimRight(string(raw), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("--etcd-password-file %s is empty", path)
	}
	return pw, nil
}

// truncate bounds a value quoted in an error.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

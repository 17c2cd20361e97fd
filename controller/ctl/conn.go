package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"
)

// Conn says where the controller is and how to trust and authenticate to
// it.
type Conn struct {
	Controller string `yaml:"controller"`
	CAFile     string `yaml:"ca-file"`
	TokenFile  string `yaml:"token-file"`
}

// Config is the client config file: named contexts, like kubectl's.
//
//	current-context: lab
//	contexts:
//	  - name: lab
//	    controller: ctl.example.net:7400
//	    ca-file: lab/ca.crt        # relative to this file
//	    token-file: lab/admin.token
type Config struct {
	CurrentContext string         `yaml:"current-context"`
	Contexts       []NamedContext `yaml:"contexts"`
}

// NamedContext is one entry of Config.
type NamedContext struct {
	Name string `yaml:"name"`
	Conn `yaml:",inline"`
}

// Defaults used when nothing else says: the controller's own machine,
// run from the directory holding its default --data-dir.
const (
	DefaultController = "localhost:7400"
	DefaultCAFile     = "data/ca.crt"
	DefaultTokenFile  = "data/admin.token"
)

// configPath returns the config file to read ("" when none applies).
func configPath(flag string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	if p := getenv("MESHWAN_CONFIG"); p != "" {
		return p
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "meshwan", "config.yaml")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "meshwan", "config.yaml")
	}
	return ""
}

// resolveConn merges, field by field, flags over the environment over the
// config file's context over the defaults. An explicitly named context
// (flag or current-context) must exist; a config file that is absent is
// not an error unless it was named.
func resolveConn(flags Conn, contextName, cfgFlag string, getenv func(string) string) (Conn, error) {
	env := Conn{Controller: getenv("MESHWAN_CONTROLLER"), CAFile: getenv("MESHWAN_CA_FILE"), TokenFile: getenv("MESHWAN_TOKEN_FILE")}
	var fromCfg Conn
	if path := configPath(cfgFlag, getenv); path != "" {
		raw, err := os.ReadFile(path)
		switch {
		case err == nil:
			var cfg Config
			dec := yaml.NewDecoder(strings.NewReader(string(raw)))
			dec.KnownFields(true)
			if err := dec.Decode(&cfg); err != nil {
				return Conn{}, fmt.Errorf("config %s: %w", path, err)
			}
			name := contextName
			if name == "" {
				name = cfg.CurrentContext
			}
			if name != "" {
				found := false
				for _, c := range cfg.Contexts {
					if c.Name == name {
						fromCfg, found = c.Conn, true
					}
				}
				if !found {
					return Conn{}, fmt.Errorf("config %s: no context named %q", path, name)
				}
				dir := filepath.Dir(path)
				for _, p := range []*string{&fromCfg.CAFile, &fromCfg.TokenFile} {
					if *p != "" && !filepath.IsAbs(*p) {
						*p = filepath.Join(dir, *p)
					}
				}
			}
		case errors.Is(err, os.ErrNotExist) && cfgFlag == "" && getenv("MESHWAN_CONFIG") == "":
		default:
			return Conn{}, fmt.Errorf("config: %w", err)
		}
	}
	if contextName != "" && fromCfg == (Conn{}) {
		return Conn{}, fmt.Errorf("--context %s: no config file with that context (%s)", contextName, configPath(cfgFlag, getenv))
	}
	first := func(vs ...string) string {
		for _, v := range vs {
			if v != "" {
				return v
			}
		}
		return ""
	}
	return Conn{
		Controller: first(flags.Controller, env.Controller, fromCfg.Controller, DefaultController),
		CAFile:     first(flags.CAFile, env.CAFile, fromCfg.CAFile, DefaultCAFile),
		TokenFile:  first(flags.TokenFile, env.TokenFile, fromCfg.TokenFile, DefaultTokenFile),
	}, nil
}

// dial connects to the AdminService over TLS, verifying the controller
// against the CA file and sending the admin token with every call.
func dial(c Conn) (pb.AdminServiceClient, func() error, error) {
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("controller CA: %w (give --ca-file or MESHWAN_CA_FILE; on the controller's machine run from the directory that holds data/)", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("controller CA %s: not a PEM certificate", c.CAFile)
	}
	rawTok, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("admin token: %w (give --token-file or MESHWAN_TOKEN_FILE)", err)
	}
	host, _, err := net.SplitHostPort(c.Controller)
	if err != nil {
		return nil, nil, fmt.Errorf("--controller %q: want HOST:PORT", c.Controller)
	}
	conn, err := grpc.NewClient(c.Controller,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS13})),
		grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(string(rawTok)))),
		// Lists of a large network exceed gRPC's 4 MB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		return nil, nil, err
	}
	return pb.NewAdminServiceClient(conn), conn.Close, nil
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

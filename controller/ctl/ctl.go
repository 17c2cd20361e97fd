// Package ctl owns meshwanctl, the operator's command line: cobra
// commands over the controller's AdminService (gRPC with TLS and the admin
// token), their table/JSON/YAML output, and networks as code (plan and
// apply a network file, wait for the edges to converge). The binary's
// main only wires App to the process.
package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/netfile"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// App is what the commands need from the process.
type App struct {
	Out, Err io.Writer
	Getenv   func(string) string
	// Terminal says Out is a terminal (progress bars instead of lines).
	Terminal bool
	// Poll is how often --wait asks the controller (default 500 ms).
	Poll time.Duration
	Now  func() time.Time

	conn    Conn
	context string
	config  string
	output  string
	client  pb.AdminServiceClient
	close   func() error
}

// Command returns the root command.
func (a *App) Command() *cobra.Command {
	if a.Getenv == nil {
		a.Getenv = os.Getenv
	}
	if a.Poll == 0 {
		a.Poll = 500 * time.Millisecond
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	root := &cobra.Command{
		Use:   "meshwanctl",
		Short: "Operate a meshwan SD-WAN controller and manage networks as code",
		Long: `meshwanctl talks to the meshwan controller's AdminService over gRPC with TLS.

Connection, per setting: the flag, else the environment (MESHWAN_CONTROLLER,
MESHWAN_CA_FILE, MESHWAN_TOKEN_FILE), else the current (or --context) context
of the config file (--config, MESHWAN_CONFIG, ~/.config/meshwan/config.yaml),
else localhost:7400 with data/ca.crt and data/admin.token: run on the
controller's machine from the directory holding its data dir, it needs nothing.`,
		Example: `  meshwanctl apply -f deploy/examples/seed.yaml
  meshwanctl tunnels list
  meshwanctl --controller ctl.example.net:7400 --ca-file ca.crt --token-file admin.token status`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPostRunE: func(*cobra.Command, []string) error {
			if a.close != nil {
				return a.close()
			}
			return nil
		},
	}
	root.SetOut(a.Out)
	root.SetErr(a.Err)
	pf := root.PersistentFlags()
	pf.StringVar(&a.conn.Controller, "controller", "", "controller gRPC address HOST:PORT (env MESHWAN_CONTROLLER; default "+DefaultController+")")
	pf.StringVar(&a.conn.CAFile, "ca-file", "", "controller CA certificate (env MESHWAN_CA_FILE; default "+DefaultCAFile+")")
	pf.StringVar(&a.conn.TokenFile, "token-file", "", "file holding the admin token (env MESHWAN_TOKEN_FILE; default "+DefaultTokenFile+")")
	pf.StringVar(&a.context, "context", "", "context of the config file to use (default: its current-context)")
	pf.StringVar(&a.config, "config", "", "config file with named contexts (env MESHWAN_CONFIG; default ~/.config/meshwan/config.yaml)")
	root.AddCommand(a.sitesCmd(), a.tunnelsCmd(), a.topologyCmd(), a.tokensCmd(), a.devicesCmd(), a.identitiesCmd(), a.credentialCmd(), a.statusCmd(), a.planCmd(), a.applyCmd())
	return root
}

func (a *App) addOutput(c *cobra.Command) {
	c.Flags().StringVarP(&a.output, "output", "o", formatTable, "output format: table, json or yaml")
	c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{formatTable, formatJSON, formatYAML}, cobra.ShellCompDirectiveNoFileComp))
}

// admin connects on first use.
func (a *App) admin() (pb.AdminServiceClient, error) {
	if a.client != nil {
		return a.client, nil
	}
	if err := checkFormat(orDefault(a.output, formatTable)); err != nil {
		return nil, err
	}
	c, err := resolveConn(a.conn, a.context, a.config, a.Getenv)
	if err != nil {
		return nil, err
	}
	a.client, a.close, err = dial(c)
	return a.client, err
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// apiErr shows a controller error as its message (the code is in it).
func apiErr(err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", strings.ToLower(strings.ReplaceAll(s.Code().String(), "_", " ")), s.Message())
	}
	return err
}

// completeSites completes site names from the controller.
func (a *App) completeSites(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := a.admin()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	resp, err := c.ListSites(cmd.Context(), &pb.ListSitesRequest{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, s := range resp.GetSites() {
		names = append(names, s.GetName())
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (a *App) sitesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sites", Aliases: []string{"site"}, Short: "List, show, create, delete and export sites",
		Example: "  meshwanctl sites list\n  meshwanctl sites create br1 --transport inet1=203.0.113.7 --lan 10.2.1.0/24"}
	list := &cobra.Command{Use: "list", Short: "List the sites with their edge state", Args: cobra.NoArgs,
		Example: "  meshwanctl sites list\n  meshwanctl sites list -o yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ListSites(cmd.Context(), &pb.ListSitesRequest{})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) { sitesTable(w, resp.GetSites()) })
		}}
	get := &cobra.Command{Use: "get NAME", Short: "Show one site, with its edge's status (-o yaml for every field)", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl sites get hq -o yaml", ValidArgsFunction: a.completeSites,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			s, err := c.GetSite(cmd.Context(), &pb.GetSiteRequest{Name: args[0]})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, s, func(w io.Writer) { sitesTable(w, []*pb.Site{s}) })
		}}
	var role string
	var transports, lans []string
	var asn uint32
	var unmanaged bool
	create := &cobra.Command{Use: "create NAME", Short: "Create a site (its tunnels follow from the topology)", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl sites create hq --role hub --transport inet1=96.3.36.10 --lan 10.1.1.0/24\n" +
			"  meshwanctl sites create br2 --transport inet1=dynamic --transport lte=dynamic --lan 10.2.2.0/24",
		RunE: func(cmd *cobra.Command, args []string) error {
			s := intent.Site{Name: args[0], Role: intent.Role(role), ASN: asn, Unmanaged: unmanaged}
			for i, t := range transports {
				name, addr, ok := strings.Cut(t, "=")
				if !ok {
					return fmt.Errorf("--transport %q: want NAME=ADDRESS (an IPv4 address or dynamic)", t)
				}
				tr, err := intent.ParseTransportAddr(fmt.Sprintf("--transport[%d]", i), addr)
				if err != nil {
					return err
				}
				tr.Name = name
				s.Transports = append(s.Transports, tr)
			}
			for i, l := range lans {
				p, err := intent.ParsePrefix(fmt.Sprintf("--lan[%d]", i), l)
				if err != nil {
					return err
				}
				s.LANPrefixes = append(s.LANPrefixes, p)
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			out, err := c.CreateSite(cmd.Context(), &pb.CreateSiteRequest{Site: siteToPB(s)})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, out, func(w io.Writer) { sitesTable(w, []*pb.Site{out}) })
		}}
	create.Flags().StringVar(&role, "role", "spoke", "hub or spoke")
	create.Flags().StringArrayVar(&transports, "transport", nil, "WAN transport NAME=ADDRESS (IPv4 or dynamic); repeat for several")
	create.Flags().StringArrayVar(&lans, "lan", nil, "LAN prefix in CIDR form; repeat for several")
	create.Flags().Uint32Var(&asn, "asn", 0, "private ASN (0: allocate from the controller's pool)")
	create.Flags().BoolVar(&unmanaged, "unmanaged", false, "a third-party router, no meshwan-edge: fixed addresses only; configure it from `sites export`")
	del := &cobra.Command{Use: "delete NAME", Short: "Delete a site with its tunnels, ASN and enrollment", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl sites delete br1", ValidArgsFunction: a.completeSites,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			if _, err := c.DeleteSite(cmd.Context(), &pb.DeleteSiteRequest{Name: args[0]}); err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(a.Out, "site %s deleted\n", args[0])
			return nil
		}}
	for _, c := range []*cobra.Command{list, get, create} {
		a.addOutput(c)
	}
	cmd.AddCommand(list, get, create, del, a.exportCmd())
	return cmd
}

func (a *App) tunnelsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tunnels", Aliases: []string{"tunnel"}, Short: "List tunnels, rotate their keys", Example: "  meshwanctl tunnels list --site hq"}
	var site string
	list := &cobra.Command{Use: "list", Short: "List the tunnels with their /30 and both ends (never the PSK)", Args: cobra.NoArgs,
		Example: "  meshwanctl tunnels list\n  meshwanctl tunnels list --site remote -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ListTunnels(cmd.Context(), &pb.ListTunnelsRequest{Site: site})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) { tunnelsTable(w, resp.GetTunnels()) })
		}}
	list.Flags().StringVar(&site, "site", "", "only the tunnels with an end at this site")
	list.RegisterFlagCompletionFunc("site", a.completeSites)
	a.addOutput(list)
	cmd.AddCommand(list, a.rotateKeysCmd())
	return cmd
}

func (a *App) topologyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "topology", Short: "Show or replace the topology",
		Example: "  meshwanctl topology get\n  meshwanctl topology set --mode hub-and-spoke"}
	get := &cobra.Command{Use: "get", Short: "Show the topology with defaults filled in", Args: cobra.NoArgs,
		Example: "  meshwanctl topology get -o yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			t, err := c.GetTopology(cmd.Context(), &pb.GetTopologyRequest{})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, t, func(w io.Writer) { topologyTable(w, t) })
		}}
	var file, mode string
	set := &cobra.Command{Use: "set", Short: "Replace the whole topology: from a network file's topology, or just a mode", Args: cobra.NoArgs,
		Example: "  meshwanctl topology set --mode full-mesh\n  meshwanctl topology set -f deploy/examples/dual-hub-bgp.yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var t intent.Topology
			switch {
			case (file == "") == (mode == ""):
				return fmt.Errorf("give exactly one of -f FILE or --mode")
			case file != "":
				f, err := readFile(file)
				if err != nil {
					return err
				}
				t = f.Topology
			case mode == "full-mesh" || mode == "hub-and-spoke":
				t.Mode = intent.Mode(mode)
			case mode != "none":
				return fmt.Errorf("--mode %q: want full-mesh, hub-and-spoke or none", mode)
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			out, err := c.SetTopology(cmd.Context(), &pb.SetTopologyRequest{Topology: topologyToPB(t)})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, out, func(w io.Writer) { topologyTable(w, out) })
		}}
	set.Flags().StringVarP(&file, "file", "f", "", "network file whose topology section to set")
	set.Flags().StringVar(&mode, "mode", "", "full-mesh, hub-and-spoke or none (everything else default)")
	set.RegisterFlagCompletionFunc("mode", cobra.FixedCompletions([]string{"full-mesh", "hub-and-spoke", "none"}, cobra.ShellCompDirectiveNoFileComp))
	a.addOutput(get)
	a.addOutput(set)
	cmd.AddCommand(get, set)
	return cmd
}

func (a *App) tokensCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Create, list and revoke edge enrollment tokens",
		Example: "  meshwanctl tokens create --site remote"}
	var site string
	var ttl time.Duration
	var claim bool
	create := &cobra.Command{Use: "create", Short: "Create a one-time enrollment token (or a fleet claim token) and print the meshwan-edge setup", Args: cobra.NoArgs,
		Example: "  meshwanctl tokens create --site remote --ttl 2h\n  meshwanctl tokens create --claim --ttl 8760h",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			secs := uint32(ttl.Seconds())
			if claim && !cmd.Flags().Changed("ttl") {
				secs = 0 // the controller's claim default (365 days)
			}
			t, err := c.CreateEnrollmentToken(cmd.Context(), &pb.CreateEnrollmentTokenRequest{Site: site, TtlSeconds: secs, Claim: claim})
			if err != nil {
				return apiErr(err)
			}
			if t.GetClaim() {
				return emit(a.Out, a.output, t, func(w io.Writer) { claimTokenText(w, t) })
			}
			return emit(a.Out, a.output, t, func(w io.Writer) {
				fmt.Fprintf(w, "token %s for site %s, expires %s\n", t.GetId(), orDash(t.GetSite()), t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
				fmt.Fprintf(w, "on the site's router:\n  meshwan-edge --controller CONTROLLER:7400 --token %s --ca-hash %s --state-dir /var/lib/meshwan\n", t.GetSecret(), t.GetCaSha256())
			})
		}}
	create.Flags().StringVar(&site, "site", "", "site the token is bound to (recommended)")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token stays valid (60s to 720h; claim tokens: default 8760h, at most 5 years)")
	create.Flags().BoolVar(&claim, "claim", false, "a fleet claim token for zero-touch images: many devices, each approved with 'devices approve'")
	create.RegisterFlagCompletionFunc("site", a.completeSites)
	list := &cobra.Command{Use: "list", Short: "List enrollment tokens (never their secrets)", Args: cobra.NoArgs,
		Example: "  meshwanctl tokens list",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ListEnrollmentTokens(cmd.Context(), &pb.ListEnrollmentTokensRequest{})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) { tokensTable(w, resp.GetTokens(), a.Now()) })
		}}
	revoke := &cobra.Command{Use: "revoke ID", Short: "Revoke an enrollment token (idempotent)", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl tokens revoke 3f2a9c",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			t, err := c.RevokeEnrollmentToken(cmd.Context(), &pb.RevokeEnrollmentTokenRequest{Id: args[0]})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, t, func(w io.Writer) { fmt.Fprintf(w, "token %s revoked\n", t.GetId()) })
		}}
	for _, c := range []*cobra.Command{create, list, revoke} {
		a.addOutput(c)
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func (a *App) statusCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "status", Short: "Fleet summary: sites up/down/never seen, tunnels by state, the worst paths", Args: cobra.NoArgs,
		Example: "  meshwanctl status\n  meshwanctl status -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			sites, err := c.ListSites(cmd.Context(), &pb.ListSitesRequest{})
			if err != nil {
				return apiErr(err)
			}
			tuns, err := c.ListTunnels(cmd.Context(), &pb.ListTunnelsRequest{})
			if err != nil {
				return apiErr(err)
			}
			f := summarize(sites.GetSites(), tuns.GetTunnels())
			return emit(a.Out, a.output, f, func(w io.Writer) { fleetText(w, f) })
		}}
	a.addOutput(cmd)
	return cmd
}

func readFile(path string) (*netfile.File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return netfile.Parse(path, data)
}

// applyFile sends a network file to ApplyNetwork. A refusal is shown at
// the file position of the site or field it names.
func (a *App) applyFile(ctx context.Context, path string, prune, dryRun bool) (*netfile.File, *pb.ApplyNetworkResponse, error) {
	f, err := readFile(path)
	if err != nil {
		return nil, nil, err
	}
	c, err := a.admin()
	if err != nil {
		return nil, nil, err
	}
	req := &pb.ApplyNetworkRequest{Topology: topologyToPB(f.Topology), Prune: prune, DryRun: dryRun}
	for _, s := range f.Sites {
		req.Sites = append(req.Sites, siteToPB(s))
	}
	resp, err := c.ApplyNetwork(ctx, req)
	if err != nil {
		switch s, _ := status.FromError(err); s.Code() {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.NotFound, codes.ResourceExhausted:
			return nil, nil, fmt.Errorf("%s (nothing was changed)", f.Locate(s.Message()))
		}
		return nil, nil, apiErr(err)
	}
	return f, resp, nil
}

func (a *App) planCmd() *cobra.Command {
	var file string
	var prune bool
	cmd := &cobra.Command{Use: "plan -f FILE", Short: "Show what applying a network file would change; changes nothing", Args: cobra.NoArgs,
		Example: "  meshwanctl plan -f deploy/examples/seed.yaml\n  meshwanctl plan -f network.yaml --prune -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required")
			}
			_, p, err := a.applyFile(cmd.Context(), file, prune, true)
			if err != nil {
				return err
			}
			return emit(a.Out, a.output, p, func(w io.Writer) { planText(w, p, file, false) })
		}}
	cmd.Flags().StringVarP(&file, "file", "f", "", "network file (YAML)")
	cmd.Flags().BoolVar(&prune, "prune", false, "plan to delete the sites that exist but are not in the file")
	a.addOutput(cmd)
	return cmd
}

func (a *App) applyCmd() *cobra.Command {
	var file string
	var prune, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{Use: "apply -f FILE", Short: "Make the network match a network file, all or nothing", Args: cobra.NoArgs,
		Long: `apply validates the whole file on the controller and commits it in one
transaction: a refused file changes nothing and the error names the site and
field. Applying the same file again prints "no changes". Sites that exist but
are not in the file are kept unless --prune is given.

--wait then follows convergence: a site has converged when its edge is up and
reports every tunnel the controller has for it up.`,
		Example: "  meshwanctl apply -f deploy/examples/seed.yaml\n  meshwanctl apply -f network.yaml --prune --wait --timeout 5m",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required")
			}
			f, p, err := a.applyFile(cmd.Context(), file, prune, false)
			if err != nil {
				return err
			}
			if err := emit(a.Out, a.output, p, func(w io.Writer) { planText(w, p, file, true) }); err != nil {
				return err
			}
			if !wait {
				return nil
			}
			names := make([]string, len(f.Sites))
			for i, s := range f.Sites {
				names[i] = s.Name
			}
			progress := a.Out
			if a.output != formatTable {
				progress = a.Err // keep stdout parseable
			}
			return waitConverged(cmd.Context(), a.client, progress, a.Terminal, names, timeout, a.Poll)
		}}
	cmd.Flags().StringVarP(&file, "file", "f", "", "network file (YAML)")
	cmd.Flags().BoolVar(&prune, "prune", false, "delete the sites that exist but are not in the file")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every site of the file has converged")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait: fail after this long, listing the sites that lag")
	a.addOutput(cmd)
	return cmd
}

package ctl

import (
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/spf13/cobra"
)

// credentialCmd: the admin API's credentials (role admin needed).
func (a *App) credentialCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "credential", Aliases: []string{"credentials"}, Short: "Create, list and revoke admin API credentials (read_only, operator, admin)",
		Example: "  meshwanctl credential create --name noc --role read_only --ttl 720h\n  meshwanctl credential list\n  meshwanctl credential revoke 3f2a9c0d11e4b5a6"}
	var name, role string
	var ttl time.Duration
	create := &cobra.Command{Use: "create --name NAME --role ROLE [--ttl D]", Short: "Create a credential and print its token (shown once; the controller keeps a hash)", Args: cobra.NoArgs,
		Example: "  meshwanctl credential create --name ci-pipeline --role operator\n  meshwanctl credential create --name noc --role read_only --ttl 720h > noc.token",
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := parseRole(role)
			if err != nil {
				return err
			}
			if ttl < 0 || ttl.Seconds() > float64(^uint32(0)) {
				return fmt.Errorf("--ttl %v: want 0 (no expiry) or a positive duration", ttl)
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.CreateCredential(cmd.Context(), &pb.CreateCredentialRequest{Name: name, Role: r, TtlSeconds: uint32(ttl.Seconds())})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) { credentialCreatedText(w, resp) })
		}}
	create.Flags().StringVar(&name, "name", "", "whose credential it is: letters, digits and . _ - @ (required)")
	create.Flags().StringVar(&role, "role", "", "read_only, operator or admin (required)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (0: no expiry; otherwise 1m to 87600h)")
	create.MarkFlagRequired("name")
	create.MarkFlagRequired("role")
	create.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"read_only", "operator", "admin"}, cobra.ShellCompDirectiveNoFileComp))
	list := &cobra.Command{Use: "list", Short: "List credentials (never their secrets)", Args: cobra.NoArgs,
		Example: "  meshwanctl credential list -o yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ListCredentials(cmd.Context(), &pb.ListCredentialsRequest{})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) { credentialsTable(w, resp.GetCredentials(), a.Now()) })
		}}
	revoke := &cobra.Command{Use: "revoke ID", Short: "Revoke a credential on every controller replica at once (idempotent)", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl credential revoke 3f2a9c0d11e4b5a6",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			cr, err := c.RevokeCredential(cmd.Context(), &pb.RevokeCredentialRequest{Id: args[0]})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, cr, func(w io.Writer) { fmt.Fprintf(w, "credential %s (%s) revoked\n", cr.GetId(), cr.GetName()) })
		}}
	for _, c := range []*cobra.Command{create, list, revoke} {
		a.addOutput(c)
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func parseRole(s string) (pb.AdminRole, error) {
	switch strings.ToLower(s) {
	case "read_only", "read-only", "readonly":
		return pb.AdminRole_ADMIN_ROLE_READ_ONLY, nil
	case "operator":
		return pb.AdminRole_ADMIN_ROLE_OPERATOR, nil
	case "admin":
		return pb.AdminRole_ADMIN_ROLE_ADMIN, nil
	}
	return 0, fmt.Errorf("--role %q: want read_only, operator or admin", s)
}

func roleName(r pb.AdminRole) string {
	switch r {
	case pb.AdminRole_ADMIN_ROLE_READ_ONLY:
		return "read_only"
	case pb.AdminRole_ADMIN_ROLE_OPERATOR:
		return "operator"
	case pb.AdminRole_ADMIN_ROLE_ADMIN:
		return "admin"
	}
	return "-"
}

func credentialCreatedText(w io.Writer, r *pb.CreateCredentialResponse) {
	c := r.GetCredential()
	exp := "never"
	if c.GetExpiresAt() != nil {
		exp = c.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "credential %s (%s), role %s, expires %s\n", c.GetId(), c.GetName(), roleName(c.GetRole()), exp)
	fmt.Fprintf(w, "token (shown only now; store it in a file readable only by its user, then use --token-file FILE):\n%s\n", r.GetSecret())
}

func credentialsTable(w io.Writer, cs []*pb.Credential, now time.Time) {
	var rows [][]string
	for _, c := range cs {
		exp, state := "never", "valid"
		if c.GetExpiresAt() != nil {
			exp = c.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
			if !now.Before(c.GetExpiresAt().AsTime()) {
				state = "expired"
			}
		}
		if c.GetRevoked() {
			state = "revoked"
		}
		rows = append(rows, []string{c.GetId(), c.GetName(), roleName(c.GetRole()), c.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), exp, state})
	}
	table(w, []string{"ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE"}, rows)
}

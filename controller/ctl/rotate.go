package ctl

import (
	"fmt"
	"io"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/spf13/cobra"
)

// rotateKeysCmd is `tunnels rotate-keys`: start make-before-break PSK
// rotations. The controller advances them as both ends report the new
// keys; `tunnels list -o json` shows each tunnel's psk_rotation phase.
func (a *App) rotateKeysCmd() *cobra.Command {
	var site string
	var all bool
	cmd := &cobra.Command{Use: "rotate-keys (--site SITE | --all | ID...)",
		Short: "Rotate tunnel pre-shared keys, make-before-break (established SAs are kept)",
		Example: "  meshwanctl tunnels rotate-keys hq.inet1~branch1.inet1\n  meshwanctl tunnels rotate-keys --site branch1\n" +
			"  meshwanctl tunnels rotate-keys --all",
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 0
			for _, set := range []bool{len(args) > 0, site != "", all} {
				if set {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("give exactly one of: tunnel ids, --site, --all")
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.RotateTunnelKeys(cmd.Context(), &pb.RotateTunnelKeysRequest{TunnelIds: args, Site: site, All: all})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) {
				if len(resp.GetTunnelIds()) == 0 {
					fmt.Fprintln(w, "no rotation started (the tunnels are rotating already)")
					return
				}
				fmt.Fprintf(w, "key rotation started on %d tunnel(s):\n", len(resp.GetTunnelIds()))
				for _, id := range resp.GetTunnelIds() {
					fmt.Fprintln(w, "  "+id)
				}
			})
		}}
	cmd.Flags().StringVar(&site, "site", "", "every tunnel with an end at this site")
	cmd.Flags().BoolVar(&all, "all", false, "every tunnel")
	cmd.RegisterFlagCompletionFunc("site", a.completeSites)
	a.addOutput(cmd)
	return cmd
}

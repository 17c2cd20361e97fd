package ctl

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/spf13/cobra"
)

var exportFormats = map[string]pb.ExportFormat{"linux": pb.ExportFormat_EXPORT_FORMAT_LINUX, "ransnet": pb.ExportFormat_EXPORT_FORMAT_RANSNET}

// exportCmd is `sites export`: the configuration of an unmanaged site's
// router. The files hold pre-shared keys: with --out they are written
// 0600 in a directory made 0700; without, they are printed.
func (a *App) exportCmd() *cobra.Command {
	var format, out string
	cmd := &cobra.Command{Use: "export SITE --format linux|ransnet [--out DIR]",
		Short: "Render an unmanaged site's router configuration (holds its pre-shared keys; audited)", Args: cobra.ExactArgs(1),
		Long: `export renders the configuration to enter on an unmanaged site's router (no
meshwan-edge runs there): linux = strongSwan swanctl.conf, an iproute2 script,
nftables rules and (BGP routing) an FRR frr.conf; ransnet = the RansNet mbox CLI.
The files hold the site's pre-shared keys: the controller logs every export with
your credential. docs/third-party.md explains each file.`,
		Example: "  meshwanctl site export remote --format linux --out /root/remote\n" +
			"  meshwanctl site export remote --format ransnet",
		ValidArgsFunction: a.completeSites,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, ok := exportFormats[format]
			if !ok {
				return fmt.Errorf("--format %q: want linux or ransnet", format)
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ExportSiteConfig(cmd.Context(), &pb.ExportSiteConfigRequest{Site: args[0], Format: f})
			if err != nil {
				return apiErr(err)
			}
			if out == "" {
				return emit(a.Out, a.output, resp, func(w io.Writer) {
					for _, x := range resp.GetFiles() {
						fmt.Fprintf(w, "==> %s <==\n%s", x.GetName(), x.GetContent())
					}
				})
			}
			if err := writeExport(out, resp.GetFiles()); err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "site %s (%s, intent revision %d): wrote", resp.GetSite(), format, resp.GetVersion())
			for _, x := range resp.GetFiles() {
				fmt.Fprintf(a.Out, " %s", filepath.Join(out, x.GetName()))
			}
			fmt.Fprintln(a.Out)
			return nil
		}}
	cmd.Flags().StringVar(&format, "format", "", "linux or ransnet (required)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the files to (0600; created 0700); default: print them")
	cmd.MarkFlagRequired("format")
	cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"linux", "ransnet"}, cobra.ShellCompDirectiveNoFileComp))
	a.addOutput(cmd)
	return cmd
}

// writeExport writes each file 0600, also over an existing file with
// looser permissions (its mode is fixed before the keys are written).
// Names come from the controller: only plain names are accepted.
func writeExport(dir string, files []*pb.ExportedFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, x := range files {
		name := x.GetName()
		if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
			return fmt.Errorf("controller sent a file name %q that is not a plain name", name)
		}
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return err
		}
		if _, err := io.WriteString(f, x.GetContent()); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

package ctl

import (
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/spf13/cobra"
)

// devicesCmd: zero-touch claims waiting for (or given) an approval.
func (a *App) devicesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "devices", Short: "List, approve and reject devices that claimed with a fleet claim token",
		Example: "  meshwanctl devices list\n  meshwanctl devices approve serial-FGT60F123 --site br7"}
	list := &cobra.Command{Use: "list", Short: "List claimed devices (pending ones expire) and devices approved in advance", Args: cobra.NoArgs,
		Example: "  meshwanctl devices list",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ListDevices(cmd.Context(), &pb.ListDevicesRequest{})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) { devicesTable(w, resp.GetDevices(), a.Now()) })
		}}
	var site string
	approve := &cobra.Command{Use: "approve DEVICE-ID --site SITE", Short: "Assign a device to a site; a device not seen yet is approved in advance", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl devices approve serial-FGT60F123 --site br7",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			d, err := c.ApproveDevice(cmd.Context(), &pb.ApproveDeviceRequest{DeviceId: args[0], Site: site})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, d, func(w io.Writer) {
				fmt.Fprintf(w, "device %s approved as site %s; it gets its certificate on its next claim\n", d.GetDeviceId(), d.GetSite())
			})
		}}
	approve.Flags().StringVar(&site, "site", "", "site the device becomes (required)")
	approve.MarkFlagRequired("site")
	approve.RegisterFlagCompletionFunc("site", a.completeSites)
	reject := &cobra.Command{Use: "reject DEVICE-ID", Short: "Refuse a device's claims from now on", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl devices reject machine-0a1b2c",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			d, err := c.RejectDevice(cmd.Context(), &pb.RejectDeviceRequest{DeviceId: args[0]})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, d, func(w io.Writer) { fmt.Fprintf(w, "device %s rejected\n", d.GetDeviceId()) })
		}}
	for _, c := range []*cobra.Command{list, approve, reject} {
		a.addOutput(c)
	}
	cmd.AddCommand(list, approve, reject)
	return cmd
}

// identitiesCmd: every site's edge certificate, its expiry, and revocation.
func (a *App) identitiesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "identities", Short: "List sites' edge certificates (expiry) and revoke them",
		Example: "  meshwanctl identities list\n  meshwanctl identities revoke br1"}
	list := &cobra.Command{Use: "list", Short: "List every site's current edge certificate and when it expires", Args: cobra.NoArgs,
		Example: "  meshwanctl identities list",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.ListSiteIdentities(cmd.Context(), &pb.ListSiteIdentitiesRequest{})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, resp, func(w io.Writer) { identitiesTable(w, resp.GetIdentities(), a.Now()) })
		}}
	revoke := &cobra.Command{Use: "revoke SITE", Short: "Revoke a site's edge certificate: its stream closes, renewal is refused; the site must enroll again", Args: cobra.ExactArgs(1),
		Example: "  meshwanctl identities revoke br1", ValidArgsFunction: a.completeSites,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			id, err := c.RevokeSiteIdentity(cmd.Context(), &pb.RevokeSiteIdentityRequest{Site: args[0]})
			if err != nil {
				return apiErr(err)
			}
			return emit(a.Out, a.output, id, func(w io.Writer) {
				fmt.Fprintf(w, "identity of site %s revoked (certificate %s); enroll the site again with a new token or claim\n", id.GetSite(), id.GetSerial())
			})
		}}
	for _, c := range []*cobra.Command{list, revoke} {
		a.addOutput(c)
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

func devicesTable(w io.Writer, ds []*pb.Device, now time.Time) {
	var rows [][]string
	for _, d := range ds {
		state := strings.ToLower(strings.TrimPrefix(d.GetState().String(), "DEVICE_STATE_"))
		exp := "-"
		if d.GetExpiresAt() != nil {
			exp = "in " + roundDur(d.GetExpiresAt().AsTime().Sub(now))
		}
		seen := "-"
		if d.GetLastSeen() != nil {
			seen = roundDur(now.Sub(d.GetLastSeen().AsTime())) + " ago"
		}
		key := d.GetPublicKeySha256()
		if len(key) > 16 {
			key = key[:16]
		}
		rows = append(rows, []string{d.GetDeviceId(), state, orDash(d.GetSite()), orDash(d.GetHostname()), orDash(key), seen, exp})
	}
	table(w, []string{"DEVICE", "STATE", "SITE", "HOSTNAME", "KEY", "LAST SEEN", "EXPIRES"}, rows)
}

// expiringSoon is when a certificate is flagged: it should have been
// renewed at 2/3 of its lifetime, so a quarter of it left means the edge
// has not renewed (offline, or renewal refused).
func expiringSoon(id *pb.SiteIdentity, now time.Time) bool {
	if id.GetNotAfter() == nil {
		return false
	}
	start := id.GetEnrolledAt().AsTime()
	if id.GetRenewedAt() != nil {
		start = id.GetRenewedAt().AsTime()
	}
	na := id.GetNotAfter().AsTime()
	return na.Sub(now) < na.Sub(start)/4
}

func identitiesTable(w io.Writer, ids []*pb.SiteIdentity, now time.Time) {
	var rows [][]string
	for _, id := range ids {
		state := "valid"
		switch {
		case id.GetRevoked():
			state = "revoked"
		case id.GetNotAfter() != nil && !now.Before(id.GetNotAfter().AsTime()):
			state = "EXPIRED"
		case expiringSoon(id, now):
			state = "expires soon"
		}
		na := "-"
		if id.GetNotAfter() != nil {
			na = id.GetNotAfter().AsTime().UTC().Format(time.RFC3339)
		}
		rows = append(rows, []string{id.GetSite(), state, na, orDash(id.GetDeviceId()), id.GetSerial()})
	}
	table(w, []string{"SITE", "STATE", "NOT AFTER", "DEVICE", "SERIAL"}, rows)
}

func roundDur(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Minute).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Hour).String(), "0m0s")
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

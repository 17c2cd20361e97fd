// Package api adapts the controller's Go API to gRPC (AdminService,
// EdgeService) and to REST/JSON through grpc-gateway. Handlers are thin:
// convert the request to domain types, call network/enroll/health, convert
// back; every error goes through the one code table in errors.go. Generated
// types do not travel further in than this package.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshwan/meshwan/controller/credentials"
	"github.com/meshwan/meshwan/controller/enroll"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// Admin implements AdminService.
type Admin struct {
	pb.UnimplementedAdminServiceServer
	Net    *network.Network
	Enroll *enroll.Service
	Health *health.Registry
	// Credentials holds the admin API's credentials (Create/List/RevokeCredential).
	Credentials *credentials.Service
	Log         *slog.Logger
	// OnChange, when set, is called after every successful change (the
	// dashboard's event feed uses it).
	OnChange func(what string)
}

func (a *Admin) changed(what string) {
	if a.OnChange != nil {
		a.OnChange(what)
	}
}

func (a *Admin) CreateSite(ctx context.Context, req *pb.CreateSiteRequest) (*pb.Site, error) {
	s, err := siteFromPB(req.GetSite())
	if err == nil {
		s, err = a.Net.CreateSite(ctx, s)
	}
	if err != nil {
		return nil, toStatus(a.Log, "CreateSite", err)
	}
	a.changed("site " + s.Name + " created")
	return siteToPB(s, &health.Status{State: health.NeverSeen}), nil
}

func (a *Admin) GetSite(ctx context.Context, req *pb.GetSiteRequest) (*pb.Site, error) {
	s, err := a.Net.GetSite(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(a.Log, "GetSite", err)
	}
	st, err := a.Health.Get(ctx, s.Name)
	if err == nil && s.Unmanaged {
		st, err = a.unmanagedStatus(ctx, s.Name, nil)
	}
	if err != nil {
		return nil, toStatus(a.Log, "GetSite", err)
	}
	return siteToPB(s, &st), nil
}

func (a *Admin) ListSites(ctx context.Context, _ *pb.ListSitesRequest) (*pb.ListSitesResponse, error) {
	sites, err := a.Net.ListSites(ctx)
	if err != nil {
		return nil, toStatus(a.Log, "ListSites", err)
	}
	all, err := a.Health.All(ctx)
	if err != nil {
		return nil, toStatus(a.Log, "ListSites", err)
	}
	out := &pb.ListSitesResponse{}
	for _, s := range sites {
		st, ok := all[s.Name]
		if !ok {
			st.State = health.NeverSeen
		}
		if s.Unmanaged {
			st, _ = a.unmanagedStatus(ctx, s.Name, all)
		}
		out.Sites = append(out.Sites, siteToPB(s, &st))
	}
	return out, nil
}

func (a *Admin) UpdateSite(ctx context.Context, req *pb.UpdateSiteRequest) (*pb.Site, error) {
	s, err := siteFromPB(req.GetSite())
	if err == nil {
		s, err = a.Net.UpdateSite(ctx, s)
	}
	if err != nil {
		return nil, toStatus(a.Log, "UpdateSite", err)
	}
	a.changed("site " + s.Name + " updated")
	st, _ := a.Health.Get(ctx, s.Name)
	return siteToPB(s, &st), nil
}

func (a *Admin) DeleteSite(ctx context.Context, req *pb.DeleteSiteRequest) (*pb.DeleteSiteResponse, error) {
	if err := a.Net.DeleteSite(ctx, req.GetName()); err != nil {
		return nil, toStatus(a.Log, "DeleteSite", err)
	}
	if err := a.Health.Forget(ctx, req.GetName()); err != nil {
		a.Log.Warn("forget status of deleted site", "site", req.GetName(), "err", err)
	}
	a.changed("site " + req.GetName() + " deleted")
	return &pb.DeleteSiteResponse{}, nil
}

func (a *Admin) GetTopology(ctx context.Context, _ *pb.GetTopologyRequest) (*pb.Topology, error) {
	t, err := a.Net.GetTopology(ctx)
	if err != nil {
		return nil, toStatus(a.Log, "GetTopology", err)
	}
	return a.topologyWithUnjoined(t), nil
}

func (a *Admin) SetTopology(ctx context.Context, req *pb.SetTopologyRequest) (*pb.Topology, error) {
	t, err := topologyFromPB(req.GetTopology())
	if err == nil {
		t, err = a.Net.SetTopology(ctx, t)
	}
	if err != nil {
		return nil, toStatus(a.Log, "SetTopology", err)
	}
	a.changed("topology set to " + string(t.Mode))
	return a.topologyWithUnjoined(t), nil
}

// topologyWithUnjoined is the topology as the API shows it: with the
// output-only list of the site pairs it leaves without a tunnel.
func (a *Admin) topologyWithUnjoined(t intent.Topology) *pb.Topology {
	out := topologyToPB(t)
	for _, p := range a.Net.Unjoined() {
		out.Unjoined = append(out.Unjoined, &pb.SitePair{A: p.A, B: p.B})
	}
	return out
}

func (a *Admin) ListTunnels(ctx context.Context, req *pb.ListTunnelsRequest) (*pb.ListTunnelsResponse, error) {
	ts, err := a.Net.ListTunnels(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(a.Log, "ListTunnels", err)
	}
	out := &pb.ListTunnelsResponse{}
	for _, t := range ts {
		out.Tunnels = append(out.Tunnels, tunnelToPB(t))
	}
	return out, nil
}

func (a *Admin) GetTunnel(ctx context.Context, req *pb.GetTunnelRequest) (*pb.Tunnel, error) {
	t, err := a.Net.GetTunnel(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(a.Log, "GetTunnel", err)
	}
	return tunnelToPB(t), nil
}

func (a *Admin) CreateEnrollmentToken(ctx context.Context, req *pb.CreateEnrollmentTokenRequest) (*pb.EnrollmentToken, error) {
	create := a.Enroll.CreateToken
	if req.GetClaim() {
		if req.GetSite() != "" {
			return nil, toStatus(a.Log, "CreateEnrollmentToken", fmt.Errorf("%w: site: a claim token is not bound to a site (approve each device to a site)", enroll.ErrInvalid))
		}
		create = func(ctx context.Context, _ string, ttl time.Duration) (enroll.Token, string, error) {
			return a.Enroll.CreateClaimToken(ctx, ttl)
		}
	}
	t, secret, err := create(ctx, req.GetSite(), time.Duration(req.GetTtlSeconds())*time.Second)
	if err != nil {
		return nil, toStatus(a.Log, "CreateEnrollmentToken", err)
	}
	a.Log.Info("enrollment token created", "token_id", t.ID, "site", t.Site, "expires_at", t.ExpiresAt)
	out := tokenToPB(t, secret)
	out.CaSha256 = a.Enroll.CA().Fingerprint()
	return out, nil
}

func (a *Admin) ListEnrollmentTokens(ctx context.Context, _ *pb.ListEnrollmentTokensRequest) (*pb.ListEnrollmentTokensResponse, error) {
	ts, err := a.Enroll.ListTokens(ctx)
	if err != nil {
		return nil, toStatus(a.Log, "ListEnrollmentTokens", err)
	}
	out := &pb.ListEnrollmentTokensResponse{}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, tokenToPB(t, ""))
	}
	return out, nil
}

func (a *Admin) RevokeEnrollmentToken(ctx context.Context, req *pb.RevokeEnrollmentTokenRequest) (*pb.EnrollmentToken, error) {
	t, err := a.Enroll.RevokeToken(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(a.Log, "RevokeEnrollmentToken", err)
	}
	a.Log.Info("enrollment token revoked", "token_id", t.ID)
	return tokenToPB(t, ""), nil
}

func (a *Admin) ListDevices(ctx context.Context, _ *pb.ListDevicesRequest) (*pb.ListDevicesResponse, error) {
	ds, err := a.Enroll.Devices(ctx)
	if err != nil {
		return nil, toStatus(a.Log, "ListDevices", err)
	}
	out := &pb.ListDevicesResponse{}
	for _, d := range ds {
		out.Devices = append(out.Devices, deviceToPB(d))
	}
	return out, nil
}

func (a *Admin) ApproveDevice(ctx context.Context, req *pb.ApproveDeviceRequest) (*pb.Device, error) {
	d, err := a.Enroll.ApproveDevice(ctx, req.GetDeviceId(), req.GetSite())
	if err != nil {
		return nil, toStatus(a.Log, "ApproveDevice", err)
	}
	a.Log.Info("device approved", "device_id", d.ID, "site", d.Site)
	a.changed("device " + d.ID + " approved as " + d.Site)
	return deviceToPB(d), nil
}

func (a *Admin) RejectDevice(ctx context.Context, req *pb.RejectDeviceRequest) (*pb.Device, error) {
	d, err := a.Enroll.RejectDevice(ctx, req.GetDeviceId())
	if err != nil {
		return nil, toStatus(a.Log, "RejectDevice", err)
	}
	a.Log.Info("device rejected", "device_id", d.ID)
	a.changed("device " + d.ID + " rejected")
	return deviceToPB(d), nil
}

func (a *Admin) ListSiteIdentities(ctx context.Context, _ *pb.ListSiteIdentitiesRequest) (*pb.ListSiteIdentitiesResponse, error) {
	es, err := a.Enroll.Identities(ctx)
	if err != nil {
		return nil, toStatus(a.Log, "ListSiteIdentities", err)
	}
	out := &pb.ListSiteIdentitiesResponse{}
	for _, e := range es {
		out.Identities = append(out.Identities, identityToPB(e))
	}
	return out, nil
}

func (a *Admin) RevokeSiteIdentity(ctx context.Context, req *pb.RevokeSiteIdentityRequest) (*pb.SiteIdentity, error) {
	e, err := a.Enroll.Revoke(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(a.Log, "RevokeSiteIdentity", err)
	}
	a.Log.Info("site identity revoked", "site", e.Site, "serial", e.Serial)
	a.changed("identity of site " + e.Site + " revoked")
	return identityToPB(e), nil
}

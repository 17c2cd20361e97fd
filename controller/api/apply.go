package api

import (
	"context"
	"fmt"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// ApplyNetwork is the thin adapter over network.ApplyNetwork (role
// operator, see MethodTable).
func (a *Admin) ApplyNetwork(ctx context.Context, req *pb.ApplyNetworkRequest) (*pb.ApplyNetworkResponse, error) {
	sites := make([]intent.Site, 0, len(req.GetSites()))
	for i, s := range req.GetSites() {
		site, err := siteFromPB(s)
		if err != nil {
			return nil, toStatus(a.Log, "ApplyNetwork", fmt.Errorf("site %q (sites[%d]): %w", s.GetName(), i, err))
		}
		sites = append(sites, site)
	}
	t, err := topologyFromPB(req.GetTopology())
	if err != nil {
		return nil, toStatus(a.Log, "ApplyNetwork", err)
	}
	p, err := a.Net.ApplyNetwork(ctx, sites, t, req.GetPrune(), req.GetDryRun())
	if err != nil {
		return nil, toStatus(a.Log, "ApplyNetwork", err)
	}
	if !req.GetDryRun() {
		for _, name := range p.Deleted {
			if err := a.Health.Forget(ctx, name); err != nil {
				a.Log.Warn("forget status of deleted site", "site", name, "err", err)
			}
		}
		if p.Changed() {
			a.changed(fmt.Sprintf("network applied: %d sites created, %d updated, %d deleted", len(p.Created), len(p.Updated), len(p.Deleted)))
		}
	}
	return planToPB(p), nil
}

func planToPB(p network.Plan) *pb.ApplyNetworkResponse {
	out := &pb.ApplyNetworkResponse{
		SitesCreated: p.Created, SitesDeleted: p.Deleted, SitesNotInRequest: p.NotInRequest,
		TopologyChanges: p.Topology, TunnelsAdded: p.TunnelsAdded, TunnelsRemoved: p.TunnelsRemoved,
		TunnelsKept: uint32(p.TunnelsKept), Changed: p.Changed(),
	}
	for _, u := range p.Updated {
		out.SitesUpdated = append(out.SitesUpdated, &pb.SiteUpdate{Name: u.Name, Fields: u.Fields})
	}
	return out
}

package api

import (
	"context"
	"fmt"

	"github.com/meshwan/meshwan/controller/network"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/peer"
)

// RotateTunnelKeys starts make-before-break key rotations (see
// network.RotateTunnelKeys). The audit log names the caller's address and
// the selection, never a key.
func (a *Admin) RotateTunnelKeys(ctx context.Context, req *pb.RotateTunnelKeysRequest) (*pb.RotateTunnelKeysResponse, error) {
	by := "api"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		by = "api from " + p.Addr.String()
	}
	ids, err := a.Net.RotateTunnelKeys(ctx, network.RotationSelector{IDs: req.GetTunnelIds(), Site: req.GetSite(), All: req.GetAll()}, by)
	if err != nil {
		return nil, toStatus(a.Log, "RotateTunnelKeys", err)
	}
	if len(ids) > 0 {
		a.changed(fmt.Sprintf("key rotation started on %d tunnel(s)", len(ids)))
	}
	return &pb.RotateTunnelKeysResponse{TunnelIds: ids}, nil
}

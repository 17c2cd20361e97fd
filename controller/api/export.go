package api

import (
	"context"
	"fmt"

	"github.com/meshwan/meshwan/controller/export"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

var exportFormats = map[pb.ExportFormat]export.Format{
	pb.ExportFormat_EXPORT_FORMAT_LINUX:   export.Linux,
	pb.ExportFormat_EXPORT_FORMAT_RANSNET: export.RansNet,
}

// ExportSiteConfig renders an unmanaged site's router configuration
// (network.ExportInput, export.Render). It is the only place such a site's
// keys leave the controller, so every call is audited, granted or not: a
// log line naming the credential, the site and the format (never a key),
// and, when granted, an event in the dashboard's feed.
func (a *Admin) ExportSiteConfig(ctx context.Context, req *pb.ExportSiteConfigRequest) (*pb.ExportSiteConfigResponse, error) {
	p, _ := PrincipalFrom(ctx)
	site := req.GetSite()
	f, ok := exportFormats[req.GetFormat()]
	var err error
	var in export.Input
	var files []export.File
	if !ok {
		err = fmt.Errorf("%w: format: %s is not linux or ransnet", intent.ErrInvalid, req.GetFormat())
	} else if in, err = a.Net.ExportInput(site); err == nil {
		files, err = export.Render(f, in)
	}
	if err != nil {
		discard(a.Log).Warn("site configuration export refused", "site", site, "format", f.String(), "credential_id", p.ID, "credential_name", p.Name, "err", err)
		return nil, toStatus(a.Log, "ExportSiteConfig", err)
	}
	discard(a.Log).Info("site configuration exported (holds pre-shared keys)", "site", site, "format", f.String(),
		"credential_id", p.ID, "credential_name", p.Name, "version", in.Version, "tunnels", len(in.Tunnels))
	a.changed(fmt.Sprintf("configuration of unmanaged site %s exported (%s, %d tunnel(s)) by credential %s", site, f, len(in.Tunnels), p.ID))
	out := &pb.ExportSiteConfigResponse{Site: site, Format: req.GetFormat(), Version: in.Version}
	for _, x := range files {
		out.Files = append(out.Files, &pb.ExportedFile{Name: x.Name, Content: x.Content})
	}
	return out, nil
}

// unmanagedStatus is an unmanaged site's status: its tunnels as the
// managed far ends report them (health.ManagedEnds). all may be nil (it
// is read then).
func (a *Admin) unmanagedStatus(ctx context.Context, site string, all map[string]health.Status) (health.Status, error) {
	if all == nil {
		var err error
		if all, err = a.Health.All(ctx); err != nil {
			return health.Status{}, err
		}
	}
	return health.ManagedEnds(a.Net.FarEnds(site), all), nil
}

package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"time"

	"github.com/meshwan/meshwan/controller/enroll"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
	"github.com/meshwan/meshwan/controller/push"
	"github.com/meshwan/meshwan/edge/dataplane/validity"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Edge implements EdgeService.
type Edge struct {
	pb.UnimplementedEdgeServiceServer
	Net        *network.Network
	Enrollment *enroll.Service
	Health     *health.Registry
	Hub        *push.Hub
	Log        *slog.Logger
	// OnEvent, when set, hears edge connects and disconnects.
	OnEvent func(what string)
	// Closing, when closed, ends every Sync stream with Unavailable: a
	// stopping controller lets its edges go at once (they reconnect to
	// the next one) instead of making the server wait for streams that
	// never end on their own.
	Closing <-chan struct{}
}

func (e *Edge) event(what string) {
	if e.OnEvent != nil {
		e.OnEvent(what)
	}
}

func (e *Edge) Enroll(ctx context.Context, req *pb.EnrollRequest) (*pb.EnrollResponse, error) {
	site, cert, err := e.Enrollment.Enroll(ctx, req.GetToken(), req.GetSite(), req.GetCsrPem())
	if err != nil {
		e.Log.Warn("enrollment refused", "site", req.GetSite(), "err", err)
		return nil, toStatus(e.Log, "Enroll", err)
	}
	e.Log.Info("edge enrolled", "site", site)
	e.event("edge " + site + " enrolled")
	return &pb.EnrollResponse{Site: site, CertificatePem: cert, CaPem: e.Enrollment.CA().PEM}, nil
}

// Renew issues a new certificate to the caller's site (mTLS).
func (e *Edge) Renew(ctx context.Context, req *pb.RenewRequest) (*pb.RenewResponse, error) {
	site, cert, err := e.Enrollment.Renew(ctx, peerCert(ctx), req.GetCsrPem())
	if err != nil {
		e.Log.Warn("renewal refused", "err", err)
		return nil, toStatus(e.Log, "Renew", err)
	}
	e.Log.Info("edge certificate renewed", "site", site)
	e.event("edge " + site + " renewed its certificate")
	return &pb.RenewResponse{Site: site, CertificatePem: cert, CaPem: e.Enrollment.CA().PEM}, nil
}

// Claim is zero-touch onboarding (see enroll.Service.Claim).
func (e *Edge) Claim(ctx context.Context, req *pb.ClaimRequest) (*pb.ClaimResponse, error) {
	var remote string
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	r, err := e.Enrollment.Claim(ctx, enroll.ClaimRequest{Token: req.GetClaimToken(), DeviceID: req.GetDeviceId(),
		Hostname: req.GetHostname(), RemoteAddr: remote, CSRPEM: req.GetCsrPem()})
	if err != nil {
		e.Log.Warn("claim refused", "device_id", req.GetDeviceId(), "err", err)
		return nil, toStatus(e.Log, "Claim", err)
	}
	if r.Pending {
		return &pb.ClaimResponse{State: pb.ClaimState_CLAIM_STATE_PENDING, RetryAfterSeconds: uint32(max(1, r.RetryAfter/time.Second))}, nil
	}
	e.Log.Info("device claimed its site", "device_id", req.GetDeviceId(), "site", r.Site)
	e.event("device " + req.GetDeviceId() + " enrolled as " + r.Site)
	return &pb.ClaimResponse{State: pb.ClaimState_CLAIM_STATE_APPROVED, Site: r.Site, CertificatePem: r.CertPEM, CaPem: e.Enrollment.CA().PEM}, nil
}

// peerCert returns the verified client certificate of the call, if any.
func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// helloTimeout bounds how long a new stream may stay silent.
const helloTimeout = 30 * time.Second

func (e *Edge) Sync(stream pb.EdgeService_SyncServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	// ended hears, from a watch on the site's enrollment record, that this
	// certificate stopped being accepted (revoked, superseded by a renewal
	// or re-enrollment, site deleted): the stream then ends at once.
	site, ended, err := e.Enrollment.AuthenticateStream(ctx, peerCert(ctx))
	if err != nil {
		return toStatus(e.Log, "Sync", err)
	}
	hello, err := recvHello(ctx, stream)
	if err != nil {
		return err
	}
	if egress := egressTransport(ctx); len(hello.GetTransports()) > 0 || egress != "" {
		if err := e.observe(ctx, site, hello.GetTransports(), egress, peerAddr(ctx)); err != nil {
			return toStatus(e.Log, "Sync", err)
		}
	}
	sub, err := e.Hub.Subscribe(ctx, site, hello.GetStateHash(), hello.GetDeltas())
	if err != nil {
		return toStatus(e.Log, "Sync", err)
	}
	defer sub.Close()
	sess, err := e.Health.Connect(ctx, site, hello.GetAgentVersion())
	if err != nil {
		return toStatus(e.Log, "Sync", err)
	}
	log := e.Log.With("site", site)
	log.Info("edge connected", "agent_version", hello.GetAgentVersion(), "applied_version", hello.GetAppliedVersion())
	e.event("edge " + site + " connected")
	defer func() {
		// The stream's context is done; closing the session must not be.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer ccancel()
		if err := sess.Close(cctx); err != nil {
			log.Warn("close edge session", "err", err)
		}
		log.Info("edge disconnected")
		e.event("edge " + site + " disconnected")
	}()

	recvErr := make(chan error, 1)
	go func() { // owned by this call: it ends when the stream does
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if r := req.GetReport(); r != nil {
				if err := sess.Report(ctx, reportFromPB(hello.GetAgentVersion(), r, limitsFor(e.Net.TunnelCount(site)))); err != nil {
					recvErr <- err
					return
				}
			}
		}
	}()
	for {
		select {
		case err := <-ended:
			log.Info("edge identity no longer valid, closing stream", "err", err)
			return toStatus(e.Log, "Sync", err)
		case <-e.Closing:
			return status.Error(codes.Unavailable, "controller shutting down; reconnect")
		case err := <-recvErr:
			if ctx.Err() != nil || status.Code(err) == codes.Canceled || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-sub.C():
			u, ok := sub.Next()
			if !ok {
				continue
			}
			if u.Err != nil {
				return status.Error(codes.PermissionDenied, fmt.Sprintf("site %q no longer exists", site))
			}
			msg := &pb.DesiredState{Version: u.State.Version, Site: site, BaseHash: u.Hash, StateHash: u.Hash}
			if !u.Unchanged {
				msg = desiredToPB(u.State)
				msg.StateHash = u.Hash
			}
			if u.Delta {
				msg.BaseHash, msg.RemovedTunnels = u.BaseHash, u.Removed
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
			log.Debug("desired state sent", "version", u.State.Version, "tunnels", len(u.State.Tunnels), "delta", u.Delta, "removed", len(u.Removed))
		}
	}
}

// EgressTransportKey is the Sync stream's metadata key with which an edge
// names the transport its controller connection leaves by (the one whose
// interface address is the connection's local address). It is metadata
// rather than a Hello field because it describes the connection, like the
// peer address it qualifies; meshwan-edge sends it (edge/syncer
// EgressTransportKey, equal by TestEgressKeyMatchesEdge).
const EgressTransportKey = "meshwan-egress-transport"

// egressTransport is the transport the edge says this stream egresses by,
// "" when it does not say (an older edge, or none of its transports).
func egressTransport(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	v := md.Get(EgressTransportKey)
	if len(v) != 1 {
		return ""
	}
	return v[0]
}

// peerAddr is the IP address the stream's connection comes from: behind
// NAT, the public address of the mapping; invalid when unknown.
func peerAddr(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// PreferPeer decides the address to record for each transport an edge
// reports: reported maps transport names to the addresses the edge sees
// on its own interfaces; egress names the transport the controller
// connection leaves by, peer is the address that connection arrives from.
// The egress transport gets peer, whatever the edge reported for it: an
// edge behind NAT sees its private address, the peers must send to the
// public one the NAT maps. The other transports keep their reported
// addresses (the controller observes nothing about them). nat reports
// that the edge's own address for the egress transport differs from peer
// (or that it reported none), i.e. a NAT (or a proxy) sits in between.
// Without egress or a valid peer, reported is returned unchanged.
func PreferPeer(reported map[string]netip.Addr, egress string, peer netip.Addr) (out map[string]netip.Addr, nat bool) {
	if egress == "" || !peer.IsValid() {
		return reported, false
	}
	out = maps.Clone(reported)
	if out == nil {
		out = map[string]netip.Addr{}
	}
	own, ok := out[egress]
	out[egress] = peer
	return out, !ok || own != peer
}

// observe stores the addresses the edge reports for its dynamic
// transports, the egress transport's taken from the connection (see
// PreferPeer). A refused address (unparsable, or one the peers' edges
// would refuse: see network.ObserveAddresses) leaves the stored one
// unchanged and does not end the stream (the edge keeps syncing); it is
// logged, added to the dashboard's events and counted.
func (e *Edge) observe(ctx context.Context, site string, ts []*pb.Transport, egress string, peer netip.Addr) error {
	reported := map[string]netip.Addr{}
	for _, t := range ts {
		a, err := netip.ParseAddr(t.GetAddress())
		if err != nil {
			e.refused(site, t.GetName(), t.GetAddress(), fmt.Errorf("%w: not an IP address", intent.ErrInvalid))
			continue
		}
		reported[t.GetName()] = a
	}
	addrs, nat := PreferPeer(reported, egress, peer)
	if nat {
		e.Log.Debug("edge's controller connection is translated: recording the connection's address for its transport",
			"site", site, "transport", validity.Quote(egress), "reported", reported[egress], "observed", peer)
	}
	refused, err := e.Net.ObserveAddresses(ctx, site, addrs)
	for _, r := range refused {
		e.refused(site, r.Transport, r.Addr.String(), r.Err)
	}
	return err
}

func (e *Edge) refused(site, transport, addr string, err error) {
	transport, addr = validity.Quote(transport), validity.Quote(addr)
	e.Log.Warn("edge-reported address refused; the stored address is kept", "site", site, "transport", transport, "address", addr, "err", err)
	e.event(fmt.Sprintf("edge %s reported address %s for transport %s: refused (%v)", site, addr, transport, err))
}

func recvHello(ctx context.Context, stream pb.EdgeService_SyncServer) (*pb.Hello, error) {
	type res struct {
		req *pb.SyncRequest
		err error
	}
	ch := make(chan res, 1)
	go func() { r, err := stream.Recv(); ch <- res{r, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.req.GetHello() == nil {
			return nil, status.Error(codes.InvalidArgument, "hello: the first message of a Sync stream must be a Hello")
		}
		return r.req.GetHello(), nil
	case <-time.After(helloTimeout):
		return nil, status.Error(codes.DeadlineExceeded, "hello: none received within 30s")
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// Package syncer owns the edge's one connection to the controller: a
// long-lived Sync stream over mTLS that delivers desired state down and
// status up, re-established with exponential backoff and jitter whenever it
// breaks. It converts the wire types to domain types at this boundary;
// nothing behind it sees protobuf.
package syncer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	edgebackoff "github.com/meshwan/meshwan/edge/backoff"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/identity"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// State is one desired-state version.
type State struct {
	Version int64
	Site    string
	ASN     uint32
	Desired dataplane.Desired
	// Hash is the controller's content hash of this state (empty from an
	// older controller): sent back in Hello so that a reconnect to a
	// controller that would send the same state transfers nothing, and
	// checked against a delta's base.
	Hash []byte `json:",omitempty"`

	// mtu and ipsec are the message's values every tunnel carries (for
	// applying a delta to the tunnels it does not resend).
	mtu   int
	ipsec dataplane.IPsecPolicy
}

// Report is one status report.
type Report struct {
	AppliedVersion int64
	Tunnels        []dataplane.TunnelStatus
	BGPPeers       []dataplane.BGPPeer
	ClassPaths     []dataplane.ClassPath
}

// Config configures a Syncer.
type Config struct {
	Controller   string // host:port
	Identity     *identity.Identity
	AgentVersion string
	// Applied returns the version the edge runs now (sent in Hello).
	Applied func() int64
	// Transports returns the edge's transports and the address each has
	// on its interface (may be nil). They are reported in Hello (the
	// controller records them for transports declared dynamic), the one
	// the controller connection leaves by is named in the stream's
	// metadata (EgressTransportKey: the controller then records the
	// connection's public address for it, which behind NAT is not the
	// interface's), and every desired state is localized with them
	// (dataplane.Localize: behind NAT, GRE and IKE run from the
	// interface's address).
	Transports func() map[string]netip.Addr
	Logger     *slog.Logger
	// Heartbeat is how often the last report is re-sent; it must be well
	// under the controller's 15 s status lease. Default 5 s.
	Heartbeat time.Duration
	// MinBackoff and MaxBackoff bound reconnect delays (defaults 500ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	// Initial is the state the edge holds at start (its cache), the base
	// for the first delta; nil when it holds none.
	Initial *State
	// OnReceive, when set, hears the wire size of every desired-state
	// message received and whether it was a delta (for metrics and the
	// fleet simulator).
	OnReceive func(bytes int, delta bool)
	// OnStream, when set, hears the stream come up (err nil) and go down
	// (with the error), for metrics and the fleet simulator.
	OnStream func(up bool, err error)
	// Renew, when set, renews the certificate (identity.Renew): the
	// Syncer calls it at the identity's RenewAt (2/3 of its lifetime),
	// then reconnects with the new identity. The data plane is not
	// touched, and the controller, seeing the state hash the edge holds,
	// resends nothing.
	Renew func(ctx context.Context, id *identity.Identity) (*identity.Identity, error)
}

// Syncer keeps the stream.
type Syncer struct {
	cfg     Config
	log     *slog.Logger
	updates chan State
	reports chan Report
	mu      sync.Mutex
	last    *Report
	// conn, id, gen, renewing and endSession are guarded by mu. gen counts
	// identity swaps; renewing is set while a renewal is in flight, when
	// the controller may already refuse the old certificate.
	conn       *grpc.ClientConn
	id         *identity.Identity
	gen        int
	renewing   bool
	endSession context.CancelFunc
	// held is the newest state received (the base of the next delta);
	// only the session's receive goroutine and session setup touch it,
	// never at the same time.
	held *State
}

// New returns a Syncer; Run drives it.
func New(cfg Config) (*Syncer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Applied == nil {
		cfg.Applied = func() int64 { return 0 }
	}
	conn, err := dial(cfg, cfg.Identity)
	if err != nil {
		return nil, err
	}
	return &Syncer{cfg: cfg, log: cfg.Logger, updates: make(chan State, 1), reports: make(chan Report, 1), conn: conn, id: cfg.Identity, held: cfg.Initial}, nil
}

// dial connects to cfg.Controller as id. The connection's own reconnect
// backoff starts at MinBackoff with ±20 % jitter (gRPC's default starts at
// 1 s and grows by 1.6): after a controller restart, a stream retry finds
// the connection up again within about a second instead of waiting out
// gRPC's growing delay, and a fleet still spreads its reconnects.
func dial(cfg Config, id *identity.Identity) (*grpc.ClientConn, error) {
	return grpc.NewClient(cfg.Controller,
		grpc.WithTransportCredentials(credentials.NewTLS(id.TLSConfig(identity.Host(cfg.Controller)))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: cfg.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.MaxBackoff},
			MinConnectTimeout: 20 * time.Second,
		}))
}

// Identity returns the identity in use.
func (s *Syncer) Identity() *identity.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// renewLoop renews the certificate at 2/3 of its lifetime, retrying a
// failed renewal with backoff from 1 s to 1 min, never later than a tenth
// of the time left.
func (s *Syncer) renewLoop(ctx context.Context) {
	var retryAt time.Time
	bo := edgebackoff.Policy{Min: time.Second, Max: time.Minute, Jitter: 0.2}.New()
	for {
		id := s.Identity()
		at := id.RenewAt()
		if retryAt.After(at) {
			at = retryAt
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		s.mu.Lock()
		s.renewing = true
		s.mu.Unlock()
		nid, err := s.cfg.Renew(ctx, id)
		if err != nil {
			s.mu.Lock()
			s.renewing = false
			s.mu.Unlock()
			left := time.Until(id.NotAfter())
			retryAt = time.Now().Add(min(bo.Next(), max(left/10, time.Second)))
			s.log.Error("certificate renewal failed", "err", err, "not_after", id.NotAfter(), "retry_at", retryAt)
			continue
		}
		conn, err := dial(s.cfg, nid)
		if err != nil {
			s.mu.Lock()
			s.renewing = false
			s.mu.Unlock()
			s.log.Error("dial with the renewed certificate", "err", err)
			retryAt = time.Now().Add(bo.Next())
			continue
		}
		retryAt = time.Time{}
		bo.Reset()
		s.mu.Lock()
		old := s.conn
		s.conn, s.id, s.renewing = conn, nid, false
		s.gen++
		end := s.endSession
		s.mu.Unlock()
		if end != nil {
			end() // reconnect with the new certificate
		}
		old.Close()
		s.log.Info("certificate renewed", "site", nid.Site, "not_after", nid.NotAfter())
	}
}

// Updates delivers desired states; it holds only the latest undelivered one.
func (s *Syncer) Updates() <-chan State { return s.updates }

// Report queues a status report (replacing an unsent older one).
func (s *Syncer) Report(r Report) {
	s.mu.Lock()
	s.last = &r
	s.mu.Unlock()
	select {
	case <-s.reports:
	default:
	}
	s.reports <- r
}

// ErrPermanent wraps stream errors that reconnecting will not fix.
var ErrPermanent = errors.New("controller refuses this edge")

// Run holds the stream until ctx ends. It returns ErrPermanent when the
// controller says this edge's certificate is no longer valid or its site is
// gone; otherwise it only returns ctx's error.
func (s *Syncer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		s.mu.Lock()
		s.conn.Close()
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Renew != nil {
		wg.Go(func() { s.renewLoop(ctx) })
	}
	// Jitter 0.8: a fleet that lost its controller together reconnects
	// spread over most of each delay, not in lockstep.
	bo := edgebackoff.Policy{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff, Jitter: 0.8}.New()
	for {
		started := time.Now()
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.swapped(ctx, gen) {
			// The certificate was renewed (the controller may have ended
			// the old stream as superseded first): reconnect at once.
			continue
		}
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied:
			return fmt.Errorf("%w: %v", ErrPermanent, err)
		}
		if time.Since(started) > time.Minute {
			bo.Reset()
		}
		wait := bo.Next()
		s.log.Warn("controller stream lost, reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		if s.cfg.OnStream != nil {
			s.cfg.OnStream(false, err)
		}
		s.mu.Lock()
		conn := s.conn
		s.mu.Unlock()
		if conn.GetState() == connectivity.Ready {
			// The stream failed on a working connection: wait it out.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		} else if s.waitReady(ctx, conn, wait) {
			// The connection itself was down (a controller restarting or
			// unreachable) and gRPC has it up again: retry now, after a
			// little jitter, instead of also waiting out our own timer
			// (two backoffs would stack: an edge that retried while the
			// controller was down would wait seconds after it is back).
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(rand.Int64N(int64(s.cfg.MinBackoff)/4 + 1))):
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// waitReady asks conn to connect and reports whether it became ready
// within d.
func (s *Syncer) waitReady(ctx context.Context, conn *grpc.ClientConn, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn.Connect()
	for {
		st := conn.GetState()
		if st == connectivity.Ready {
			return true
		}
		if !conn.WaitForStateChange(ctx, st) {
			return false
		}
	}
}

// swapped reports whether the identity changed since generation gen,
// waiting for a renewal in flight to finish first.
func (s *Syncer) swapped(ctx context.Context, gen int) bool {
	for {
		s.mu.Lock()
		renewing, cur := s.renewing, s.gen
		s.mu.Unlock()
		if !renewing {
			return cur != gen
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Syncer) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	conn := s.conn
	s.endSession = cancel
	s.mu.Unlock()
	sctx := ctx
	if s.cfg.Transports != nil {
		if name := EgressTransport(s.cfg.Transports(), egressAddr(ctx, s.cfg.Controller)); name != "" {
			sctx = metadata.AppendToOutgoingContext(ctx, EgressTransportKey, name)
		}
	}
	stream, err := pb.NewEdgeServiceClient(conn).Sync(sctx)
	if err != nil {
		return err
	}
	hello := &pb.Hello{AgentVersion: s.cfg.AgentVersion, AppliedVersion: s.cfg.Applied(), Deltas: true}
	if s.held != nil {
		hello.StateHash = s.held.Hash
	}
	var local map[string]netip.Addr
	if s.cfg.Transports != nil {
		local = s.cfg.Transports()
		for name, a := range local {
			hello.Transports = append(hello.Transports, &pb.Transport{Name: name, Address: a.String()})
		}
		// A transport's interface address may have changed while the
		// stream was down (the stream breaks with it): run the held
		// state again from the current addresses.
		if s.held != nil {
			s.publish(*s.held)
		}
	}
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: hello}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() { // owned by this session; ends with the stream
		for {
			d, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			delta := len(d.GetBaseHash()) > 0
			if s.cfg.OnReceive != nil {
				s.cfg.OnReceive(proto.Size(d), delta)
			}
			st, err := s.fold(d)
			if errors.Is(err, errBase) {
				// Only a full state can resynchronise: reconnect without
				// claiming a state.
				s.held = nil
				recvErr <- err
				return
			}
			if err != nil {
				s.log.Error("desired state rejected", "version", d.GetVersion(), "err", err)
				continue
			}
			s.held = &st
			s.publish(st)
		}
	}()
	s.log.Info("controller stream up", "controller", s.cfg.Controller)
	if s.cfg.OnStream != nil {
		s.cfg.OnStream(true, nil)
	}
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	for {
		var r *Report
		select {
		case err := <-recvErr:
			return err
		case rep := <-s.reports:
			r = &rep
		case <-tick.C:
			s.mu.Lock()
			r = s.last
			s.mu.Unlock()
			if r == nil {
				r = &Report{AppliedVersion: s.cfg.Applied()}
			}
		}
		if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Report{Report: reportToPB(*r)}}); err != nil {
			return err
		}
	}
}

// publish hands st to the agent, localized for the edge's transports
// (see Config.Transports), replacing an unread one.
func (s *Syncer) publish(st State) {
	if s.cfg.Transports != nil {
		st.Desired = dataplane.Localize(st.Desired, s.cfg.Transports())
	}
	select {
	case <-s.updates:
	default:
	}
	s.updates <- st
}

// EgressTransportKey is the Sync stream's metadata key naming the
// transport the controller connection leaves by; the controller records
// the connection's address (the NAT's public one) for it. It must equal
// controller/api.EgressTransportKey.
const EgressTransportKey = "meshwan-egress-transport"

// EgressTransport names the transport whose interface address is local,
// the source address of the controller connection; "" when none is (the
// connection leaves by a management link, or local is unknown). Two
// transports on one address cannot be told apart: the first by name wins.
func EgressTransport(transports map[string]netip.Addr, local netip.Addr) string {
	if !local.IsValid() {
		return ""
	}
	best := ""
	for name, a := range transports {
		if a == local && (best == "" || name < best) {
			best = name
		}
	}
	return best
}

// egressAddr is the source address the kernel picks towards the
// controller: a connected UDP socket sends nothing but resolves the route
// the TCP connection takes, without having to reach into gRPC's
// connection. Invalid when it cannot be found.
func egressAddr(ctx context.Context, controller string) netip.Addr {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", controller)
	if err != nil {
		return netip.Addr{}
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// errBase is a delta whose base is not the state this edge holds.
var errBase = errors.New("desired-state delta does not apply to the state held")

// fold turns a received message into the complete state it describes: a
// full state as is, a delta applied to the held state (whose hash must be
// the delta's base).
func (s *Syncer) fold(d *pb.DesiredState) (State, error) {
	if b := d.GetBaseHash(); len(b) > 0 && bytes.Equal(b, d.GetStateHash()) {
		// "What you hold is current": keep it as it is (same version, so
		// the agent only re-applies it, like a resync).
		if s.held == nil || !bytes.Equal(s.held.Hash, b) {
			return State{}, fmt.Errorf("%w (version %d)", errBase, d.GetVersion())
		}
		return *s.held, nil
	}
	st, err := FromPB(d)
	if err != nil {
		return State{}, err
	}
	if len(d.GetBaseHash()) == 0 {
		return st, nil
	}
	if s.held == nil || !bytes.Equal(s.held.Hash, d.GetBaseHash()) {
		return State{}, fmt.Errorf("%w (version %d)", errBase, d.GetVersion())
	}
	return applyDelta(*s.held, st, d.GetRemovedTunnels()), nil
}

// applyDelta returns base with delta applied: every field from delta, the
// tunnels of base replaced or extended by delta's tunnels (by id), those
// in removed dropped, in id order. The tunnel fields a state carries once
// for all tunnels (MTU, IPsec policy) follow delta on the tunnels it did
// not resend.
func applyDelta(base, delta State, removed []string) State {
	out := delta
	out.Desired.Tunnels = nil
	byID := make(map[string]dataplane.Tunnel, len(base.Desired.Tunnels)+len(delta.Desired.Tunnels))
	for _, t := range base.Desired.Tunnels {
		t.MTU, t.IPsec = delta.mtu, delta.ipsec
		byID[t.ID] = t
	}
	for _, t := range delta.Desired.Tunnels {
		byID[t.ID] = t
	}
	for _, id := range removed {
		delete(byID, id)
	}
	for _, t := range byID {
		out.Desired.Tunnels = append(out.Desired.Tunnels, t)
	}
	slices.SortFunc(out.Desired.Tunnels, func(a, b dataplane.Tunnel) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// tunnelStates converts the data plane's states at the wire, the one
// place they meet protobuf.
var tunnelStates = map[dataplane.TunnelState]pb.TunnelState{
	dataplane.TunnelUp:       pb.TunnelState_TUNNEL_STATE_UP,
	dataplane.TunnelDegraded: pb.TunnelState_TUNNEL_STATE_DEGRADED,
	dataplane.TunnelDown:     pb.TunnelState_TUNNEL_STATE_DOWN,
}

func reportToPB(r Report) *pb.EdgeReport {
	out := &pb.EdgeReport{AppliedVersion: r.AppliedVersion}
	for _, p := range r.BGPPeers {
		out.BgpPeers = append(out.BgpPeers, &pb.BGPPeerStatus{Neighbor: p.Neighbor, Asn: p.ASN, TunnelId: p.TunnelID, State: p.State,
			Received: p.Received, Accepted: p.Accepted, Advertised: p.Advertised})
	}
	for _, t := range r.Tunnels {
		out.Tunnels = append(out.Tunnels, &pb.TunnelStatus{TunnelId: t.ID, State: tunnelStates[t.State], LinkUp: t.LinkUp,
			IkeState: t.IKEState, ChildState: t.ChildState, BytesIn: t.BytesIn, BytesOut: t.BytesOut,
			PacketsIn: t.PacketsIn, PacketsOut: t.PacketsOut, Detail: t.Detail,
			Probed: t.Probed, ProbeState: t.ProbeState.String(), RttMs: millis(t.RTT), RttP99Ms: millis(t.RTTP99),
			JitterMs: millis(t.Jitter), LossPct: t.LossPct, Transitions: t.Transitions, Usable: t.Usable,
			PskSerial: t.PSKSerial})
	}
	for _, c := range r.ClassPaths {
		out.ClassPaths = append(out.ClassPaths, &pb.ClassPath{TrafficClass: c.Class, RemoteSite: c.RemoteSite, TunnelId: c.TunnelID, MeetsSla: c.MeetsSLA})
	}
	return out
}

// FromPB converts a desired state from the wire, naming the bad field on
// error.
func FromPB(d *pb.DesiredState) (State, error) {
	st := State{Version: d.GetVersion(), Site: d.GetSite(), ASN: d.GetAsn(), Hash: d.GetStateHash(), mtu: int(d.GetMtu())}
	st.Desired.Site = d.GetSite()
	st.Desired.ASN = d.GetAsn()
	st.Desired.BGP = d.GetRouting() == pb.RoutingMode_ROUTING_MODE_BGP
	for i, p := range d.GetLanPrefixes() {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return State{}, fmt.Errorf("lan_prefixes[%d]: %w", i, err)
		}
		st.Desired.LANPrefixes = append(st.Desired.LANPrefixes, pfx)
	}
	pol := dataplane.IPsecPolicy{
		IKEProposal: d.GetIpsec().GetIkeProposal(), IKELifetime: time.Duration(d.GetIpsec().GetIkeLifetimeSeconds()) * time.Second,
		ESPProposal: d.GetIpsec().GetEspProposal(), ESPLifetime: time.Duration(d.GetIpsec().GetEspLifetimeSeconds()) * time.Second,
		DPDInterval: time.Duration(d.GetIpsec().GetDpdSeconds()) * time.Second,
	}
	st.ipsec = pol
	for i, t := range d.GetTunnels() {
		field := func(f string) string { return fmt.Sprintf("tunnels[%d](%s).%s", i, t.GetId(), f) }
		lu, err := netip.ParseAddr(t.GetLocalUnderlay())
		if err != nil {
			return State{}, fmt.Errorf("%s: %w", field("local_underlay"), err)
		}
		ru, err := netip.ParseAddr(t.GetRemoteUnderlay())
		if err != nil {
			return State{}, fmt.Errorf("%s: %w", field("remote_underlay"), err)
		}
		li, err := netip.ParsePrefix(t.GetLocalInner())
		if err != nil {
			return State{}, fmt.Errorf("%s: %w", field("local_inner"), err)
		}
		ri, err := netip.ParseAddr(t.GetRemoteInner())
		if err != nil {
			return State{}, fmt.Errorf("%s: %w", field("remote_inner"), err)
		}
		tun := dataplane.Tunnel{
			ID: t.GetId(), LinkName: dataplane.LinkName(li),
			LocalUnderlay: lu, RemoteUnderlay: ru, LocalInner: li, RemoteInner: ri, MTU: int(d.GetMtu()),
			RemoteSite: t.GetRemoteSite(), PSK: t.GetPsk(), IPsec: pol,
			AcceptPSKs: t.GetAcceptPsks(), PSKSerial: t.GetPskSerial(),
			// The controller names the initiator (EdgeTunnel.role); an
			// older controller does not, and then the A end, which it gives
			// the lower /30 address, initiates and the B end is passive.
			Passive:         t.GetRole() == pb.TunnelRole_TUNNEL_ROLE_RESPONDER || t.GetRole() == pb.TunnelRole_TUNNEL_ROLE_UNSPECIFIED && ri.Less(li.Addr()),
			RemoteUnmanaged: t.GetRemoteUnmanaged(),
			RemoteASN:       t.GetRemoteAsn(),
			LocalTransport:  t.GetLocalTransport(), RemoteTransport: t.GetRemoteTransport(),
		}
		for j, p := range t.GetRemoteLanPrefixes() {
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				return State{}, fmt.Errorf("%s[%d]: %w", field("remote_lan_prefixes"), j, err)
			}
			tun.RemoteLANs = append(tun.RemoteLANs, pfx)
		}
		st.Desired.Tunnels = append(st.Desired.Tunnels, tun)
	}
	paths, err := policyFromPB(d.GetPathPolicy())
	if err != nil {
		return State{}, fmt.Errorf("path_policy.%w", err)
	}
	st.Desired.Paths = paths
	return st, nil
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fromMillis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// policyFromPB converts the path policy. The controller validated it;
// this only refuses what cannot be represented (the data plane's Validate
// checks the rest).
func policyFromPB(p *pb.PathPolicy) (dataplane.PathPolicy, error) {
	out := dataplane.PathPolicy{
		Disabled:      p.GetDisabled(),
		ProbeInterval: time.Duration(p.GetProbeIntervalMs()) * time.Millisecond,
		DownAfter:     int(p.GetDownAfter()), UpAfter: int(p.GetUpAfter()),
		HoldDown: time.Duration(p.GetHoldDownMs()) * time.Millisecond,
	}
	for _, s := range p.GetSlaClasses() {
		out.SLAs = append(out.SLAs, dataplane.SLA{Name: s.GetName(), MaxRTT: fromMillis(s.GetMaxRttMs()), MaxLossPct: s.GetMaxLossPct(),
			MaxJitter: fromMillis(s.GetMaxJitterMs()), Transports: s.GetTransportPreference(),
			Damping: time.Duration(s.GetDampingMs()) * time.Millisecond})
	}
	for i, c := range p.GetTrafficClasses() {
		tc := dataplane.TrafficClass{Name: c.GetName(), SLA: c.GetSlaClass(), Protocol: c.GetProtocol()}
		for j, d := range c.GetDscp() {
			if d > 63 {
				return dataplane.PathPolicy{}, fmt.Errorf("traffic_classes[%d].dscp[%d]: %d is not a DSCP (0..63)", i, j, d)
			}
			tc.DSCP = append(tc.DSCP, uint8(d))
		}
		for j, s := range c.GetPorts() {
			r, err := dataplane.ParsePortRange(s)
			if err != nil {
				return dataplane.PathPolicy{}, fmt.Errorf("traffic_classes[%d].ports[%d]: %w", i, j, err)
			}
			tc.Ports = append(tc.Ports, r)
		}
		for j, s := range c.GetDestinations() {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				return dataplane.PathPolicy{}, fmt.Errorf("traffic_classes[%d].destinations[%d]: %w", i, j, err)
			}
			tc.Destinations = append(tc.Destinations, pfx)
		}
		out.Classes = append(out.Classes, tc)
	}
	return out.WithDefaults(), nil
}

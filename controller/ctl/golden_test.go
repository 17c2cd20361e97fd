package ctl

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name (or rewrites it with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func render(fn func(w *bytes.Buffer)) string {
	var b bytes.Buffer
	fn(&b)
	return b.String()
}

var (
	goldenTunnels = []*pb.Tunnel{
		{Id: "hq.inet1~remote.inet1", Prefix: "10.255.0.0/30",
			A: &pb.TunnelEnd{Site: "hq", Transport: "inet1", UnderlayAddress: "96.3.36.10", InnerAddress: "10.255.0.1/30", Asn: 4200000000},
			B: &pb.TunnelEnd{Site: "remote", Transport: "inet1", UnderlayAddress: "110.19.112.126", InnerAddress: "10.255.0.2/30", Asn: 4200000001}},
		{Id: "hq.inet1~br2.inet1", Prefix: "10.255.0.4/30",
			A: &pb.TunnelEnd{Site: "hq", Transport: "inet1", UnderlayAddress: "96.3.36.10", InnerAddress: "10.255.0.5/30"},
			B: &pb.TunnelEnd{Site: "br2", Transport: "lte", UnderlayAddress: "dynamic", InnerAddress: "10.255.0.6/30"}},
	}
	goldenSites = []*pb.Site{
		{Name: "hq", Role: pb.SiteRole_SITE_ROLE_HUB, Asn: 4200000000, Transports: []*pb.Transport{{Name: "inet1", Address: "96.3.36.10"}},
			LanPrefixes: []string{"10.1.1.0/24"}, Status: &pb.SiteStatus{State: pb.EdgeState_EDGE_STATE_UP, Tunnels: []*pb.TunnelStatus{
				{TunnelId: "hq.inet1~remote.inet1", State: pb.TunnelState_TUNNEL_STATE_UP, Probed: true, RttMs: 21.5, LossPct: 0},
				{TunnelId: "hq.inet1~br2.inet1", State: pb.TunnelState_TUNNEL_STATE_DOWN, Probed: true, RttMs: 0, LossPct: 100, Detail: "no IKE SA"}}}},
		{Name: "remote", Role: pb.SiteRole_SITE_ROLE_SPOKE, Asn: 4200000001, Transports: []*pb.Transport{{Name: "inet1", Address: "110.19.112.126"}, {Name: "lte", Address: "dynamic"}},
			LanPrefixes: []string{"10.2.1.0/24", "10.2.2.0/24"}, Status: &pb.SiteStatus{State: pb.EdgeState_EDGE_STATE_DOWN,
				LastSeen: timestamppb.New(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)),
				Tunnels:  []*pb.TunnelStatus{{TunnelId: "hq.inet1~remote.inet1", State: pb.TunnelState_TUNNEL_STATE_DEGRADED, Probed: true, RttMs: 35, LossPct: 6}}}},
		{Name: "br2", Role: pb.SiteRole_SITE_ROLE_SPOKE, Asn: 4200000002, Transports: []*pb.Transport{{Name: "lte", Address: "dynamic"}},
			LanPrefixes: []string{"10.3.0.0/24"}, Status: &pb.SiteStatus{State: pb.EdgeState_EDGE_STATE_NEVER_SEEN}},
	}
)

func TestGoldenTables(t *testing.T) {
	golden(t, "sites.txt", render(func(w *bytes.Buffer) { sitesTable(w, goldenSites) }))
	golden(t, "tunnels.txt", render(func(w *bytes.Buffer) { tunnelsTable(w, goldenTunnels) }))
	golden(t, "status.txt", render(func(w *bytes.Buffer) { fleetText(w, summarize(goldenSites, goldenTunnels)) }))
	golden(t, "tokens.txt", render(func(w *bytes.Buffer) {
		at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		tokensTable(w, []*pb.EnrollmentToken{
			{Id: "a1b2", Site: "remote", CreatedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(24 * time.Hour))},
			{Id: "c3d4", Site: "hq", CreatedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(time.Hour)), Used: true},
			{Id: "e5f6", CreatedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(time.Minute))},
			{Id: "f7a8", Claim: true, CreatedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.AddDate(1, 0, 0))},
		}, at.Add(2*time.Hour))
	}))
	golden(t, "claim-token.txt", render(func(w *bytes.Buffer) {
		at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		claimTokenText(w, &pb.EnrollmentToken{Id: "f7a8", Claim: true, Secret: "f7a8.0123456789abcdef", CaSha256: "9f86d081884c7d65", ExpiresAt: timestamppb.New(at.AddDate(1, 0, 0))})
	}))
	golden(t, "devices.txt", render(func(w *bytes.Buffer) {
		now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		devicesTable(w, []*pb.Device{
			{DeviceId: "machine-0a1b2c", State: pb.DeviceState_DEVICE_STATE_PENDING, Hostname: "edge-img", PublicKeySha256: "4e1f0c8d2b7a99aa0011223344556677",
				LastSeen: timestamppb.New(now.Add(-12 * time.Second)), ExpiresAt: timestamppb.New(now.Add(23*time.Hour + 59*time.Minute))},
			{DeviceId: "serial-FGT60F123", State: pb.DeviceState_DEVICE_STATE_APPROVED, Site: "br7"},
			{DeviceId: "serial-X1", State: pb.DeviceState_DEVICE_STATE_ENROLLED, Site: "br2", Hostname: "br2-rtr", PublicKeySha256: "aa", LastSeen: timestamppb.New(now.Add(-3 * time.Hour))},
			{DeviceId: "serial-BAD", State: pb.DeviceState_DEVICE_STATE_REJECTED},
		}, now)
	}))
	golden(t, "identities.txt", render(func(w *bytes.Buffer) {
		now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		year := 365 * 24 * time.Hour
		identitiesTable(w, []*pb.SiteIdentity{
			{Site: "br1", Serial: "7f3a", EnrolledAt: timestamppb.New(now.Add(-100 * 24 * time.Hour)), NotAfter: timestamppb.New(now.Add(year - 100*24*time.Hour))},
			{Site: "br2", Serial: "1c2d", DeviceId: "serial-X1", EnrolledAt: timestamppb.New(now.Add(-330 * 24 * time.Hour)), NotAfter: timestamppb.New(now.Add(35 * 24 * time.Hour))},
			{Site: "br3", Serial: "99", EnrolledAt: timestamppb.New(now.Add(-year - time.Hour)), NotAfter: timestamppb.New(now.Add(-time.Hour))},
			{Site: "hq", Serial: "ab", Revoked: true, EnrolledAt: timestamppb.New(now.Add(-time.Hour)), NotAfter: timestamppb.New(now.Add(year))},
		}, now)
	}))
	golden(t, "topology.txt", render(func(w *bytes.Buffer) {
		topologyTable(w, &pb.Topology{Mode: pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, TransportMatch: pb.TransportMatch_TRANSPORT_MATCH_SAME_NAME, Mtu: 1400,
			Ipsec:           &pb.IPsecPolicy{IkeProposal: "aes256-sha256-modp2048", IkeLifetimeSeconds: 28800, EspProposal: "aes256gcm16-modp2048", EspLifetimeSeconds: 3600, DpdSeconds: 30},
			PathPolicy:      &pb.PathPolicy{ProbeIntervalMs: 100, DownAfter: 5, UpAfter: 3, HoldDownMs: 2000, SlaClasses: []*pb.SLAClass{{Name: "realtime"}}, TrafficClasses: []*pb.TrafficClass{{Name: "voice", SlaClass: "realtime"}}},
			TransitPrefixes: []string{"10.0.0.0/9"}})
	}))
	golden(t, "credentials.txt", render(func(w *bytes.Buffer) {
		at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		credentialsTable(w, []*pb.Credential{
			{Id: "0a1b2c3d4e5f6071", Name: "noc", Role: pb.AdminRole_ADMIN_ROLE_READ_ONLY, CreatedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(720 * time.Hour))},
			{Id: "1122334455667788", Name: "ci-pipeline", Role: pb.AdminRole_ADMIN_ROLE_OPERATOR, CreatedAt: timestamppb.New(at)},
			{Id: "99aabbccddeeff00", Name: "alice@corp", Role: pb.AdminRole_ADMIN_ROLE_ADMIN, CreatedAt: timestamppb.New(at), Revoked: true},
			{Id: "aabbccddeeff0011", Name: "temp", Role: pb.AdminRole_ADMIN_ROLE_OPERATOR, CreatedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(time.Hour))},
		}, at.Add(2*time.Hour))
	}))
	golden(t, "credential-created.txt", render(func(w *bytes.Buffer) {
		at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
		credentialCreatedText(w, &pb.CreateCredentialResponse{Secret: "0a1b2c3d4e5f6071.q83vEjRWeJBq83vEjRWeJBq83vEjRWeJBq83vEjRWeJA",
			Credential: &pb.Credential{Id: "0a1b2c3d4e5f6071", Name: "noc", Role: pb.AdminRole_ADMIN_ROLE_READ_ONLY, CreatedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(720 * time.Hour))}})
	}))
	var y bytes.Buffer
	if err := emit(&y, formatYAML, goldenTunnels[0], nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "tunnel.yaml", y.String())
}

func TestGoldenPlans(t *testing.T) {
	full := &pb.ApplyNetworkResponse{Changed: true, SitesCreated: []string{"br3"}, SitesUpdated: []*pb.SiteUpdate{{Name: "br1", Fields: []string{"role", "lan_prefixes"}}},
		SitesDeleted: []string{"old"}, TopologyChanges: []string{"mode", "mtu"}, TunnelsAdded: []string{"hq.inet1~br3.inet1"},
		TunnelsRemoved: []string{"hq.inet1~old.inet1"}, TunnelsKept: 12}
	golden(t, "plan.txt", render(func(w *bytes.Buffer) { planText(w, full, "net.yaml", false) }))
	golden(t, "apply.txt", render(func(w *bytes.Buffer) { planText(w, full, "net.yaml", true) }))
	golden(t, "plan-nochange.txt", render(func(w *bytes.Buffer) {
		planText(w, &pb.ApplyNetworkResponse{TunnelsKept: 1, SitesNotInRequest: []string{"lab1", "lab2"}}, "seed.yaml", false)
	}))
}

func TestConvergence(t *testing.T) {
	done, lag := convergence([]string{"hq", "remote", "br2", "gone"}, goldenSites, goldenTunnels)
	var b bytes.Buffer
	for _, l := range lag {
		b.WriteString(l.Site + ": " + l.Reason + "\n")
	}
	if done != 0 {
		t.Errorf("done %d", done)
	}
	golden(t, "lag.txt", b.String())
}

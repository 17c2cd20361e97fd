package api

import (
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/fuzzcorpus"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/intent"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The fuzz targets below feed what a client can send — REST JSON bodies,
// Sync messages from edges — through the same decoding and conversions
// the controller uses, and check:
//   - nothing panics;
//   - a refusal is an intent.ErrInvalid (or ErrPrecondition) error of
//     bounded length (errors never quote unbounded input);
//   - an accepted value survives every second conversion it meets later
//     (domain -> proto -> REST JSON -> proto -> domain, and the JSON the
//     store keeps) unchanged, and validates again.
// Seeds: testdata/fuzz/<FuzzName>/ (committed), written from the seed
// lists here by MESHWAN_WRITE_CORPUS=1 go test -run '^Fuzz' ./controller/api.

// gatewayJSON is how the REST gateway decodes a body and encodes a
// response (NewGateway in server.go).
var (
	gatewayIn  = protojson.UnmarshalOptions{DiscardUnknown: false}
	gatewayOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
)

// maxErrLen bounds an error message: field names and a value truncated
// to about 64 bytes fit well within it.
const maxErrLen = 512

func checkRefusal(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, intent.ErrInvalid) && !errors.Is(err, intent.ErrPrecondition) && !errors.Is(err, intent.ErrConflict) {
		t.Fatalf("%s refused with an error that maps to no client code: %v", what, err)
	}
	if n := len(err.Error()); n > maxErrLen {
		t.Fatalf("%s refused with a %d-byte error (max %d): %.200s...", what, n, maxErrLen, err)
	}
}

// restRoundTrip encodes m as the gateway would in a response and decodes
// it as it would in a request.
func restRoundTrip[M proto.Message](t *testing.T, m M, fresh M) M {
	t.Helper()
	js, err := gatewayOut.Marshal(m)
	if err != nil {
		t.Fatalf("REST encoding of an accepted %T: %v", m, err)
	}
	if err := gatewayIn.Unmarshal(js, fresh); err != nil {
		t.Fatalf("the REST encoding of an accepted %T does not decode: %v\n%s", m, err, js)
	}
	return fresh
}

// storeRoundTrip encodes v as the store keeps it (encoding/json) and
// decodes it again.
func storeRoundTrip[V any](t *testing.T, v V) V {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("store encoding of an accepted %T: %v", v, err)
	}
	var out V
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("the store encoding of an accepted %T does not decode: %v\n%s", v, err, raw)
	}
	return out
}

// checkSite runs the controller's pipeline for one site body and the
// round-trip invariants; it reports whether the site was accepted.
func checkSite(t *testing.T, m *pb.Site) (intent.Site, bool) {
	t.Helper()
	s, err := siteFromPB(m)
	if err == nil {
		err = s.Validate()
	}
	if err != nil {
		checkRefusal(t, "site", err)
		return intent.Site{}, false
	}
	back := siteToPB(s, nil)
	again, err := siteFromPB(restRoundTrip(t, back, &pb.Site{}))
	if err != nil {
		t.Fatalf("accepted site %+v does not convert back: %v", s, err)
	}
	if !reflect.DeepEqual(again, s) {
		t.Fatalf("site changed on the way back:\n got %+v\nwant %+v", again, s)
	}
	if err := again.Validate(); err != nil {
		t.Fatalf("accepted site refused after a round trip: %v", err)
	}
	if stored := storeRoundTrip(t, s); !reflect.DeepEqual(stored, s) {
		t.Fatalf("site changed in the store encoding:\n got %+v\nwant %+v", stored, s)
	}
	return s, true
}

func checkTopology(t *testing.T, m *pb.Topology, sites []intent.Site) {
	t.Helper()
	topo, err := topologyFromPB(m)
	if err == nil {
		err = topo.Validate(sites)
	}
	if err != nil {
		checkRefusal(t, "topology", err)
		return
	}
	again, err := topologyFromPB(restRoundTrip(t, topologyToPB(topo), &pb.Topology{}))
	if err != nil {
		t.Fatalf("accepted topology %+v does not convert back: %v", topo, err)
	}
	if !reflect.DeepEqual(again, topo) {
		t.Fatalf("topology changed on the way back:\n got %+v\nwant %+v", again, topo)
	}
	if err := again.Validate(sites); err != nil {
		t.Fatalf("accepted topology refused after a round trip: %v", err)
	}
	if stored := storeRoundTrip(t, topo); !reflect.DeepEqual(stored, topo) {
		t.Fatalf("topology changed in the store encoding:\n got %+v\nwant %+v", stored, topo)
	}
	// The controller fills unset fields with defaults before it derives
	// desired states: the defaults must not turn a valid topology invalid.
	if err := topo.WithDefaults().Validate(sites); err != nil {
		t.Fatalf("accepted topology refused once defaulted: %v", err)
	}
}

// Nasty cases of issue 11, as REST bodies.
var siteSeeds = [][]byte{
	[]byte(`{"name":"hq","role":"SITE_ROLE_HUB","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/16"]}`),
	[]byte(`{"name":"b1","transports":[{"name":"inet1","address":"dynamic"},{"name":"lte","address":"203.0.113.9"}],"lan_prefixes":["10.2.0.0/24","10.3.0.0/24"],"asn":4200000001}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"0.0.0.0"}],"lan_prefixes":["10.0.0.0/8"]}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"127.0.0.1"}],"lan_prefixes":["127.0.0.0/8"]}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"224.0.0.1"}],"lan_prefixes":["224.0.0.0/4","169.254.0.0/16"]}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["198.51.100.0/24"]}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"10.255.0.1"}],"lan_prefixes":["10.1.0.0/16"],"asn":23456}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/16"],"asn":65535}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/16"],"asn":4294967295}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.1/16","0.0.0.0/0","::/0","10.1.0.0/33"]}`),
	[]byte(`{"name":"x","transports":[{"name":"inet1","address":"198.51.100.1"},{"name":"inet1","address":"198.51.100.2"}],"lan_prefixes":["10.1.0.0/16","10.1.2.0/24"]}`),
	[]byte(`{"name":"x","role":99,"transports":[{"name":"","address":"::1"}],"lan_prefixes":[" 10.1.0.0/16"],"unknown":1}`),
	[]byte(`{"name":"` + strings.Repeat("a", 40) + `","transports":[{"name":"` + strings.Repeat("t", 20) + `","address":"1.2.3.4"}],"lan_prefixes":["10.9.0.0/16"]}`),
	[]byte(`{"name":"ümlaut","transports":[{"name":"inet1","address":"1.2.3.4%eth0"}],"lan_prefixes":["10.9.0.0/16"]}`),
	[]byte(`{"name":"x","transports":[],"lan_prefixes":[]}`),
	[]byte(`{}`),
	[]byte(`null`),
}

func siteJSONOne(t *testing.T, b []byte) {
	var m pb.Site
	if gatewayIn.Unmarshal(b, &m) != nil {
		return
	}
	checkSite(t, &m)
}

// FuzzSiteJSON: a REST site body (POST /v1/sites, PUT /v1/sites/{name}).
func FuzzSiteJSON(f *testing.F) {
	fuzzcorpus.Add(f, siteSeeds...)
	f.Fuzz(siteJSONOne)
}

var topologySeeds = [][]byte{
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH"}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_HUB_AND_SPOKE","transport_match":"TRANSPORT_MATCH_ALL_PAIRS","routing":"ROUTING_MODE_BGP","mtu":1400,"transit_prefixes":["10.0.0.0/8"]}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","ipsec":{"ike_proposal":"aes256-sha256-modp2048","ike_lifetime_seconds":28800,"esp_proposal":"aes256gcm16","esp_lifetime_seconds":3600,"dpd_seconds":30}}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","ipsec":{"ike_proposal":"zzz-yyy","esp_proposal":"banana"}}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","ipsec":{"ike_lifetime_seconds":4294967295,"esp_lifetime_seconds":4294967295,"dpd_seconds":4294967295}}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","ipsec":{"ike_lifetime_seconds":600,"esp_lifetime_seconds":601}}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","mtu":1279}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","mtu":9001}`),
	[]byte(`{"mode":7,"transport_match":9,"routing":5}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","path_policy":{"probe_interval_ms":50,"down_after":4,"up_after":2,"hold_down_ms":3000,` +
		`"sla_classes":[{"name":"realtime","max_rtt_ms":150.5,"max_loss_pct":2,"max_jitter_ms":30,"transport_preference":["inet1","inet2"],"damping_ms":1000}],` +
		`"traffic_classes":[{"name":"voice","sla_class":"realtime","dscp":[46,34],"protocol":"udp","ports":["5004-5005","5060"],"destinations":["10.0.0.0/8","0.0.0.0/0"]}]}}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","path_policy":{"sla_classes":[{"name":"x","max_rtt_ms":1e300,"max_loss_pct":-1,"max_jitter_ms":0.0000001}],` +
		`"traffic_classes":[{"name":"y","sla_class":"x","dscp":[64],"ports":["0-70000","5-4"],"destinations":["10.0.0.1/8"]}]}}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","path_policy":{"sla_classes":[{"name":"x","max_rtt_ms":"NaN","max_jitter_ms":"Infinity"}]}}`),
	[]byte(`{"mode":"TOPOLOGY_MODE_FULL_MESH","transit_prefixes":["10.0.0.0/8","10.1.0.0/16","0.0.0.0/0","127.0.0.0/8"]}`),
	[]byte(`{}`),
}

// FuzzTopologyJSON: a REST topology body (PUT /v1/topology), checked
// against no sites (a hub-and-spoke topology is then a precondition
// error, like on an empty controller).
func FuzzTopologyJSON(f *testing.F) {
	fuzzcorpus.Add(f, topologySeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.Topology
		if gatewayIn.Unmarshal(b, &m) != nil {
			return
		}
		checkTopology(t, &m, nil)
	})
}

// FuzzApplyNetworkJSON: a REST network body (POST /v1/network:apply):
// every site on its own, the sites against each other (intent.CheckSite,
// as the controller does within one request) and the topology against
// the accepted sites.
func FuzzApplyNetworkJSON(f *testing.F) {
	seeds := [][]byte{
		[]byte(`{"sites":[` + string(siteSeeds[0]) + `,` + string(siteSeeds[1]) + `],"topology":{"mode":"TOPOLOGY_MODE_HUB_AND_SPOKE"},"prune":true}`),
		[]byte(`{"sites":[` + string(siteSeeds[0]) + `,` + string(siteSeeds[0]) + `],"topology":{"mode":"TOPOLOGY_MODE_FULL_MESH"},"dry_run":true}`),
		// One site's LAN holds another site's underlay address.
		[]byte(`{"sites":[{"name":"a","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/16"]},` +
			`{"name":"b","transports":[{"name":"inet1","address":"10.1.2.3"}],"lan_prefixes":["10.2.0.0/16"]}],"topology":{"mode":"TOPOLOGY_MODE_FULL_MESH"}}`),
		[]byte(`{"sites":[{"name":"a","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.0.0/16"]},` +
			`{"name":"b","transports":[{"name":"inet1","address":"198.51.100.1"}],"lan_prefixes":["10.1.128.0/17"]}],"topology":{}}`),
		[]byte(`{"sites":[],"topology":null}`),
	}
	fuzzcorpus.Add(f, seeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.ApplyNetworkRequest
		if gatewayIn.Unmarshal(b, &req) != nil {
			return
		}
		var accepted []intent.Site
		for _, m := range req.GetSites() {
			s, ok := checkSite(t, m)
			if !ok {
				continue
			}
			if err := intent.CheckSite(s, accepted, nil, netip.MustParsePrefix("10.255.0.0/16")); err != nil {
				checkRefusal(t, "site against the others", err)
				continue
			}
			accepted = append(accepted, s)
		}
		if req.Topology != nil {
			checkTopology(t, req.Topology, accepted)
		}
	})
}

// FuzzSyncRequest: a message an enrolled edge sends on its Sync stream
// (proto wire bytes), through what Sync does with it: the hello's
// transport addresses are filtered to IPv4, a report becomes a
// health.Report whose fingerprint is taken, which is stored as JSON and
// served to admins as a SiteStatus. Invariants: no panic; the stored
// JSON encodes and decodes; the admin view encodes; every figure served
// is finite and non-negative, a loss at most 100 %.
func FuzzSyncRequest(f *testing.F) {
	nan, inf := math.NaN(), math.Inf(1)
	msgs := []*pb.SyncRequest{
		{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{AgentVersion: "v1", AppliedVersion: 3, StateHash: []byte("h"),
			Transports: []*pb.Transport{{Name: "inet1", Address: "198.51.100.7"}, {Name: "lte", Address: "0.0.0.0"},
				{Name: "x", Address: "224.0.0.1"}, {Name: "y", Address: "::1"}, {Name: "z", Address: "not an address"}}}}},
		{Msg: &pb.SyncRequest_Report{Report: &pb.EdgeReport{AppliedVersion: 9,
			Tunnels: []*pb.TunnelStatus{{TunnelId: "hq.inet1~b1.inet1", State: pb.TunnelState_TUNNEL_STATE_UP, LinkUp: true,
				RttMs: 12.5, RttP99Ms: 20, JitterMs: 1, LossPct: 0.5, Probed: true, Usable: true, BytesIn: 1 << 40},
				{TunnelId: "t2", State: 42, RttMs: nan, RttP99Ms: inf, JitterMs: -3, LossPct: 250}},
			BgpPeers:   []*pb.BGPPeerStatus{{Neighbor: "10.255.0.2", Asn: 4200000001, State: "established", Received: 3}},
			ClassPaths: []*pb.ClassPath{{TrafficClass: "voice", RemoteSite: "hq", TunnelId: "t2", MeetsSla: true}}}}},
		{Msg: &pb.SyncRequest_Report{Report: &pb.EdgeReport{Tunnels: []*pb.TunnelStatus{{}, {}, {}}}}},
	}
	var seeds [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	fuzzcorpus.Add(f, append(seeds, []byte{}, []byte{0x12, 0x00})...)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.SyncRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		// A hello's transport addresses go to Network.ObserveAddresses,
		// which needs a store: they are not fuzzed here.
		r := req.GetReport()
		if r == nil {
			return
		}
		lim := limitsFor(len(r.GetTunnels())) // a site with as many tunnels as reported: nothing is cut
		rep := reportFromPB(req.GetHello().GetAgentVersion(), r, lim)
		if n, m := len(rep.Tunnels)+len(rep.BGPPeers)+len(rep.ClassPaths), len(r.GetTunnels())+len(first(r.GetBgpPeers(), lim.bgpPeers))+len(first(r.GetClassPaths(), lim.classPaths)); n != m {
			t.Fatalf("report of %d entries became %d", m, n)
		}
		rep.Site, rep.UpdatedAt = "b1", time.Unix(1e9, 0).UTC()
		_ = health.Fingerprint(rep)
		stored := storeRoundTrip(t, rep)
		st := statusToPB(health.Status{State: health.Up, Agent: stored.AgentVersion, Report: stored, LastSeen: stored.UpdatedAt})
		if _, err := gatewayOut.Marshal(st); err != nil {
			t.Fatalf("admin view of a report does not encode: %v", err)
		}
		for _, ts := range st.GetTunnels() {
			for name, v := range map[string]float64{"rtt_ms": ts.RttMs, "rtt_p99_ms": ts.RttP99Ms, "jitter_ms": ts.JitterMs, "loss_pct": ts.LossPct} {
				if !(v >= 0) || v > 1e308 || (name == "loss_pct" && v > 100) {
					t.Fatalf("tunnel %.64q serves %s = %v", ts.TunnelId, name, v)
				}
			}
		}
	})
}

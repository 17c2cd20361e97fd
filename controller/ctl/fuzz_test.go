package ctl

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/fuzzcorpus"
	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/netfile"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzNetworkFileToPB: what meshwanctl apply sends for a network file it
// accepted says exactly what the file says. Every accepted file's sites
// and topology are converted to the API's messages, go over the wire
// (proto encoding), and each field is read back with intent's own parsers
// (the ones the controller's API uses): nothing may be refused, truncated
// (a duration that is not a whole number of the wire's unit) or changed.
func FuzzNetworkFileToPB(f *testing.F) {
	var seeds [][]byte
	examples, _ := filepath.Glob("../../deploy/examples/*.yaml")
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	seeds = append(seeds,
		[]byte("sites:\n  - {name: a, role: hub, transports: [{name: inet1, address: 198.51.100.1}, {name: lte, address: dynamic}], lan_prefixes: [10.1.0.0/16], asn: 65001}\n"+
			"topology:\n  mode: hub-and-spoke\n  transport_match: all-pairs\n  routing: bgp\n  mtu: 1500\n  transit_prefixes: [10.0.0.0/8]\n"+
			"  ipsec: {ike_proposal: aes128gcm16-prfsha256-ecp256, ike_lifetime_seconds: 7200, esp_proposal: aes128gcm16, esp_lifetime_seconds: 1800, dpd_seconds: 10}\n"+
			"  path_policy:\n    probe_interval_ms: 250\n    down_after: 3\n    up_after: 5\n    hold_down_ms: 2000\n"+
			"    sla_classes: [{name: rt, max_rtt_ms: 150.123456789, max_loss_pct: 1.5, max_jitter_ms: 0.001, transport_preference: [inet1, lte], damping_ms: 500}]\n"+
			"    traffic_classes: [{name: voice, sla_class: rt, dscp: [46, 0, 63], protocol: udp, ports: [5060, 10000-20000], destinations: [10.2.0.0/16, 0.0.0.0/0]}]\n"),
		[]byte("sites: []\ntopology: {mode: full-mesh, path_policy: {sla_classes: [{name: x, max_rtt_ms: 1e-7}, {name: y, max_rtt_ms: 9007199254740993}]}}\n"),
	)
	fuzzcorpus.Add(f, seeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := netfile.Parse("net.yaml", b)
		if err != nil {
			return
		}
		for _, s := range file.Sites {
			m := wire(t, siteToPB(s), &pb.Site{})
			back := intent.Site{Name: m.GetName(), ASN: m.GetAsn(), Role: intent.RoleSpoke}
			if m.GetRole() == pb.SiteRole_SITE_ROLE_HUB {
				back.Role = intent.RoleHub
			}
			for i, tr := range m.GetTransports() {
				x, err := intent.ParseTransportAddr(fmt.Sprintf("transports[%d]", i), tr.GetAddress())
				if err != nil {
					t.Fatalf("site %s: the controller refuses what the file accepted: %v", s.Name, err)
				}
				x.Name = tr.GetName()
				back.Transports = append(back.Transports, x)
			}
			for i, p := range m.GetLanPrefixes() {
				x, err := intent.ParsePrefix(fmt.Sprintf("lan_prefixes[%d]", i), p)
				if err != nil {
					t.Fatalf("site %s: the controller refuses what the file accepted: %v", s.Name, err)
				}
				back.LANPrefixes = append(back.LANPrefixes, x)
			}
			if !reflect.DeepEqual(back, s) {
				t.Fatalf("site changed on the wire:\n got %+v\nwant %+v", back, s)
			}
		}
		checkTopologyOnWire(t, file.Topology, wire(t, topologyToPB(file.Topology), &pb.Topology{}))
	})
}

// wire sends m through the proto encoding.
func wire[M proto.Message](t *testing.T, m M, fresh M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("encode %T: %v", m, err)
	}
	if err := proto.Unmarshal(b, fresh); err != nil {
		t.Fatalf("decode %T: %v", m, err)
	}
	return fresh
}

func checkTopologyOnWire(t *testing.T, want intent.Topology, m *pb.Topology) {
	t.Helper()
	same := func(field string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("topology.%s: the file says %v, the wire says %v", field, want, got)
		}
	}
	secs := func(v uint32) time.Duration { return time.Duration(v) * time.Second }
	ms := func(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }
	same("mtu", int(m.GetMtu()), want.MTU)
	same("ipsec.ike_proposal", m.GetIpsec().GetIkeProposal(), want.IPsec.IKEProposal)
	same("ipsec.esp_proposal", m.GetIpsec().GetEspProposal(), want.IPsec.ESPProposal)
	same("ipsec.ike_lifetime_seconds", secs(m.GetIpsec().GetIkeLifetimeSeconds()), want.IPsec.IKELifetime)
	same("ipsec.esp_lifetime_seconds", secs(m.GetIpsec().GetEspLifetimeSeconds()), want.IPsec.ESPLifetime)
	same("ipsec.dpd_seconds", secs(m.GetIpsec().GetDpdSeconds()), want.IPsec.DPD)
	var transit []string
	for _, p := range want.TransitPrefixes {
		transit = append(transit, p.String())
	}
	same("transit_prefixes", m.GetTransitPrefixes(), transit)
	pp, wp := m.GetPathPolicy(), want.PathPolicy
	same("path_policy.probe_interval_ms", ms(pp.GetProbeIntervalMs()), wp.ProbeInterval)
	same("path_policy.hold_down_ms", ms(pp.GetHoldDownMs()), wp.HoldDown)
	same("path_policy.down_after", int(pp.GetDownAfter()), wp.DownAfter)
	same("path_policy.up_after", int(pp.GetUpAfter()), wp.UpAfter)
	same("path_policy.disabled", pp.GetDisabled(), wp.Disabled)
	same("path_policy.sla_classes (count)", len(pp.GetSlaClasses()), len(wp.SLAs))
	for i, s := range pp.GetSlaClasses() {
		w := wp.SLAs[i]
		f := fmt.Sprintf("path_policy.sla_classes[%d].", i)
		rtt, err := intent.MillisDuration(f+"max_rtt_ms", s.GetMaxRttMs())
		if err != nil {
			t.Fatalf("the controller refuses what the file accepted: %v", err)
		}
		jitter, err := intent.MillisDuration(f+"max_jitter_ms", s.GetMaxJitterMs())
		if err != nil {
			t.Fatalf("the controller refuses what the file accepted: %v", err)
		}
		same(f+"max_rtt_ms", rtt, w.MaxRTT)
		same(f+"max_jitter_ms", jitter, w.MaxJitter)
		same(f+"damping_ms", ms(s.GetDampingMs()), w.Damping)
		same(f+"name", s.GetName(), w.Name)
		same(f+"max_loss_pct", s.GetMaxLossPct(), w.MaxLossPct)
	}
	same("path_policy.traffic_classes (count)", len(pp.GetTrafficClasses()), len(wp.Classes))
	for i, c := range pp.GetTrafficClasses() {
		w := wp.Classes[i]
		f := fmt.Sprintf("path_policy.traffic_classes[%d].", i)
		for j, p := range c.GetPorts() {
			r, err := intent.ParsePortRange(fmt.Sprintf("%sports[%d]", f, j), p)
			if err != nil {
				t.Fatalf("the controller refuses what the file accepted: %v", err)
			}
			same(fmt.Sprintf("%sports[%d]", f, j), r, w.Ports[j])
		}
		for j, d := range c.GetDestinations() {
			p, err := intent.ParseDestination(fmt.Sprintf("%sdestinations[%d]", f, j), d)
			if err != nil {
				t.Fatalf("the controller refuses what the file accepted: %v", err)
			}
			same(fmt.Sprintf("%sdestinations[%d]", f, j), p, w.Destinations[j])
		}
		for j, d := range c.GetDscp() {
			v, err := intent.ParseDSCP(fmt.Sprintf("%sdscp[%d]", f, j), d)
			if err != nil {
				t.Fatalf("the controller refuses what the file accepted: %v", err)
			}
			same(fmt.Sprintf("%sdscp[%d]", f, j), v, w.DSCP[j])
		}
		same(f+"counts", []int{len(c.GetPorts()), len(c.GetDestinations()), len(c.GetDscp())}, []int{len(w.Ports), len(w.Destinations), len(w.DSCP)})
		same(f+"name", c.GetName(), w.Name)
		same(f+"sla_class", c.GetSlaClass(), w.SLA)
		same(f+"protocol", c.GetProtocol(), w.Protocol)
	}
}

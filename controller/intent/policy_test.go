package intent

import (
	"encoding/json"
	"errors"
	"github.com/meshwan/meshwan/edge/dataplane"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// goodPolicy is a valid policy each case below breaks in one place.
func goodPolicy() PathPolicy {
	return PathPolicy{
		ProbeInterval: 50 * time.Millisecond, DownAfter: 4, UpAfter: 2, HoldDown: 3 * time.Second,
		SLAs: []SLAClass{
			{Name: "realtime", MaxRTT: 150 * time.Millisecond, MaxLossPct: 2, MaxJitter: 30 * time.Millisecond,
				Transports: []string{"inet1", "inet2"}, Damping: time.Second},
			{Name: "bulk"},
		},
		Classes: []TrafficClass{
			{Name: "voice", SLA: "realtime", DSCP: []uint8{46}, Protocol: "udp",
				Ports: []PortRange{{From: 5004, To: 5005}}, Destinations: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			{Name: "bulk", SLA: "bulk", Protocol: "tcp"},
		},
	}
}

func TestPathPolicyValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(p *PathPolicy)
		field string // "" = valid
		msg   string // part of the message
	}{
		{"valid", func(p *PathPolicy) {}, "", ""},
		{"zero is all defaults", func(p *PathPolicy) { *p = PathPolicy{} }, "", ""},
		{"interval 20 ms", func(p *PathPolicy) { p.ProbeInterval = 20 * time.Millisecond }, "", ""},
		{"interval 10 s", func(p *PathPolicy) { p.ProbeInterval = 10 * time.Second }, "", ""},
		{"interval too short", func(p *PathPolicy) { p.ProbeInterval = 5 * time.Millisecond }, "topology.path_policy.probe_interval_ms", "5 is outside 20..10000"},
		{"interval too long", func(p *PathPolicy) { p.ProbeInterval = 10001 * time.Millisecond }, "topology.path_policy.probe_interval_ms", "10001 is outside 20..10000"},
		{"interval negative", func(p *PathPolicy) { p.ProbeInterval = -time.Millisecond }, "topology.path_policy.probe_interval_ms", "outside"},
		{"down_after 1", func(p *PathPolicy) { p.DownAfter = 1 }, "topology.path_policy.down_after", "1 is outside 2..100"},
		{"down_after 101", func(p *PathPolicy) { p.DownAfter = 101 }, "topology.path_policy.down_after", "outside 2..100"},
		{"down_after 2", func(p *PathPolicy) { p.DownAfter = 2 }, "", ""},
		{"up_after 101", func(p *PathPolicy) { p.UpAfter = 101 }, "topology.path_policy.up_after", "101 is outside 1..100"},
		{"up_after negative", func(p *PathPolicy) { p.UpAfter = -1 }, "topology.path_policy.up_after", "outside 1..100"},
		{"up_after 1", func(p *PathPolicy) { p.UpAfter = 1 }, "", ""},
		{"hold-down 600000 ms", func(p *PathPolicy) { p.HoldDown = 600 * time.Second }, "", ""},
		{"hold-down too long", func(p *PathPolicy) { p.HoldDown = 600001 * time.Millisecond }, "topology.path_policy.hold_down_ms", "600001 is outside 0..600000"},
		{"hold-down negative", func(p *PathPolicy) { p.HoldDown = -time.Second }, "topology.path_policy.hold_down_ms", "outside"},
		{"SLA name empty", func(p *PathPolicy) { p.SLAs[1].Name = "" }, "topology.path_policy.sla_classes[1].name", `""`},
		{"SLA name bad", func(p *PathPolicy) { p.SLAs[0].Name = "Gold Class" }, "topology.path_policy.sla_classes[0].name", "lowercase"},
		{"SLA name twice", func(p *PathPolicy) { p.SLAs[1].Name = "realtime" }, "topology.path_policy.sla_classes[1].name", "defined twice"},
		{"SLA negative RTT", func(p *PathPolicy) { p.SLAs[0].MaxRTT = -time.Millisecond }, "topology.path_policy.sla_classes[0].max_rtt_ms", "negative"},
		{"SLA negative jitter", func(p *PathPolicy) { p.SLAs[0].MaxJitter = -time.Millisecond }, "topology.path_policy.sla_classes[0].max_jitter_ms", "negative"},
		{"SLA negative loss", func(p *PathPolicy) { p.SLAs[0].MaxLossPct = -1 }, "topology.path_policy.sla_classes[0].max_loss_pct", "outside 0..100"},
		{"SLA loss above 100", func(p *PathPolicy) { p.SLAs[0].MaxLossPct = 100.5 }, "topology.path_policy.sla_classes[0].max_loss_pct", "100.5 is outside 0..100"},
		{"SLA loss NaN", func(p *PathPolicy) { p.SLAs[0].MaxLossPct = math.NaN() }, "topology.path_policy.sla_classes[0].max_loss_pct", "NaN"},
		{"SLA loss 100", func(p *PathPolicy) { p.SLAs[0].MaxLossPct = 100 }, "", ""},
		{"SLA damping too long", func(p *PathPolicy) { p.SLAs[0].Damping = 601 * time.Second }, "topology.path_policy.sla_classes[0].damping_ms", "601000 is outside 0..600000"},
		{"SLA damping negative", func(p *PathPolicy) { p.SLAs[1].Damping = -1 }, "topology.path_policy.sla_classes[1].damping_ms", "outside"},
		{"SLA bad transport", func(p *PathPolicy) { p.SLAs[0].Transports[1] = "INET_2" }, "topology.path_policy.sla_classes[0].transport_preference[1]", "not a transport name"},
		{"SLA transport too long", func(p *PathPolicy) { p.SLAs[0].Transports[0] = "a-very-long-transport" }, "topology.path_policy.sla_classes[0].transport_preference[0]", "not a transport name"},
		{"SLA transport twice", func(p *PathPolicy) { p.SLAs[0].Transports[1] = "inet1" }, "topology.path_policy.sla_classes[0].transport_preference[1]", "listed twice"},
		{"class name empty", func(p *PathPolicy) { p.Classes[0].Name = "" }, "topology.path_policy.traffic_classes[0].name", `""`},
		{"class name bad", func(p *PathPolicy) { p.Classes[1].Name = "-bulk" }, "topology.path_policy.traffic_classes[1].name", "lowercase"},
		{"class name twice", func(p *PathPolicy) { p.Classes[1].Name = "voice" }, "topology.path_policy.traffic_classes[1].name", "defined twice"},
		{"class and SLA may share a name", func(p *PathPolicy) { p.Classes[0].Name = "realtime" }, "", ""},
		{"class unknown SLA", func(p *PathPolicy) { p.Classes[1].SLA = "gold" }, "topology.path_policy.traffic_classes[1].sla_class", `"gold" is not a defined SLA class`},
		{"class without SLA", func(p *PathPolicy) { p.Classes[1].SLA = "" }, "topology.path_policy.traffic_classes[1].sla_class", "not a defined SLA class"},
		{"DSCP 63", func(p *PathPolicy) { p.Classes[0].DSCP = []uint8{0, 63} }, "", ""},
		{"DSCP 64", func(p *PathPolicy) { p.Classes[0].DSCP = []uint8{46, 64} }, "topology.path_policy.traffic_classes[0].dscp[1]", "64 is outside 0..63"},
		{"protocol bad", func(p *PathPolicy) { p.Classes[1].Protocol = "sctp" }, "topology.path_policy.traffic_classes[1].protocol", `"sctp"`},
		{"protocol upper case", func(p *PathPolicy) { p.Classes[1].Protocol = "TCP" }, "topology.path_policy.traffic_classes[1].protocol", `"TCP"`},
		{"protocol icmp", func(p *PathPolicy) { p.Classes[1].Protocol = "icmp" }, "", ""},
		{"protocol any", func(p *PathPolicy) { p.Classes[1].Protocol = "" }, "", ""},
		{"ports without protocol", func(p *PathPolicy) { p.Classes[0].Protocol = "" }, "topology.path_policy.traffic_classes[0].ports", "need protocol tcp or udp"},
		{"ports with icmp", func(p *PathPolicy) { p.Classes[0].Protocol = "icmp" }, "topology.path_policy.traffic_classes[0].ports", "need protocol tcp or udp"},
		{"ports with tcp", func(p *PathPolicy) { p.Classes[0].Protocol = "tcp" }, "", ""},
		{"port 0", func(p *PathPolicy) { p.Classes[0].Ports = []PortRange{{From: 5060, To: 5060}, {From: 0, To: 0}} }, "topology.path_policy.traffic_classes[0].ports[1]", `"0"`},
		{"port range backwards", func(p *PathPolicy) { p.Classes[0].Ports = []PortRange{{From: 5005, To: 5004}} }, "topology.path_policy.traffic_classes[0].ports[0]", `"5005-5004"`},
		{"port 65535", func(p *PathPolicy) { p.Classes[0].Ports = []PortRange{{From: 1, To: 65535}} }, "", ""},
		{"destination host bits", func(p *PathPolicy) {
			p.Classes[0].Destinations = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/16")}
		}, "topology.path_policy.traffic_classes[0].destinations[1]", "host bits"},
		{"destination IPv6", func(p *PathPolicy) {
			p.Classes[0].Destinations = []netip.Prefix{netip.MustParsePrefix("fd00::/8")}
		}, "topology.path_policy.traffic_classes[0].destinations[0]", "IPv4"},
		{"destination invalid", func(p *PathPolicy) { p.Classes[0].Destinations = []netip.Prefix{{}} }, "topology.path_policy.traffic_classes[0].destinations[0]", "not a CIDR prefix"},
		{"destination any", func(p *PathPolicy) {
			p.Classes[0].Destinations = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		}, "", ""},
		{"64 classes", func(p *PathPolicy) { p.Classes = manyClasses(64) }, "", ""},
		{"65 classes", func(p *PathPolicy) { p.Classes = manyClasses(65) }, "topology.path_policy.traffic_classes", "65 classes, at most 64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := goodPolicy()
			tc.edit(&p)
			// Through the topology, as the network API calls it.
			err := Topology{Mode: ModeFullMesh, PathPolicy: p}.Validate(nil)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid policy refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.field+":") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %q, want it to name %q and say %q", err, tc.field, tc.msg)
			}
		})
	}
}

func manyClasses(n int) []TrafficClass {
	out := make([]TrafficClass, n)
	for i := range out {
		out[i] = TrafficClass{Name: "c" + string(rune('a'+i/26)) + string(rune('a'+i%26)), SLA: "bulk"}
	}
	return out
}

func TestPathPolicyDefaults(t *testing.T) {
	got := PathPolicy{}.WithDefaults()
	want := PathPolicy{ProbeInterval: 100 * time.Millisecond, DownAfter: 5, UpAfter: 3, HoldDown: 2 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	// Set fields stay; unset SLA damping is defaulted in a copy.
	p := goodPolicy()
	d := p.WithDefaults()
	if d.ProbeInterval != 50*time.Millisecond || d.DownAfter != 4 || d.UpAfter != 2 || d.HoldDown != 3*time.Second {
		t.Errorf("set fields changed: %+v", d)
	}
	if d.SLAs[0].Damping != time.Second || d.SLAs[1].Damping != dataplane.DefaultDamping {
		t.Errorf("damping %v %v, want 1s and the default", d.SLAs[0].Damping, d.SLAs[1].Damping)
	}
	if p.SLAs[1].Damping != 0 {
		t.Error("WithDefaults modified the caller's SLA classes")
	}
	// The topology's defaults include the policy's.
	if top := (Topology{}).WithDefaults(); top.PathPolicy.ProbeInterval != dataplane.DefaultProbeInterval {
		t.Errorf("Topology.WithDefaults left the path policy %+v", top.PathPolicy)
	}
}

// TestPathPolicyJSON: the stored form round-trips, ports read as text,
// and a topology without a policy stores no path_policy at all.
func TestPathPolicyJSON(t *testing.T) {
	top := Topology{Mode: ModeFullMesh, PathPolicy: goodPolicy()}
	raw, err := json.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"ports":["5004-5005"]`) {
		t.Errorf("stored ports not in text form: %s", raw)
	}
	var back Topology
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, top) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, top)
	}
	raw, _ = json.Marshal(Topology{Mode: ModeFullMesh})
	if strings.Contains(string(raw), "path_policy") {
		t.Errorf("empty policy stored: %s", raw)
	}
	if err := json.Unmarshal([]byte(`{"path_policy":{"traffic_classes":[{"ports":["0"]}]}}`), &back); err == nil {
		t.Error("stored port 0 accepted")
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{"5060": {From: 5060, To: 5060}, "16384-32767": {From: 16384, To: 32767}, "1": {From: 1, To: 1}, "65535": {From: 65535, To: 65535}, "7-7": {From: 7, To: 7}} {
		got, err := ParsePortRange("f", in)
		if err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if s := (PortRange{From: 5, To: 6}).String() + " " + (PortRange{From: 7, To: 7}).String(); s != "5-6 7" {
		t.Errorf("PortRange.String: %q", s)
	}
	for _, in := range []string{"", "0", "65536", "-5", "5-", "a", "5-4", "1-0", "1-65536", " 80", "80-90-100", "0x50"} {
		if got, err := ParsePortRange("topology.path_policy.traffic_classes[0].ports[2]", in); !errors.Is(err, ErrInvalid) ||
			!strings.Contains(err.Error(), "traffic_classes[0].ports[2]") {
			t.Errorf("ParsePortRange(%q) = %v, %v; want ErrInvalid naming the field", in, got, err)
		}
	}
}

func TestParseWireValues(t *testing.T) {
	if d, err := MillisDuration("x", 0.5); err != nil || d != 500*time.Microsecond {
		t.Errorf("MillisDuration(0.5) = %v, %v", d, err)
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), 1e300} {
		if _, err := MillisDuration("topology.path_policy.sla_classes[0].max_rtt_ms", v); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "max_rtt_ms") {
			t.Errorf("MillisDuration(%v): %v, want ErrInvalid naming the field", v, err)
		}
	}
	if v, err := ParseDSCP("d", 63); err != nil || v != 63 {
		t.Errorf("ParseDSCP(63) = %v, %v", v, err)
	}
	if _, err := ParseDSCP("d", 300); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "300 is outside 0..63") {
		t.Errorf("ParseDSCP(300): %v", err)
	}
	if p, err := ParseDestination("d", "10.1.0.0/16"); err != nil || p != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("ParseDestination: %v, %v", p, err)
	}
	for _, in := range []string{"10.1.0.1/16", "10.1.0.0", "fd00::/8", "nope"} {
		if _, err := ParseDestination("d", in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDestination(%q): %v, want ErrInvalid", in, err)
		}
	}
}

package dataplane

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The rules themselves are table-tested through the controller's
// boundary (controller/intent TestPathPolicyValidate), which reports the
// first problem; these tests cover what the edge adds: every problem,
// under "Paths.", and the stored form both sides share.

func TestPathPolicyProblemsAllInFieldOrder(t *testing.T) {
	p := PathPolicy{
		ProbeInterval: 5 * time.Millisecond, DownAfter: 1,
		SLAs:    []SLA{{Name: "rt", Transports: []string{"inet1", "inet1"}}, {Name: "rt"}},
		Classes: []TrafficClass{{Name: "Voice", SLA: "gold", Ports: []PortRange{{From: 9, To: 8}}}},
	}
	var got []string
	for _, e := range p.Problems() {
		got = append(got, e.Field)
	}
	want := []string{"probe_interval_ms", "down_after", "sla_classes[0].transport_preference[1]", "sla_classes[1].name",
		"traffic_classes[0].name", "traffic_classes[0].sla_class", "traffic_classes[0].ports", "traffic_classes[0].ports[0]"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("problems %q\nwant     %q", got, want)
	}
	if probs := (PathPolicy{}).Problems(); len(probs) != 0 {
		t.Errorf("zero policy (all defaults): %v", probs)
	}
	if probs := (PathPolicy{}).WithDefaults().Problems(); len(probs) != 0 {
		t.Errorf("the defaults break the rules: %v", probs)
	}
}

func TestDesiredValidateReportsPolicyProblems(t *testing.T) {
	d := Desired{Site: "a", Tunnels: []Tunnel{goodTunnel()}}
	d.Paths = PathPolicy{UpAfter: 101, Classes: []TrafficClass{{Name: "bulk", SLA: "none"}}}
	err := d.Validate()
	for _, want := range []string{"Paths.up_after: 101 is outside 1..100", `Paths.traffic_classes[0].sla_class: "none" is not a defined SLA class`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
	// Disabled without classes is not checked (nothing runs).
	d.Paths = PathPolicy{Disabled: true, UpAfter: 101}
	if err := d.Validate(); err != nil {
		t.Errorf("disabled policy: %v", err)
	}
}

func TestPathPolicyDefaultsDamping(t *testing.T) {
	p := PathPolicy{SLAs: []SLA{{Name: "a"}, {Name: "b", Damping: time.Second}}}
	d := p.WithDefaults()
	if d.SLAs[0].Damping != DefaultDamping || d.SLAs[1].Damping != time.Second || p.SLAs[0].Damping != 0 {
		t.Errorf("damping defaults %v %v (caller's %v)", d.SLAs[0].Damping, d.SLAs[1].Damping, p.SLAs[0].Damping)
	}
}

// TestPathPolicyStoredForm pins the JSON keys: the controller stores the
// policy in this form, so a renamed tag would lose stored settings. DSCP
// is a []uint8, which encoding/json stores as base64 ("Lg==" is 46): so
// it was stored before the model moved here, so it stays.
func TestPathPolicyStoredForm(t *testing.T) {
	p := PathPolicy{ProbeInterval: time.Millisecond, DownAfter: 2, UpAfter: 1, HoldDown: time.Second, Disabled: true,
		SLAs: []SLA{{Name: "rt", MaxRTT: 1, MaxLossPct: 1, MaxJitter: 1, Transports: []string{"inet1"}, Damping: 1}},
		Classes: []TrafficClass{{Name: "voice", SLA: "rt", DSCP: []uint8{46}, Protocol: "udp",
			Ports: []PortRange{{From: 5004, To: 5005}}, Destinations: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"probe_interval":1000000,"down_after":2,"up_after":1,"hold_down":1000000000,"disabled":true,` +
		`"sla_classes":[{"name":"rt","max_rtt":1,"max_loss_pct":1,"max_jitter":1,"transport_preference":["inet1"],"damping":1}],` +
		`"traffic_classes":[{"name":"voice","sla_class":"rt","dscp":"Lg==","protocol":"udp","ports":["5004-5005"],"destinations":["10.0.0.0/8"]}]}`
	if string(raw) != want {
		t.Errorf("stored form\n%s\nwant\n%s", raw, want)
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{"5060": {5060, 5060}, "16384-32767": {16384, 32767}, "1": {1, 1}, "65535": {65535, 65535}, "7-7": {7, 7}} {
		if got, err := ParsePortRange(in); err != nil || got != want || got.String() != strings.TrimSuffix(in, "-7") {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "65536", "-5", "5-", "a", "5-4", "1-0", "1-65536", " 80", "80-90-100", "0x50"} {
		if got, err := ParsePortRange(in); err == nil {
			t.Errorf("ParsePortRange(%q) = %v, want an error", in, got)
		}
	}
	var r PortRange
	if err := json.Unmarshal([]byte(`"0"`), &r); err == nil {
		t.Error("stored port 0 accepted")
	}
	if err := r.UnmarshalText([]byte("5-6")); err != nil || r != (PortRange{5, 6}) {
		t.Errorf("UnmarshalText: %v %v", r, err)
	}
}

package netfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/topology"
)

// TestExamples: every file in deploy/examples parses, with the shape its
// comment promises.
func TestExamples(t *testing.T) {
	want := map[string]struct{ sites, tunnels int }{
		"seed.yaml": {2, 1}, "hub-10-spokes.yaml": {11, 10}, "dual-hub-bgp.yaml": {6, 18}, "mesh-6-two-transports.yaml": {6, 30},
	}
	files, _ := filepath.Glob("../../deploy/examples/*.yaml")
	if len(files) != len(want) {
		t.Fatalf("examples %v, want %d files", files, len(want))
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Parse(filepath.Base(path), data)
		if err != nil {
			t.Fatalf("%v", err)
		}
		w := want[filepath.Base(path)]
		links := topology.Derive(f.Sites, f.Topology.WithDefaults())
		if len(f.Sites) != w.sites || len(links) != w.tunnels {
			t.Errorf("%s: %d sites %d tunnels, want %d and %d", path, len(f.Sites), len(links), w.sites, w.tunnels)
		}
	}
}

func TestParseSeed(t *testing.T) {
	f, err := Parse("seed.yaml", []byte(`
sites:
  - name: hq
    role: hub
    transports: [{name: inet1, address: 96.3.36.10}, {name: lte, address: dynamic}]
    lan_prefixes: [10.1.1.0/24]
    asn: 65001
topology:
  mode: hub-and-spoke
  ipsec: {ike_lifetime_seconds: 7200}
  path_policy: {probe_interval_ms: 200, sla_classes: [{name: rt, max_rtt_ms: 150}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Sites[0]
	if s.Name != "hq" || !s.Hub() || len(s.Transports) != 2 || !s.Transports[1].Dynamic || s.ASN != 65001 || s.LANPrefixes[0].String() != "10.1.1.0/24" {
		t.Errorf("site %+v", s)
	}
	if f.Topology.Mode != intent.ModeHubAndSpoke || f.Topology.IPsec.IKELifetime.Hours() != 2 ||
		f.Topology.PathPolicy.ProbeInterval.Milliseconds() != 200 || f.Topology.PathPolicy.SLAs[0].MaxRTT.Milliseconds() != 150 {
		t.Errorf("topology %+v", f.Topology)
	}
	if p, _ := f.Pos("sites[0].lan_prefixes[0]"); p != (Pos{6, 20}) {
		t.Errorf("position of sites[0].lan_prefixes[0]: %v", p)
	}
	got := f.Locate(`failed precondition: site "hq": site.lan_prefixes[0]: 10.1.1.0/24 overlaps 10.1.0.0/16 of site "dc"`)
	if !strings.HasPrefix(got, "seed.yaml:6:20: ") {
		t.Errorf("Locate: %s", got)
	}
	if got := f.Locate(`invalid argument: topology.path_policy.sla_classes[0].max_rtt_ms: bad`); !strings.HasPrefix(got, "seed.yaml:11:") {
		t.Errorf("Locate topology: %s", got)
	}
}

// TestBadFiles: each error names file:line:column and the field.
func TestBadFiles(t *testing.T) {
	const head = "sites:\n  - name: hq\n    role: hub\n    transports: [{name: inet1, address: 96.3.36.10}]\n    lan_prefixes: [10.1.1.0/24]\n"
	const topo = "topology:\n  mode: hub-and-spoke\n"
	cases := []struct{ name, file, want string }{
		{"not yaml", "sites: [\n", `net.yaml:1:1: did not find expected node content`},
		{"empty", "", `net.yaml:1:1: empty file`},
		{"no topology", head, `net.yaml:1:1: topology: missing`},
		{"unknown field", head + "  - name: br\n    lan: 10.2.0.0/24\n" + topo, `net.yaml:7:5: sites[1].lan: unknown field (known: name, role, transports, lan_prefixes, asn)`},
		{"bad CIDR", strings.Replace(head, "10.1.1.0/24", "10.1.1.0/33", 1) + topo, `net.yaml:5:20: sites[0].lan_prefixes[0]: "10.1.1.0/33" is not a CIDR prefix`},
		{"host bits", strings.Replace(head, "10.1.1.0/24", "10.1.1.1/24", 1) + topo, `net.yaml:5:20: sites[0].lan_prefixes[0]: "10.1.1.1/24" has host bits set (did you mean 10.1.1.0/24?)`},
		{"bad address", strings.Replace(head, "96.3.36.10", "96.3.36.300", 1) + topo, `net.yaml:4:41: sites[0].transports[0].address: "96.3.36.300" is not an IPv4 address or "dynamic"`},
		{"bad role", strings.Replace(head, "role: hub", "role: boss", 1) + topo, `net.yaml:3:11: sites[0].role: "boss" must be hub or spoke`},
		{"bad name", strings.Replace(head, "name: hq", "name: HQ", 1) + topo, `net.yaml:2:11: sites[0].name: "HQ" must be 1-32 lowercase letters`},
		{"asn not a number", head + "    asn: lots\n" + topo, `net.yaml:6:10: sites[0].asn: "lots" must be a whole number`},
		{"overlap between sites", head + "  - name: br\n    transports: [{name: inet1, address: 110.19.112.126}]\n    lan_prefixes: [10.1.0.0/16]\n" + topo,
			`net.yaml:8:20: sites[1].lan_prefixes[0]: site "br": 10.1.0.0/16 overlaps 10.1.1.0/24 of site "hq"`},
		{"duplicate name", head + strings.Replace(strings.Replace(head[len("sites:\n"):], "96.3.36.10", "96.3.36.11", 1), "10.1.1.0", "10.9.1.0", 1) + topo,
			`net.yaml:6:11: sites[1].name: site "hq": "hq" is also the name of sites[0]`},
		{"no transport", "sites:\n  - name: hq\n    lan_prefixes: [10.1.1.0/24]\n" + topo, `net.yaml:2:5: sites[0].transports: site "hq": a site needs at least one WAN transport`},
		{"bad mode", head + "topology:\n  mode: star\n", `net.yaml:7:9: topology.mode: "star" must be one of full-mesh, hub-and-spoke, none`},
		{"bad mtu", head + topo + "  mtu: 100\n", `net.yaml:8:8: topology.mtu: 100 must be between 1280 and 9000`},
		{"bad policy", head + topo + "  path_policy:\n    probe_interval_ms: 5\n", `net.yaml:9:24: topology.path_policy.probe_interval_ms: 5 is outside 20..10000`},
		{"bad port", head + topo + "  path_policy:\n    traffic_classes:\n      - {name: v, sla_class: rt, protocol: udp, ports: [\"70000\"]}\n",
			`net.yaml:10:57: topology.path_policy.traffic_classes[0].ports[0]:`},
		{"sites not a list", "sites: hq\n" + topo, `net.yaml:1:8: sites: must be a list`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("net.yaml", []byte(tc.file))
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got  %v\nwant %s...", err, tc.want)
			}
		})
	}
}

package netfile

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/fuzzcorpus"
	"github.com/meshwan/meshwan/controller/intent"
)

// maxErrLen bounds a parse error: file, position, field path and a value
// truncated to about 64 bytes fit well within it.
const maxErrLen = 512

// Nasty network files: the examples, the bad values of issue 11, YAML
// tricks (anchors and aliases, tags, deep nesting, duplicate keys).
var fileSeeds = []string{
	"sites:\n  - name: hq\n    role: hub\n    transports: [{name: inet1, address: 96.3.36.10}, {name: lte, address: dynamic}]\n    lan_prefixes: [10.1.1.0/24]\n    asn: 65001\n" +
		"topology:\n  mode: hub-and-spoke\n  ipsec: {ike_lifetime_seconds: 7200}\n  path_policy: {probe_interval_ms: 200, sla_classes: [{name: rt, max_rtt_ms: 150}]}\n",
	"sites:\n  - {name: a, transports: [{name: inet1, address: 0.0.0.0}], lan_prefixes: [127.0.0.0/8]}\ntopology: {mode: full-mesh}\n",
	"sites:\n  - {name: a, transports: [{name: inet1, address: 224.0.0.1}], lan_prefixes: [224.0.0.0/4, 169.254.0.0/16], asn: 23456}\ntopology: {mode: full-mesh}\n",
	"sites:\n  - {name: a, transports: [{name: inet1, address: 198.51.100.1}], lan_prefixes: [10.1.0.0/16], asn: 4294967295}\n" +
		"  - {name: b, transports: [{name: inet1, address: 10.1.2.3}], lan_prefixes: [10.2.0.0/16], asn: 65535}\ntopology: {mode: full-mesh}\n",
	"sites:\n  - {name: a, transports: [{name: inet1, address: 198.51.100.1}], lan_prefixes: [198.51.100.0/24]}\ntopology: {mode: full-mesh, ipsec: {ike_proposal: zzz-yyy, esp_proposal: banana, ike_lifetime_seconds: 4294967295, dpd_seconds: 0}}\n",
	"sites:\n  - {name: a, transports: [{name: inet1, address: 198.51.100.1}], lan_prefixes: [10.1.0.0/16]}\ntopology:\n  mode: hub-and-spoke\n  transit_prefixes: [10.0.0.0/8, 0.0.0.0/0]\n  path_policy:\n    traffic_classes: [{name: v, sla_class: none, dscp: [64], ports: [0-70000], destinations: [10.0.0.1/8]}]\n",
	"sites:\n  - {name: " + strings.Repeat("n", 100) + ", transports: [{name: inet1, address: 198.51.100.1}], lan_prefixes: [10.1.0.0/16]}\ntopology: {mode: full-mesh}\n",
	"x: &a [1, 2]\ny: *a\nsites: *a\ntopology: {mode: full-mesh}\n",
	"a: &a [&b [&c [x, x], *c], *b]\nsites: [*a, *a]\n",
	"sites: !!binary aGVsbG8=\ntopology: !!map {}\n",
	"sites: [[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]\n",
	"sites: []\nsites: []\ntopology: {mode: full-mesh}\n",
	"---\n...\n---\nsites: []\n",
	"sites:\n  - name: a\n    asn: -1\n    transports: {name: x}\n    lan_prefixes: 10.1.0.0/16\ntopology: {mode: full-mesh, mtu: 1e9}\n",
	"\t",
	"",
}

// FuzzParse: Parse never panics; a refusal is an *Error wrapping
// ErrInvalid, of bounded length; an accepted file's sites and topology
// pass intent's validation on their own and against each other, and
// Locate and Pos work on every field the validation can name.
func FuzzParse(f *testing.F) {
	var seeds [][]byte
	examples, _ := filepath.Glob("../../deploy/examples/*.yaml")
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	for _, s := range fileSeeds {
		seeds = append(seeds, []byte(s))
	}
	fuzzcorpus.Add(f, seeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse("net.yaml", b)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("refused with %T %v, want a *netfile.Error", err, err)
			}
			if n := len(err.Error()); n > maxErrLen {
				t.Fatalf("refused with a %d-byte error (max %d): %.200s...", n, maxErrLen, err)
			}
			return
		}
		for i, s := range file.Sites {
			if err := s.Validate(); err != nil {
				t.Fatalf("accepted site %d refused by intent: %v", i, err)
			}
			if err := intent.CheckSite(s, file.Sites[:i], nil, netip.Prefix{}); err != nil {
				t.Fatalf("accepted site %d clashes: %v", i, err)
			}
			if j, ok := file.SiteIndex(s.Name); !ok || j > i {
				t.Fatalf("site %q at %d found at %d, %v", s.Name, i, j, ok)
			}
			_ = file.Locate(`site "` + s.Name + `": site.lan_prefixes[0]: clash`)
		}
		if err := file.Topology.Validate(file.Sites); err != nil && !errors.Is(err, intent.ErrPrecondition) {
			t.Fatalf("accepted topology refused by intent: %v", err)
		}
		_ = file.Locate("topology.path_policy.traffic_classes[0].ports[3]: x")
	})
}

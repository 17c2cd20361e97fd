package browsertest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "also write the README screenshot to docs/images/dashboard.png")

// labNetwork is lab-like: two hubs and four branches, an internet and an
// MPLS transport (one branch internet-only, one behind a dynamic address).
var labNetwork = []siteSpec{
	{"hub-fra", true, [][2]string{{"inet", "198.51.100.1"}, {"mpls", "192.0.2.1"}}, []string{"10.1.0.0/16"}},
	{"hub-ams", true, [][2]string{{"inet", "198.51.100.2"}, {"mpls", "192.0.2.2"}}, []string{"10.2.0.0/16"}},
	{"paris", false, [][2]string{{"inet", "203.0.113.10"}, {"mpls", "192.0.2.10"}}, []string{"10.10.0.0/24"}},
	{"berlin", false, [][2]string{{"inet", "203.0.113.11"}, {"mpls", "192.0.2.11"}}, []string{"10.11.0.0/24"}},
	{"madrid", false, [][2]string{{"inet", "203.0.113.12"}}, []string{"10.12.0.0/24"}},
	{"oslo", false, [][2]string{{"inet", "dynamic"}}, []string{"10.13.0.0/24"}},
}

// TestREADMEScreenshot renders the overview of a lab network with every
// edge connected, one tunnel down and one degraded, and saves it as an
// artifact (and, with -update-screenshot, as the README's image).
func TestREADMEScreenshot(t *testing.T) {
	requireBrowser(t)
	c := startController(t)
	c.seed(t, pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, labNetwork...)
	tunnels := c.tunnels(t)
	edges := map[string]*edge{}
	for _, s := range labNetwork {
		edges[s.name] = c.connectEdge(t, s.name)
		reportAll(t, edges[s.name], tunnels, reportUp, nil)
	}
	const down, degraded = "berlin.mpls~hub-ams.mpls", "hub-fra.inet~madrid.inet"
	for _, id := range []string{down, degraded} {
		if !hasTunnel(tunnels, id) {
			t.Fatalf("no tunnel %s in %d tunnels", id, len(tunnels))
		}
	}

	b := newBrowser(t, 1440, 900)
	ctx := b.root
	login(t, b, c)
	waitJS(t, ctx, "every tunnel up", fmt.Sprintf(`(document.querySelector("[data-count=tunnels_up]") || {}).textContent === "%d"`, len(tunnels)))

	reportAll(t, edges["berlin"], tunnels, reportUp, map[string]tunnelReport{down: reportDown})
	reportAll(t, edges["madrid"], tunnels, reportUp, map[string]tunnelReport{degraded: reportDegraded})
	waitCounts(t, ctx, "one tunnel down, one degraded", map[string]int{
		"sites_up": len(labNetwork), "tunnels_up": len(tunnels) - 2, "tunnels_down": 1, "tunnels_degraded": 1,
	})
	clickMap(t, ctx, fmt.Sprintf(`window.meshwan.map.cy.getElementById(%s).renderedMidpoint()`, jsString(down)))
	waitJS(t, ctx, "the down tunnel's details", `document.querySelector("#details svg.chart rect.strip.down") !== null`)
	do(t, ctx, "scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))

	path := screenshot(t, ctx, artifactsDir(t), "dashboard")
	b.checkNoErrors()
	if *updateScreenshot {
		png, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join("..", "..", "docs", "images", "dashboard.png")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", dst)
	}
}

func hasTunnel(tunnels []*pb.Tunnel, id string) bool {
	for _, tn := range tunnels {
		if tn.Id == id {
			return true
		}
	}
	return false
}

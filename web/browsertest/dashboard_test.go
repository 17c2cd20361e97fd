package browsertest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// liveLatency is the bound: a reported change shows without reload
// within 2 s.
const liveLatency = 2 * time.Second

const (
	red   = "rgb(207,34,46)" // cytoscape's notation of --down
	green = "rgb(26,127,55)" // --up
)

// testNetwork: two hubs, three spokes; hub1 and br1 share two transports,
// so two tunnels join them.
var testNetwork = []siteSpec{
	{"hub1", true, [][2]string{{"inet1", "198.51.100.1"}, {"mpls", "192.0.2.1"}}, []string{"10.1.0.0/24"}},
	{"hub2", true, [][2]string{{"inet1", "198.51.100.2"}}, []string{"10.2.0.0/24"}},
	{"br1", false, [][2]string{{"inet1", "198.51.100.11"}, {"mpls", "192.0.2.11"}}, []string{"10.11.0.0/24"}},
	{"br2", false, [][2]string{{"inet1", "198.51.100.12"}}, []string{"10.12.0.0/24"}},
	{"br3", false, [][2]string{{"inet1", "dynamic"}}, []string{"10.13.0.0/24"}},
}

// reportAll reports every tunnel of the edge's site with r, except those
// in override.
func reportAll(t *testing.T, e *edge, tunnels []*pb.Tunnel, r tunnelReport, override map[string]tunnelReport) {
	t.Helper()
	rep := map[string]tunnelReport{}
	for _, tn := range tunnels {
		if tn.A.Site == e.site || tn.B.Site == e.site {
			rep[tn.Id] = r
			if o, ok := override[tn.Id]; ok {
				rep[tn.Id] = o
			}
		}
	}
	e.setReport(t, rep)
}

func login(t *testing.T, b *browser, c *controller) {
	t.Helper()
	ctx := b.root
	do(t, ctx, "open the dashboard", chromedp.Navigate(c.base+"/"))
	waitJS(t, ctx, "the login form", `!document.getElementById("login").hidden`)
	// A wrong token is refused with a message (its 401 is expected).
	b.allow("/api/login")
	do(t, ctx, "log in with a wrong token",
		chromedp.SendKeys(chromedp.ID("login-token"), "not-the-token"),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))
	waitJS(t, ctx, "the wrong-token message", `document.getElementById("login-error").textContent.includes("not the admin token")`)
	clearInput(t, ctx, "login-token")
	do(t, ctx, "log in with the admin token",
		chromedp.SendKeys(chromedp.ID("login-token"), c.d.AdminToken),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))
	waitJS(t, ctx, "the dashboard with the live state", `!document.getElementById("app").hidden && window.meshwan.state !== null && document.getElementById("live").textContent === "live"`)
	if eval[bool](t, ctx, `document.cookie.includes("meshwan_session")`) {
		t.Error("the session cookie is readable by scripts; want HttpOnly")
	}
}

func TestDashboard(t *testing.T) {
	requireBrowser(t)
	c := startController(t)
	c.seed(t, pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, testNetwork...)
	tunnels := c.tunnels(t)
	if len(tunnels) != 8 {
		t.Fatalf("seeded %d tunnels, want 8", len(tunnels))
	}
	var mplsID string // br1.mpls~hub1.mpls
	var ids []string
	wantUp := 0
	for _, tn := range tunnels {
		ids = append(ids, tn.Id)
		if tn.A.Transport == "mpls" {
			mplsID = tn.Id
		}
		if tn.A.Site == "hub1" || tn.A.Site == "br1" || tn.B.Site == "hub1" || tn.B.Site == "br1" {
			wantUp++
		}
	}
	slices.Sort(ids)
	hub1, br1 := c.connectEdge(t, "hub1"), c.connectEdge(t, "br1")
	reportAll(t, hub1, tunnels, reportUp, nil)
	reportAll(t, br1, tunnels, reportUp, nil)

	b := newBrowser(t, 1400, 1000)
	dir := artifactsDir(t)
	ctx := b.root
	login(t, b, c)

	// Overview: counts.
	wantCounts := map[string]int{"sites_up": 2, "sites_down": 0, "sites_never_seen": 3,
		"tunnels_up": wantUp, "tunnels_degraded": 0, "tunnels_down": 0, "tunnels_unknown": len(tunnels) - wantUp}
	waitCounts(t, ctx, "overview counts after the first reports", wantCounts)

	// Map: one node per site, hubs distinct, one edge per tunnel, the two
	// hub1–br1 tunnels as two edges.
	waitJS(t, ctx, "the map", `window.meshwan.map && window.meshwan.map.cy && window.meshwan.map.cy.nodes().length > 0`)
	nodes := eval[[]string](t, ctx, `window.meshwan.map.cy.nodes().map(n => n.data("site")).sort()`)
	if want := []string{"br1", "br2", "br3", "hub1", "hub2"}; !slices.Equal(nodes, want) {
		t.Errorf("map nodes %v, want %v", nodes, want)
	}
	hubs := eval[[]string](t, ctx, `window.meshwan.map.cy.nodes(".hub").map(n => n.data("site")).sort()`)
	if !slices.Equal(hubs, []string{"hub1", "hub2"}) {
		t.Errorf("hub nodes %v, want [hub1 hub2]", hubs)
	}
	edges := eval[[]string](t, ctx, `window.meshwan.map.cy.edges().map(e => e.id()).sort()`)
	if !slices.Equal(edges, ids) {
		t.Errorf("map edges %v, want the tunnels %v", edges, ids)
	}
	if n := eval[int](t, ctx, `window.meshwan.map.cy.getElementById("site:hub1").edgesWith(window.meshwan.map.cy.getElementById("site:br1")).length`); n != 2 {
		t.Errorf("hub1–br1: %d edges on the map, want 2 (inet1 and mpls)", n)
	}
	if got := edgeColor(t, ctx, mplsID); got != green {
		t.Errorf("up tunnel drawn %s, want %s", got, green)
	}

	// Click a site, then a link, on the map: details appear.
	clickMap(t, ctx, `window.meshwan.map.cy.getElementById("site:br1").renderedPosition()`)
	waitJS(t, ctx, "br1's details", `document.getElementById("details").textContent.includes("br1") && document.getElementById("details").textContent.includes("Open the site page")`)
	clickMap(t, ctx, fmt.Sprintf(`window.meshwan.map.cy.getElementById(%s).renderedMidpoint()`, jsString(mplsID)))
	waitJS(t, ctx, "the tunnel's details with its chart", fmt.Sprintf(`document.getElementById("details").textContent.includes(%s) && document.querySelector("#details svg.chart") !== null`, jsString(mplsID)))
	screenshot(t, ctx, dir, "01-overview")

	// A second tab on the tunnels table: every tunnel listed.
	tab2 := b.newTab()
	do(t, tab2, "open the tunnels table", chromedp.Navigate(c.base+"/#/tunnels"))
	waitJS(t, tab2, "the tunnels table", `document.querySelectorAll("#tunnels-table tbody tr[data-tunnel-id]").length > 0`)
	rows := eval[[]string](t, tab2, `[...document.querySelectorAll("#tunnels-table tbody tr[data-tunnel-id]")].map(r => r.dataset.tunnelId).sort()`)
	if !slices.Equal(rows, ids) {
		t.Errorf("table rows %v, want %v", rows, ids)
	}

	// The edge reports the mpls tunnel down: its link (tab 1) and its row
	// (tab 2) turn red, live, within 2 s.
	reported := time.Now()
	reportAll(t, br1, tunnels, reportUp, map[string]tunnelReport{mplsID: reportDown})
	waitJS(t, ctx, "the link red", fmt.Sprintf(`window.meshwan.map.cy.getElementById(%s).style("line-color") === %s`, jsString(mplsID), jsString(red)))
	linkAfter := time.Since(reported)
	waitJS(t, tab2, "the row red", fmt.Sprintf(`(() => {
		const row = document.querySelector('tr[data-tunnel-id=%s]');
		return row && row.classList.contains("state-down") &&
			getComputedStyle(row.querySelector(".badge")).backgroundColor === "rgb(207, 34, 46)";
	})()`, jsString(mplsID)))
	rowAfter := time.Since(reported)
	t.Logf("tunnel down shown: link after %v, row after %v", linkAfter, rowAfter)
	if linkAfter > liveLatency || rowAfter > liveLatency {
		t.Errorf("tunnel down shown after %v (link) and %v (row), want within %v", linkAfter, rowAfter, liveLatency)
	}
	wantCounts["tunnels_up"]--
	wantCounts["tunnels_down"]++
	waitCounts(t, ctx, "overview counts after the tunnel went down", wantCounts)
	waitJS(t, ctx, "the tunnel-down event", fmt.Sprintf(`[...document.querySelectorAll("#events li.error")].some(li => li.textContent.includes("tunnel " + %s + " down"))`, jsString(mplsID)))
	waitJS(t, ctx, "the reason in the details", `document.getElementById("details").textContent.includes("IKE SA not established")`)
	screenshot(t, ctx, dir, "02-overview-tunnel-down")
	screenshot(t, tab2, dir, "03-tunnels-down")

	// Filter by state and by text; sort by /30.
	setSelect(t, tab2, "tunnel-state-filter", "down")
	waitJS(t, tab2, "only the down tunnel", fmt.Sprintf(`(() => { const r = document.querySelectorAll("#tunnels-table tbody tr[data-tunnel-id]"); return r.length === 1 && r[0].dataset.tunnelId === %s; })()`, jsString(mplsID)))
	setSelect(t, tab2, "tunnel-state-filter", "")
	do(t, tab2, "type a filter", chromedp.SendKeys(chromedp.ID("tunnel-filter"), "hub2 br"))
	waitJS(t, tab2, "hub2's spoke tunnels", `[...document.querySelectorAll("#tunnels-table tbody tr[data-tunnel-id]")].map(r => r.dataset.tunnelId).join(",") !== "" && [...document.querySelectorAll("#tunnels-table tbody tr[data-tunnel-id]")].every(r => r.dataset.tunnelId.startsWith("br") && r.dataset.tunnelId.includes("~hub2.")) && document.querySelectorAll("#tunnels-table tbody tr[data-tunnel-id]").length === 3`)
	clearInput(t, tab2, "tunnel-filter")
	do(t, tab2, "sort by /30", chromedp.Click(chromedp.CSS(`th[data-col=prefix] button`)))
	waitJS(t, tab2, "ascending /30s", `document.querySelector('th[data-col=prefix]').getAttribute("aria-sort") === "ascending"`)
	prefixes := eval[[]string](t, tab2, `[...document.querySelectorAll("#tunnels-table tbody tr[data-tunnel-id] td.prefix")].map(td => td.textContent)`)
	if len(prefixes) != len(ids) || !slices.IsSortedFunc(prefixes, comparePrefixes) {
		t.Errorf("sorted by /30: %v", prefixes)
	}

	// The row's history chart shows the tunnel up, then down.
	do(t, tab2, "open the tunnel's history", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-tunnel-id=%s] td.state`, jsString(mplsID)))))
	waitJS(t, tab2, "the history chart", `!document.getElementById("tunnel-detail").hidden && document.querySelector("#tunnel-detail svg.chart rect.strip.up") !== null && document.querySelector("#tunnel-detail svg.chart rect.strip.down") !== null`)
	screenshot(t, tab2, dir, "04-tunnel-history")

	// Recovery shows too.
	reportAll(t, br1, tunnels, reportUp, nil)
	waitJS(t, tab2, "the row up again", fmt.Sprintf(`document.querySelector('tr[data-tunnel-id=%s]').classList.contains("state-up")`, jsString(mplsID)))
	waitJS(t, ctx, "the link green again", fmt.Sprintf(`window.meshwan.map.cy.getElementById(%s).style("line-color") === %s`, jsString(mplsID), jsString(green)))

	// The site page, reached from a link in the table.
	do(t, tab2, "open br1's page", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-tunnel-id=%s] a[href="#/sites/br1"]`, jsString(mplsID)))))
	waitJS(t, tab2, "br1's page", `!document.getElementById("view-site").hidden && document.getElementById("site-title").textContent.startsWith("br1")`)
	page := eval[string](t, tab2, `document.getElementById("site-page").innerText`)
	for _, want := range []string{"v0.1.0-test", "inet1", "mpls", "198.51.100.11", "192.0.2.11", "10.11.0.0/24", "Tunnels (3)", "BGP sessions", "4200000000"} {
		if !strings.Contains(page, want) {
			t.Errorf("br1's page lacks %q:\n%s", want, page)
		}
	}
	if n := eval[int](t, tab2, `document.querySelectorAll("#site-page section[aria-labelledby=site-bgp] tbody tr").length`); n != 3 {
		t.Errorf("br1's page lists %d BGP sessions, want 3", n)
	}
	screenshot(t, tab2, dir, "05-site")

	// The sites list: one row per site, edge states as reported.
	do(t, tab2, "open the sites", chromedp.Click(chromedp.CSS(`a[data-nav=sites]`)))
	waitJS(t, tab2, "the sites table", `!document.getElementById("view-sites").hidden && document.querySelectorAll("#sites-table tbody tr[data-site]").length === 5`)
	siteStates := eval[[]string](t, tab2, `[...document.querySelectorAll("#sites-table tbody tr[data-site]")].map(r => r.dataset.site + "=" + r.className)`)
	if want := []string{"br1=site-up", "br2=site-never_seen", "br3=site-never_seen", "hub1=site-up", "hub2=site-never_seen"}; !slices.Equal(siteStates, want) {
		t.Errorf("sites table %v, want %v", siteStates, want)
	}

	// Onboarding: a token for br3 and the exact command, which enrolls.
	do(t, tab2, "open onboarding", chromedp.Click(chromedp.CSS(`a[data-nav=onboard]`)))
	waitJS(t, tab2, "the site list", `!document.getElementById("view-onboard").hidden && [...document.getElementById("token-site").options].some(o => o.value === "br3")`)
	setSelect(t, tab2, "token-site", "br3")
	do(t, tab2, "create a token", chromedp.Click(chromedp.ID("token-create")))
	waitJS(t, tab2, "the edge command", `document.getElementById("edge-command").textContent !== ""`)
	cmd := eval[string](t, tab2, `document.getElementById("edge-command").textContent`)
	m := regexp.MustCompile(`^meshwan-edge --controller 127\.0\.0\.1:(\d+) --token (\S+) --state-dir /var/lib/meshwan$`).FindStringSubmatch(cmd)
	if m == nil {
		t.Fatalf("edge command %q", cmd)
	}
	if port, _ := strconv.Atoi(m[1]); port != grpcPort(c) {
		t.Errorf("command dials port %d, want the gRPC port %d", port, grpcPort(c))
	}
	screenshot(t, tab2, dir, "06-onboard")
	if site, _, err := enrollWith(t, c.d, m[2]); err != nil || site != "br3" {
		t.Errorf("enrolling with the page's token: site %q, %v", site, err)
	}

	// Signing out ends the session, in this tab and the other: both show
	// the login form, hold no stream and ask for nothing more (the other
	// tab still showing a tunnel's chart would otherwise fetch its history
	// on the next update and get a 401).
	do(t, tab2, "sign out", chromedp.Click(chromedp.ID("logout")))
	waitJS(t, tab2, "the login form again", `!document.getElementById("login").hidden`)
	waitJS(t, ctx, "the login form in the other tab", `!document.getElementById("login").hidden && document.getElementById("app").hidden`)
	for _, tab := range []context.Context{ctx, tab2} {
		if !eval[bool](t, tab, `window.meshwan.stream === null && !window.meshwan.signedIn && window.meshwan.state === null`) {
			t.Error("a tab still holds its stream or the state after signing out")
		}
	}
	t.Logf("the other tab says: %q", eval[string](t, ctx, `document.getElementById("login-error").textContent`))
	if eval[bool](t, tab2, `fetch("/api/session").then(r => r.json()).then(s => s.authenticated)`, chromedp.EvalAwaitPromise) {
		t.Error("still authenticated after signing out")
	}
	// An update now (an edge reports) reaches neither tab.
	reportAll(t, br1, tunnels, reportUp, map[string]tunnelReport{mplsID: reportDegraded})
	time.Sleep(1500 * time.Millisecond) // the dashboard refreshes within a second

	b.checkNoErrors()
}

func grpcPort(c *controller) int { return c.d.GRPCAddr.(*net.TCPAddr).Port }

func waitCounts(t *testing.T, ctx context.Context, what string, want map[string]int) {
	t.Helper()
	var conds []string
	for k, v := range want {
		conds = append(conds, fmt.Sprintf(`(document.querySelector('[data-count=%s]') || {}).textContent === "%d"`, k, v))
	}
	slices.Sort(conds)
	waitJS(t, ctx, what, strings.Join(conds, " && "))
}

func edgeColor(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`window.meshwan.map.cy.getElementById(%s).style("line-color")`, jsString(id)))
}

// clickMap clicks with the mouse at a point of the map given by a
// cytoscape rendered-position expression.
func clickMap(t *testing.T, ctx context.Context, posExpr string) {
	t.Helper()
	xy := eval[[]float64](t, ctx, fmt.Sprintf(`(() => { const p = %s; const r = document.getElementById("map").getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; })()`, posExpr))
	do(t, ctx, "click on the map", chromedp.MouseClickXY(xy[0], xy[1]))
}

// setSelect chooses an option of a <select> as a user would, firing change.
func setSelect(t *testing.T, ctx context.Context, id, value string) {
	t.Helper()
	eval[bool](t, ctx, fmt.Sprintf(`(() => { const s = document.getElementById(%s); s.value = %s; s.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`, jsString(id), jsString(value)))
}

// clearInput empties a text field as a user would, firing input.
func clearInput(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	eval[bool](t, ctx, fmt.Sprintf(`(() => { const i = document.getElementById(%s); i.value = ""; i.dispatchEvent(new Event("input", {bubbles: true})); return true; })()`, jsString(id)))
}

func comparePrefixes(a, b string) int {
	pa, _ := netip.ParsePrefix(a)
	pb, _ := netip.ParsePrefix(b)
	return pa.Addr().Compare(pb.Addr())
}

package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/meshwan/meshwan/web"
)

// probeSource is a web.Source whose tunnel carries probe results (RTT,
// jitter, loss): it checks that the page shows them and charts them.
type probeSource struct {
	mu      sync.Mutex
	rtt     float64
	state   string // the tunnel's reported state; "" is up
	changes chan struct{}
}

func (p *probeSource) State(context.Context) (web.State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rtt, jitter, loss := p.rtt, p.rtt/10, p.rtt/20
	state := p.state
	if state == "" {
		state = web.TunnelUp
	}
	return web.State{
		Topology: "full-mesh", GRPCPort: 7400,
		Sites: []web.Site{{Name: "a", Role: "spoke", State: web.SiteUp}, {Name: "b", Role: "spoke", State: web.SiteUp}},
		Tunnels: []web.Tunnel{{
			ID: "a.inet~b.inet", Prefix: "10.255.0.0/30",
			A:         web.TunnelEnd{Site: "a", Transport: "inet", Inner: "10.255.0.1/30"},
			B:         web.TunnelEnd{Site: "b", Transport: "inet", Inner: "10.255.0.2/30"},
			Reports:   []web.EndReport{{Site: "a", State: state}},
			RTTMillis: &rtt, JitterMillis: &jitter, LossPercent: &loss,
		}},
	}, nil
}

func (p *probeSource) Changes() (<-chan struct{}, func()) { return p.changes, func() {} }

// changed signals a change without blocking, as the controller's source
// does: the server reads Changes only while a browser stream is open
// (web.Server builds the model on demand), and coalesces what it missed.
func (p *probeSource) changed() {
	select {
	case p.changes <- struct{}{}:
	default:
	}
}

// setState changes the tunnel's reported state.
func (p *probeSource) setState(state string) {
	p.mu.Lock()
	p.state = state
	p.mu.Unlock()
	p.changed()
}

// serveProbe serves the dashboard over src until the test ends and returns
// its base URL. cfg's Source, Refresh and HistoryPeriod are set here.
func serveProbe(t *testing.T, src *probeSource, cfg web.Config) string {
	t.Helper()
	cfg.Source, cfg.Refresh, cfg.HistoryPeriod = src, time.Hour, probeHistoryPeriod
	s, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.CloseStreams()
		ts.Close()
		cancel()
		wg.Wait()
	})
	return ts.URL
}

// probeHistoryPeriod is the test server's history sampling period: short,
// so the test need not wait 5 s per sample.
const probeHistoryPeriod = 20 * time.Millisecond

// setRTT changes the probe result, a period after the last change, and
// waits until the server serves it, so that each value becomes one history
// sample (figures-only changes are sampled at most once per period).
func (p *probeSource) setRTT(t *testing.T, base string, v float64) {
	t.Helper()
	time.Sleep(probeHistoryPeriod)
	p.mu.Lock()
	p.rtt = v
	p.mu.Unlock()
	p.changed()
	waitRTT(t, base, v)
}

// waitRTT waits until the server serves RTT v.
func waitRTT(t *testing.T, base string, v float64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var st web.State
		code, body := request(t, http.DefaultClient, "GET", base+"/api/state", "", nil)
		if code == 200 && json.Unmarshal([]byte(body), &st) == nil && len(st.Tunnels) == 1 &&
			st.Tunnels[0].RTTMillis != nil && *st.Tunnels[0].RTTMillis == v {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never served RTT %v: %d %s", v, code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProbeResultsAndChart(t *testing.T) {
	requireBrowser(t)
	src := &probeSource{rtt: 10, changes: make(chan struct{}, 1)}
	base := serveProbe(t, src, web.Config{NoAuth: true})
	// One history sample per value: 10 (the first read), 12, 30, 18.
	waitRTT(t, base, 10)
	for _, v := range []float64{12, 30, 18} {
		src.setRTT(t, base, v)
	}

	b := newBrowser(t, 1200, 900)
	do(t, b.root, "open the tunnels", chromedp.Navigate(base+"/#/tunnels"))
	waitJS(t, b.root, "the RTT of the last probe", `(() => { const r = document.querySelector('tr[data-tunnel-id="a.inet~b.inet"]'); return r && r.textContent.includes("18 ms") && r.textContent.includes("1.8 ms") && r.textContent.includes("0.9 %"); })()`)
	if eval[bool](t, b.root, `!document.getElementById("logout").hidden`) {
		t.Error("sign-out offered with auth disabled")
	}
	do(t, b.root, "open the history", chromedp.Click(chromedp.CSS(`tr[data-tunnel-id="a.inet~b.inet"] td.state`)))
	waitJS(t, b.root, "the RTT, jitter and loss lines", `["rtt", "jitter", "loss"].every(k => document.querySelector("#tunnel-detail svg.chart path.chart-" + k) !== null)`)
	// One point per history sample. The server builds the model on
	// demand (each request, the browser's stream), so a build after a
	// history period adds a sample of the unchanged figures: the samples
	// are 10, 12, 30, 18 ms, each possibly repeated, in that order.
	var resp struct{ Samples []web.Sample }
	code, body := request(t, http.DefaultClient, "GET", base+"/api/history?tunnel=a.inet~b.inet", "", nil)
	if code != 200 || json.Unmarshal([]byte(body), &resp) != nil {
		t.Fatalf("GET /api/history: %d %s", code, body)
	}
	hist := resp.Samples
	var rtts []float64
	for _, sm := range hist {
		if sm.RTTMillis != nil && (len(rtts) == 0 || rtts[len(rtts)-1] != *sm.RTTMillis) {
			rtts = append(rtts, *sm.RTTMillis)
		}
	}
	if !slices.Equal(rtts, []float64{10, 12, 30, 18}) {
		t.Errorf("history RTTs %v, want 10, 12, 30, 18 in order", rtts)
	}
	for _, line := range []string{"rtt", "jitter", "loss"} {
		if n := eval[int](t, b.root, `document.querySelector("#tunnel-detail svg.chart path.chart-`+line+`").getAttribute("d").split(/[ML]/).filter(Boolean).length`); n != len(hist) {
			t.Errorf("%s line has %d points, want one per sample (%d)", line, n, len(hist))
		}
	}
	label := eval[string](t, b.root, `document.querySelector("#tunnel-detail svg.chart").getAttribute("aria-label")`)
	for _, want := range []string{fmt.Sprintf("%d samples", len(hist)), "latest RTT 18 ms", "latest jitter 1.8 ms", "latest loss 0.9 %"} {
		if !strings.Contains(label, want) {
			t.Errorf("chart label %q lacks %q", label, want)
		}
	}
	if key := eval[string](t, b.root, `document.querySelector("#tunnel-detail figcaption").textContent`); !strings.Contains(key, "jitter") {
		t.Errorf("chart key %q lacks jitter", key)
	}
	screenshot(t, b.root, artifactsDir(t), "07-probe-chart")
	b.checkNoErrors()
}

package browsertest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/meshwan/meshwan/web"
)

// probeSource is a web.Source whose tunnel carries probe results, which
// edges do not report yet: it checks that the page shows them.
type probeSource struct {
	mu      sync.Mutex
	rtt     float64
	changes chan struct{}
}

func (p *probeSource) State(context.Context) (web.State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rtt, jitter, loss := p.rtt, p.rtt/10, p.rtt/20
	return web.State{
		Topology: "full-mesh", GRPCPort: 7400,
		Sites: []web.Site{{Name: "a", Role: "spoke", State: web.SiteUp}, {Name: "b", Role: "spoke", State: web.SiteUp}},
		Tunnels: []web.Tunnel{{
			ID: "a.inet~b.inet", Prefix: "10.255.0.0/30",
			A:         web.TunnelEnd{Site: "a", Transport: "inet", Inner: "10.255.0.1/30"},
			B:         web.TunnelEnd{Site: "b", Transport: "inet", Inner: "10.255.0.2/30"},
			Reports:   []web.EndReport{{Site: "a", State: web.TunnelUp}},
			RTTMillis: &rtt, JitterMillis: &jitter, LossPercent: &loss,
		}},
	}, nil
}

func (p *probeSource) Changes() (<-chan struct{}, func()) { return p.changes, func() {} }

// setRTT changes the probe result and waits until the server serves it,
// so that each value becomes one history sample.
func (p *probeSource) setRTT(t *testing.T, base string, v float64) {
	t.Helper()
	p.mu.Lock()
	p.rtt = v
	p.mu.Unlock()
	p.changes <- struct{}{}
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
	s, err := web.New(web.Config{Source: src, NoAuth: true, Refresh: time.Hour})
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
	for _, v := range []float64{10, 12, 30, 18} { // one history sample each
		src.setRTT(t, ts.URL, v)
	}

	b := newBrowser(t, 1200, 900)
	do(t, b.root, "open the tunnels", chromedp.Navigate(ts.URL+"/#/tunnels"))
	waitJS(t, b.root, "the RTT of the last probe", `(() => { const r = document.querySelector('tr[data-tunnel-id="a.inet~b.inet"]'); return r && r.textContent.includes("18 ms") && r.textContent.includes("1.8 ms") && r.textContent.includes("0.9 %"); })()`)
	if eval[bool](t, b.root, `!document.getElementById("logout").hidden`) {
		t.Error("sign-out offered with auth disabled")
	}
	do(t, b.root, "open the history", chromedp.Click(chromedp.CSS(`tr[data-tunnel-id="a.inet~b.inet"] td.state`)))
	waitJS(t, b.root, "the RTT and loss lines", `document.querySelector("#tunnel-detail svg.chart path.chart-rtt") !== null && document.querySelector("#tunnel-detail svg.chart path.chart-loss") !== null`)
	// One line segment per sample: 10, 12, 30, 18 ms.
	if n := eval[int](t, b.root, `document.querySelector("#tunnel-detail svg.chart path.chart-rtt").getAttribute("d").split(/[ML]/).filter(Boolean).length`); n != 4 {
		t.Errorf("RTT line has %d points, want 4", n)
	}
	label := eval[string](t, b.root, `document.querySelector("#tunnel-detail svg.chart").getAttribute("aria-label")`)
	if want := "latest RTT 18 ms"; !strings.Contains(label, want) {
		t.Errorf("chart label %q lacks %q", label, want)
	}
	screenshot(t, b.root, artifactsDir(t), "07-probe-chart")
	b.checkNoErrors()
}

package probe

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCollector registers a Collector in a pedantic registry (which checks
// the metrics against their descriptions) and compares the scrape, as
// sorted text, with want.
func TestCollector(t *testing.T) {
	p, _ := NewProber(Config{})
	if err := p.Apply([]Target{{Tunnel: "t1", Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddrPort("10.0.0.2:7402")}}); err != nil {
		t.Fatal(err)
	}
	// Feed the tunnel's stats directly: two replies, then one loss.
	tun := p.tunnels["t1"]
	tun.stats.Sent(1, ms(0))
	tun.stats.Received(1, ms(10), 0)
	tun.stats.Sent(2, ms(100))
	tun.stats.Received(2, ms(130), 0)
	tun.stats.Sent(3, ms(200))
	tun.stats.Tick(ms(1200))

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewCollector(p)); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			lines = append(lines, fmt.Sprintf("%s{%s} %.6g", f.GetName(), strings.Join(labels, ","), v))
		}
	}
	sort.Strings(lines)
	want := strings.Join([]string{
		"meshwan_probe_jitter_seconds{tunnel=t1} 0.00125",
		"meshwan_probe_late_total{tunnel=t1} 0",
		"meshwan_probe_loss_ratio{tunnel=t1} 0.333333",
		"meshwan_probe_lost_total{tunnel=t1} 1",
		"meshwan_probe_received_total{tunnel=t1} 2",
		"meshwan_probe_rtt_quantile_seconds{quantile=0.5,tunnel=t1} 0.01",
		"meshwan_probe_rtt_quantile_seconds{quantile=0.9,tunnel=t1} 0.03",
		"meshwan_probe_rtt_quantile_seconds{quantile=0.99,tunnel=t1} 0.03",
		"meshwan_probe_sent_total{tunnel=t1} 3",
		"meshwan_probe_srtt_seconds{tunnel=t1} 0.0125",
		"meshwan_probe_state{state=down,tunnel=t1} 0",
		"meshwan_probe_state{state=unknown,tunnel=t1} 0",
		"meshwan_probe_state{state=up,tunnel=t1} 1",
		"meshwan_probe_transitions_total{tunnel=t1} 1",
	}, "\n")
	if got := strings.Join(lines, "\n"); got != want {
		t.Errorf("scrape\n got:\n%s\nwant:\n%s", got, want)
	}
}

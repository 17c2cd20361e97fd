package daemon

import (
	"context"
	"time"

	"github.com/meshwan/meshwan/controller/health"
	"github.com/prometheus/client_golang/prometheus"
)

// collector reports the network's size and edge states at scrape time,
// from one snapshot, so the figures are consistent with each other.
type collector struct {
	d                     *Daemon
	sites, tunnels, edges *prometheus.Desc
}

func newCollector(d *Daemon) *collector {
	return &collector{
		d:       d,
		sites:   prometheus.NewDesc("meshwan_sites", "Number of sites declared.", nil, nil),
		tunnels: prometheus.NewDesc("meshwan_tunnels", "Number of tunnels allocated.", nil, nil),
		edges:   prometheus.NewDesc("meshwan_edges", "Sites by edge state.", []string{"state"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sites
	ch <- c.tunnels
	ch <- c.edges
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := c.d.Net.Snapshot(ctx)
	if err != nil {
		return
	}
	all, err := c.d.Health.All(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.sites, prometheus.GaugeValue, float64(len(snap.Sites)))
	ch <- prometheus.MustNewConstMetric(c.tunnels, prometheus.GaugeValue, float64(len(snap.Tunnels)))
	counts := map[health.State]int{health.Up: 0, health.Down: 0, health.NeverSeen: 0}
	for name := range snap.Sites {
		st, ok := all[name]
		if !ok {
			st.State = health.NeverSeen
		}
		counts[st.State]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.edges, prometheus.GaugeValue, float64(n), string(state))
	}
}

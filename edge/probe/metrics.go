package probe

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a Prober's per-tunnel statistics to Prometheus. It
// reads one Snapshot per scrape, so the figures of a scrape agree with
// each other, and keeps no state of its own. Counters restart from zero
// when a tunnel is re-created by Apply (Prometheus treats that as a reset).
type Collector struct {
	p                                       Source
	srtt, rttQ, jitter, loss, state         *prometheus.Desc
	transitions, sent, received, lost, late *prometheus.Desc
}

// Source is what a Collector reads: a Prober, or the agent's Owner, which
// replaces its Prober when the probe profile changes.
type Source interface {
	Snapshot() []TunnelSnapshot
}

// NewCollector returns a Collector for p; register it with a registry.
func NewCollector(p Source) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("meshwan_probe_"+name, help, append([]string{"tunnel"}, labels...), nil)
	}
	return &Collector{
		p:           p,
		srtt:        d("srtt_seconds", "Smoothed round-trip time (EWMA, alpha 1/8)."),
		rttQ:        d("rtt_quantile_seconds", "Round-trip time percentile over the recent window.", "quantile"),
		jitter:      d("jitter_seconds", "RFC 3550 interarrival jitter of the round-trip time."),
		loss:        d("loss_ratio", "Share of the recent probes that were lost, 0 to 1."),
		state:       d("state", "Liveness: 1 for the tunnel's current state.", "state"),
		transitions: d("transitions_total", "Liveness transitions."),
		sent:        d("sent_total", "Probe requests sent."),
		received:    d("received_total", "Probe replies received in time."),
		lost:        d("lost_total", "Probes declared lost."),
		late:        d("late_total", "Probe replies received after the probe was declared lost."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.srtt, c.rttQ, c.jitter, c.loss, c.state, c.transitions, c.sent, c.received, c.lost, c.late} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, t := range c.p.Snapshot() {
		id := t.Target.Tunnel
		gauge(c.srtt, t.SRTT.Seconds(), id)
		gauge(c.rttQ, t.P50.Seconds(), id, "0.5")
		gauge(c.rttQ, t.P90.Seconds(), id, "0.9")
		gauge(c.rttQ, t.P99.Seconds(), id, "0.99")
		gauge(c.jitter, t.Jitter.Seconds(), id)
		gauge(c.loss, t.LossPct/100, id)
		for _, s := range []State{StateUnknown, StateUp, StateDown} {
			v := 0.0
			if t.State == s {
				v = 1
			}
			gauge(c.state, v, id, s.String())
		}
		counter(c.transitions, t.Transitions, id)
		counter(c.sent, t.Sent, id)
		counter(c.received, t.Received, id)
		counter(c.lost, t.Lost, id)
		counter(c.late, t.Late, id)
	}
}

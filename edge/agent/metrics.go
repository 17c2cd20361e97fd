package agent

import (
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the agent's path decisions to Prometheus next to the
// probe statistics (probe.Collector): per tunnel whether it carries
// traffic and whether it waits out the hold-down, and per traffic class
// and remote site the tunnel in use.
type Collector struct {
	o                        *Owner
	usable, holdDown, choice *prometheus.Desc
}

// NewCollector returns a Collector for o.
func NewCollector(o *Owner) *Collector {
	return &Collector{
		o:        o,
		usable:   prometheus.NewDesc("meshwan_path_usable", "1 when the tunnel carries traffic (probes up, IPsec SA installed, hold-down over).", []string{"tunnel"}, nil),
		holdDown: prometheus.NewDesc("meshwan_path_hold_down", "1 while a recovered tunnel waits out the hold-down.", []string{"tunnel"}, nil),
		choice:   prometheus.NewDesc("meshwan_steer_path", "1 for the tunnel a traffic class uses towards a remote site; meets_sla says whether it meets the class's SLA.", []string{"class", "remote_site", "tunnel", "meets_sla"}, nil),
	}
}

// RegisterMetrics registers both the probe and the path collectors.
func RegisterMetrics(reg prometheus.Registerer, o *Owner) error {
	if err := reg.Register(probe.NewCollector(o)); err != nil {
		return err
	}
	return reg.Register(NewCollector(o))
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.usable
	ch <- c.holdDown
	ch <- c.choice
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for id, h := range c.o.Health() {
		ch <- prometheus.MustNewConstMetric(c.usable, prometheus.GaugeValue, b(h.Usable), id)
		ch <- prometheus.MustNewConstMetric(c.holdDown, prometheus.GaugeValue, b(h.HoldDown), id)
	}
	for _, x := range c.o.Choices() {
		meets := "false"
		if x.MeetsSLA {
			meets = "true"
		}
		ch <- prometheus.MustNewConstMetric(c.choice, prometheus.GaugeValue, 1, x.Class, x.RemoteSite, x.TunnelID, meets)
	}
}

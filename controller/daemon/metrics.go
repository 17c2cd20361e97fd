package daemon

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/enroll"
	"github.com/meshwan/meshwan/controller/health"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metricsHandler serves /metrics: the controller's own figures, and
// everything registered with prometheus's default registry, which is where
// the Go runtime (go_*) and process (process_*) collectors and the
// embedded etcd's server metrics (etcd_server_*, etcd_mvcc_*, etcd_disk_*,
// registered by etcd's packages themselves) live. With an external etcd
// the etcd_* families are left out: they would describe a server that does
// not run in this process (the cluster serves its own).
func metricsHandler(d *Daemon, embeddedEtcd bool) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(d))
	def := prometheus.DefaultGatherer
	if !embeddedEtcd {
		def = withoutPrefix(def, "etcd_")
	}
	// ContinueOnError: one failing collector must not hide the others.
	return promhttp.HandlerFor(prometheus.Gatherers{reg, def}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func withoutPrefix(g prometheus.Gatherer, prefix string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), prefix) {
				out = append(out, mf)
			}
		}
		return out, err
	})
}

// collector reports the network's size and edge states at scrape time,
// from one snapshot, so the figures are consistent with each other.
type collector struct {
	d                     *Daemon
	sites, tunnels, edges *prometheus.Desc
	dashboardBuilds       *prometheus.Desc
	edgeCertExpiry        *prometheus.Desc
	serverCertExpiry      *prometheus.Desc
	devices               *prometheus.Desc
	refusedAddresses      *prometheus.Desc
	intentViolations      *prometheus.Desc
	unjoinedPairs         *prometheus.Desc
}

func newCollector(d *Daemon) *collector {
	return &collector{
		d:       d,
		sites:   prometheus.NewDesc("meshwan_sites", "Number of sites declared.", nil, nil),
		tunnels: prometheus.NewDesc("meshwan_tunnels", "Number of tunnels allocated.", nil, nil),
		edges:   prometheus.NewDesc("meshwan_edges", "Sites by edge state.", []string{"state"}, nil),
		dashboardBuilds: prometheus.NewDesc("meshwan_dashboard_builds_total",
			"Times the dashboard's network model was built (only for a connected browser or a request).", nil, nil),
		edgeCertExpiry: prometheus.NewDesc("meshwan_edge_cert_expiry_timestamp_seconds",
			"When the current certificate of each site's edge expires (Unix time); revoked identities are left out.", []string{"site"}, nil),
		serverCertExpiry: prometheus.NewDesc("meshwan_controller_cert_expiry_timestamp_seconds",
			"When this controller's TLS certificate expires (Unix time); it is rotated at 2/3 of its lifetime.", nil, nil),
		refusedAddresses: prometheus.NewDesc("meshwan_reported_addresses_refused_total",
			"Addresses edges reported for dynamic transports that the controller refused (kept the stored address); each is also a warning and a dashboard event.", nil, nil),
		intentViolations: prometheus.NewDesc("meshwan_intent_violations",
			"Problems the stored intent has under today's validation rules (only intent stored by an older version can have any; see the controller's log).", nil, nil),
		unjoinedPairs: prometheus.NewDesc("meshwan_unjoined_site_pairs",
			"Pairs of sites the topology connects that get no tunnel because every transport pair between them is dynamic at both ends (listed by GetTopology; docs/nat.md).", nil, nil),
		devices: prometheus.NewDesc("meshwan_devices", "Claimed devices by state (pending, approved, enrolled, rejected).", []string{"state"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sites
	ch <- c.tunnels
	ch <- c.edges
	ch <- c.dashboardBuilds
	ch <- c.edgeCertExpiry
	ch <- c.serverCertExpiry
	ch <- c.devices
	ch <- c.refusedAddresses
	ch <- c.intentViolations
	ch <- c.unjoinedPairs
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.intentViolations, prometheus.GaugeValue, float64(len(c.d.Net.Audit())))
	ch <- prometheus.MustNewConstMetric(c.unjoinedPairs, prometheus.GaugeValue, float64(len(c.d.Net.Unjoined())))
	ch <- prometheus.MustNewConstMetric(c.refusedAddresses, prometheus.CounterValue, float64(c.d.Net.RefusedAddresses()))
	if c.d.dash != nil {
		ch <- prometheus.MustNewConstMetric(c.dashboardBuilds, prometheus.CounterValue, float64(c.d.dash.builds.Load()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.d.serverCert.Load() != nil {
		ch <- prometheus.MustNewConstMetric(c.serverCertExpiry, prometheus.GaugeValue, float64(c.d.ServerCertNotAfter().Unix()))
	}
	if ids, err := c.d.Enroll.Identities(ctx); err == nil {
		for _, e := range ids {
			if !e.Revoked && !e.NotAfter.IsZero() {
				ch <- prometheus.MustNewConstMetric(c.edgeCertExpiry, prometheus.GaugeValue, float64(e.NotAfter.Unix()), e.Site)
			}
		}
	}
	if ds, err := c.d.Enroll.Devices(ctx); err == nil {
		n := map[string]int{enroll.DevicePending: 0, enroll.DeviceApproved: 0, enroll.DeviceEnrolled: 0, enroll.DeviceRejected: 0}
		for _, d := range ds {
			n[d.State]++
		}
		for st, v := range n {
			ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(v), st)
		}
	}
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

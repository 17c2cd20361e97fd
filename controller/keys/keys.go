// Package keys drives the IPsec key rotations of the controller's tunnels:
// it starts scheduled rotations (keys older than the configured interval,
// a bounded number at a time) and advances every rotation in progress once
// both ends have reported the key set of its current phase. The phases and
// their records are network's (controller/network/rotate.go); this package
// owns only the loop, the schedule and the stall warnings.
//
// Every replica may run a Driver: each step is a compare-and-swap on the
// tunnel record, so replicas never take a step twice, and the state lives
// in etcd, so a restarted controller resumes every rotation where it was.
package keys

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshwan/meshwan/controller/health"
	"github.com/meshwan/meshwan/controller/network"
)

// Defaults.
const (
	DefaultTick       = time.Second
	DefaultStallAfter = 10 * time.Minute
	DefaultMaxRunning = 16
)

// Config configures a Driver.
type Config struct {
	Net *network.Network
	// Loaded returns the key serials a site's edge reports; see
	// HealthSerials.
	Loaded network.LoadedSerials
	// Interval: rotate keys older than this (0: no scheduled rotation;
	// rotations requested through the API still advance).
	Interval time.Duration
	// MaxRunning bounds the scheduled rotations in progress at once
	// (default DefaultMaxRunning).
	MaxRunning int
	// StallAfter: a rotation phase older than this is logged as stalled,
	// once per phase (default DefaultStallAfter). It is never forced.
	StallAfter time.Duration
	// Tick is how often the rotations are looked at (default 1 s): a look
	// with nothing in progress costs one pass over the view's tunnels.
	Tick time.Duration
	// OnEvent, when set, hears completed and stalled rotations (the
	// dashboard's event feed).
	OnEvent func(what string)
	Logger  *slog.Logger
	Now     func() time.Time
}

// Driver runs the rotations; see the package comment.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	warned map[string]uint64 // tunnel id -> serial whose stall was logged
}

// New returns a Driver with defaults filled in.
func New(cfg Config) *Driver {
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = DefaultMaxRunning
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = DefaultStallAfter
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, log: log, warned: map[string]uint64{}}
}

func (d *Driver) event(what string) {
	if d.cfg.OnEvent != nil {
		d.cfg.OnEvent(what)
	}
}

// HealthSerials reads the loaded key serials from the health registry:
// the edge's latest report, from memory or from another replica's copy in
// etcd. A site that is not up reports nothing.
func HealthSerials(r *health.Registry) network.LoadedSerials {
	return func(ctx context.Context, site string) (map[string]uint64, error) {
		st, err := r.Get(ctx, site)
		if err != nil {
			return nil, err
		}
		out := map[string]uint64{}
		if st.State != health.Up {
			return out, nil
		}
		for _, t := range st.Report.Tunnels {
			out[t.TunnelID] = t.PSKSerial
		}
		return out, nil
	}
}

// Run drives rotations until ctx ends.
func (d *Driver) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.Tick)
	defer t.Stop()
	for {
		d.Once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once starts the scheduled rotations that are due, advances those whose
// ends are ready and warns about stalled ones. Errors are logged: the
// next round retries.
func (d *Driver) Once(ctx context.Context) {
	if d.cfg.Interval > 0 {
		if _, err := d.cfg.Net.StartDueRotations(ctx, d.cfg.Interval, d.cfg.MaxRunning); err != nil && ctx.Err() == nil {
			d.log.Warn("scheduled psk rotation failed", "err", err)
		}
	}
	rots, err := d.cfg.Net.AdvanceRotations(ctx, d.cfg.Loaded)
	if err != nil && ctx.Err() == nil {
		d.log.Warn("advancing psk rotations failed", "err", err)
	}
	now := d.cfg.Now()
	seen := make(map[string]bool, len(rots))
	for _, r := range rots {
		seen[r.TunnelID] = true
		if r.FinishedNow {
			d.event("key rotation of tunnel " + r.TunnelID + " completed")
		}
		if r.AdvancedNow || now.Sub(r.Since) < d.cfg.StallAfter || d.warned[r.TunnelID] == r.Serial {
			continue
		}
		d.warned[r.TunnelID] = r.Serial
		d.log.Warn("psk rotation stalled: an end has not loaded the keys of this phase",
			"tunnel_id", r.TunnelID, "phase", r.Phase, "psk_serial", r.Serial, "since", r.Since.UTC().Format(time.RFC3339),
			"site_a", r.AEnd, "loaded_a", r.LoadedA, "site_b", r.BEnd, "loaded_b", r.LoadedB)
		d.event(fmt.Sprintf("key rotation of tunnel %s stalled in phase %s since %s (loaded: %s %d, %s %d)",
			r.TunnelID, r.Phase, r.Since.UTC().Format(time.RFC3339), r.AEnd, r.LoadedA, r.BEnd, r.LoadedB))
	}
	for id := range d.warned {
		if !seen[id] {
			delete(d.warned, id)
		}
	}
}

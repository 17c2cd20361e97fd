// Package sim owns the fleet simulator: thousands of simulated edges in one
// process, each a real gRPC client over loopback that enrolls with its own
// one-time token (edge/identity), holds one Sync stream with the edge's own
// stream client (edge/syncer), checks every state it receives with the data
// plane's own validation (edge/dataplane) and reports every second, plus the
// scale scenarios run against a controller process (`make bench-scale`).
//
// A simulated edge does what a real one does up to the kernel: it runs no
// data plane, so what it costs the controller is what a real edge costs.
// What it records (first/last state, bytes, reconnects, refusals) is what
// the scenarios measure; see docs/benchmarks.md.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/edge/identity"
	"github.com/meshwan/meshwan/edge/syncer"
)

// FleetConfig configures a Fleet.
type FleetConfig struct {
	// Controller is the controller's gRPC host:port.
	Controller string
	// Dir holds one identity directory per edge (Dir/<site>).
	Dir          string
	AgentVersion string
	// ReportEvery is the report interval (default 1 s, the agent's).
	ReportEvery time.Duration
	// MaxReportTunnels caps the tunnel statuses in one report (default
	// 20): a hub with thousands of tunnels reports its first 20, so the
	// fleet's reports stay cheap for the simulator and the measurement is
	// the per-edge cost, not a hub's per-tunnel one.
	MaxReportTunnels int
	// MinBackoff and MaxBackoff are passed to the syncer; zero keeps the
	// agent's defaults (0.5 s, 30 s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Fleet is a set of simulated edges. Every edge's goroutines belong to the
// Fleet and end in Close.
type Fleet struct {
	cfg    FleetConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards edges, order and changed
	edges   map[string]*edge
	order   []*edge
	changed chan struct{} // closed and replaced on every recorded event
}

// NewFleet returns an empty fleet whose edges run until Close (or ctx
// ends).
func NewFleet(ctx context.Context, cfg FleetConfig) *Fleet {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = time.Second
	}
	if cfg.MaxReportTunnels == 0 {
		cfg.MaxReportTunnels = 20
	}
	if cfg.AgentVersion == "" {
		cfg.AgentVersion = "meshwan-sim"
	}
	ctx, cancel := context.WithCancel(ctx)
	return &Fleet{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel, edges: map[string]*edge{}, changed: make(chan struct{})}
}

// Close stops every edge and waits for their goroutines.
func (f *Fleet) Close() {
	f.cancel()
	f.wg.Wait()
}

// Add enrolls an edge for site with token (pinning caHash) and starts it.
// It returns once the edge is enrolled; the stream comes up on its own.
func (f *Fleet) Add(ctx context.Context, site, token, caHash string) error {
	id, err := identity.Enroll(ctx, filepath.Join(f.cfg.Dir, site), identity.EnrollOptions{
		Controller: f.cfg.Controller, Token: token, Site: site, CAHash: caHash})
	if err != nil {
		return fmt.Errorf("enroll %s: %w", site, err)
	}
	e := &edge{f: f, site: site, st: EdgeStats{Site: site, Started: time.Now()}}
	s, err := syncer.New(syncer.Config{
		Controller: f.cfg.Controller, Identity: id, AgentVersion: f.cfg.AgentVersion,
		Applied: e.applied.Load, Logger: slog.New(streamEvents{e}),
		MinBackoff: f.cfg.MinBackoff, MaxBackoff: f.cfg.MaxBackoff,
		OnReceive: e.onReceive, OnStream: e.onStream,
	})
	if err != nil {
		return fmt.Errorf("syncer %s: %w", site, err)
	}
	f.mu.Lock()
	if _, dup := f.edges[site]; dup {
		f.mu.Unlock()
		return fmt.Errorf("edge %s added twice", site)
	}
	f.edges[site] = e
	f.order = append(f.order, e)
	f.mu.Unlock()
	f.wg.Go(func() { e.run(f.ctx, s) })
	return nil
}

// notify wakes every Wait.
func (f *Fleet) notify() {
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Len is the number of edges added.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.order)
}

// Snapshot copies every edge's record, in the order they were added.
func (f *Fleet) Snapshot() []EdgeStats {
	f.mu.Lock()
	es := slices.Clone(f.order)
	f.mu.Unlock()
	out := make([]EdgeStats, len(es))
	for i, e := range es {
		out[i] = e.stats()
	}
	return out
}

// Get returns one edge's record.
func (f *Fleet) Get(site string) (EdgeStats, bool) {
	f.mu.Lock()
	e, ok := f.edges[site]
	f.mu.Unlock()
	if !ok {
		return EdgeStats{}, false
	}
	return e.stats(), true
}

// ErrRefused is returned by Wait when an edge refused a state or its
// stream client gave up: waiting longer cannot help.
var ErrRefused = errors.New("edge refused a desired state")

// waitThrottle bounds how often Wait re-evaluates its condition: checking
// 5,000 records costs a little, and states arrive by the thousand after a
// change; the edges timestamp what they receive themselves, so a late look
// changes no figure.
const waitThrottle = 20 * time.Millisecond

// Wait blocks until ok holds for every edge (want edges in total), ctx
// ends, or an edge fails (ErrRefused). The error names the edges still
// waiting.
func (f *Fleet) Wait(ctx context.Context, want int, ok func(*EdgeStats) bool) error {
	for {
		f.mu.Lock()
		ch := f.changed
		f.mu.Unlock()
		snap := f.Snapshot()
		var pending []string
		var first *EdgeStats
		for i := range snap {
			if err := snap[i].Failure(); err != nil {
				return err
			}
			if !ok(&snap[i]) {
				pending = append(pending, snap[i].Site)
				if first == nil {
					first = &snap[i]
				}
			}
		}
		if len(snap) >= want && len(pending) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			err := fmt.Errorf("%w: %d of %d edges not there yet (added %d)", ctx.Err(), len(pending)+want-len(snap), want, len(snap))
			if first != nil {
				err = fmt.Errorf("%w; first: %s; %s", err, strings.Join(pending[:min(len(pending), 5)], ", "), first.Describe())
			}
			return err
		}
		select {
		case <-time.After(waitThrottle):
		case <-ctx.Done():
		}
	}
}

// Failures lists every edge that refused a state or whose stream gave up.
func Failures(snap []EdgeStats) []error {
	var out []error
	for i := range snap {
		if err := snap[i].Failure(); err != nil {
			out = append(out, err)
		}
	}
	return out
}

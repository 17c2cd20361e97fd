// Package agent owns the edge's reconcile loop: it takes desired-state
// versions from the controller, keeps the newest on disk, and drives the
// data plane to it with one idempotent Apply. Because the cache survives
// restarts, an edge whose controller is unreachable brings its tunnels up
// from the last state it was given and keeps them (strongSwan rekeys with
// the PSKs it holds). A periodic full Apply repairs drift (a link deleted
// by hand, a flushed table); on an unchanged kernel it writes nothing.
//
// Paths (paths.go) probes every tunnel and takes dead ones out of
// forwarding and steers traffic classes, through Kernel.ApplyPaths; the
// agent reports every second and at once when Paths signals a change.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/identity"
	"github.com/meshwan/meshwan/edge/probe"
	"github.com/meshwan/meshwan/edge/syncer"
)

// Dataplane is what the agent drives.
type Dataplane interface {
	Apply(ctx context.Context, d dataplane.Desired) error
	Status(ctx context.Context, d dataplane.Desired) ([]syncer.TunnelStatus, error)
	Cleanup(ctx context.Context) error
}

// Config configures an Agent.
type Config struct {
	StateDir  string
	Dataplane Dataplane
	Logger    *slog.Logger
	// WANInterfaces are copied into every desired state (local knowledge
	// the controller does not have).
	WANInterfaces []string
	// Resync is the period of the drift-repairing full Apply (default 30s).
	Resync time.Duration
	// StatusEvery is the period of status reports (default 1s): a
	// summary of every tunnel, probe figures included. State changes are
	// reported at once besides.
	StatusEvery time.Duration
	// Paths probes the tunnels and drives failover and steering (nil: no
	// probing; routes follow the desired state alone).
	Paths *Paths
	// KernelStatusEvery is how often the kernel and daemons are asked for
	// link, IPsec and BGP status (default 5s); the reports in between
	// reuse it with fresh probe figures. Asking charon every second
	// multiplies its kernel XFRM queries (per SA and per policy) for no
	// gain: the probes see a dead tunnel first.
	KernelStatusEvery time.Duration
}

// cacheFile holds the last desired state, PSKs included: mode 0600.
const cacheFile = "desired.json"

// Agent is the reconcile loop.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	applied atomic.Int64

	// The last kernel status, owned by Run's goroutine.
	kernelTS  []syncer.TunnelStatus
	kernelBGP []syncer.BGPPeer
	kernelAt  time.Time
}

// New returns an Agent.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.StatusEvery == 0 {
		cfg.StatusEvery = time.Second
	}
	if cfg.KernelStatusEvery == 0 {
		cfg.KernelStatusEvery = 5 * time.Second
	}
	return &Agent{cfg: cfg, log: cfg.Logger}
}

// Applied is the version last applied successfully (0 if none).
func (a *Agent) Applied() int64 { return a.applied.Load() }

// LoadCache reads the cached desired state.
func (a *Agent) LoadCache() (syncer.State, bool, error) {
	raw, err := os.ReadFile(filepath.Join(a.cfg.StateDir, cacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return syncer.State{}, false, nil
	}
	if err != nil {
		return syncer.State{}, false, err
	}
	var st syncer.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return syncer.State{}, false, fmt.Errorf("cached state %s: %w", cacheFile, err)
	}
	return st, true, nil
}

func (a *Agent) saveCache(st syncer.State) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return identity.WriteFileAtomic(filepath.Join(a.cfg.StateDir, cacheFile), raw, 0o600)
}

// Run applies the cached state, then every update, until ctx ends. report
// receives status reports (nil: none are sent).
func (a *Agent) Run(ctx context.Context, updates <-chan syncer.State, report func(syncer.Report)) error {
	var changed <-chan struct{}
	if a.cfg.Paths != nil {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { // owned: cancelled and awaited on the way out
			defer close(done)
			_ = a.cfg.Paths.Run(ctx)
		}()
		defer func() { cancel(); <-done }()
		changed = a.cfg.Paths.Changed()
	}
	var cur syncer.State
	have := false
	if st, ok, err := a.LoadCache(); err != nil {
		a.log.Error("ignoring unreadable cache", "err", err)
	} else if ok {
		a.log.Info("applying cached desired state", "version", st.Version, "tunnels", len(st.Desired.Tunnels))
		cur, have = st, true
	}
	retry := time.NewTimer(0)
	if !have {
		retry.Stop()
	}
	// The resync period is jittered by ±10 % so edges started together
	// (a lab, a fleet after a power cut) do not all hit their kernels and
	// the controller in the same instant, every time.
	jittered := func() time.Duration {
		return a.cfg.Resync*9/10 + time.Duration(rand.Int64N(int64(a.cfg.Resync)/5+1))
	}
	resync := time.NewTimer(jittered())
	defer resync.Stop()
	var pathsVersion int64 = -1
	statusT := time.NewTicker(a.cfg.StatusEvery)
	defer statusT.Stop()
	backoff := time.Second
	apply := func(why string) {
		d := cur.Desired
		d.WANInterfaces = a.cfg.WANInterfaces
		if a.cfg.Paths != nil && cur.Version != pathsVersion {
			// Even if Apply fails in part, probing what exists helps.
			// Only a new version: a resync or retry changes nothing
			// the probes need.
			a.cfg.Paths.Update(d)
			pathsVersion = cur.Version
		}
		start := time.Now()
		if err := a.cfg.Dataplane.Apply(ctx, d); err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Error("apply failed, will retry", "version", cur.Version, "reason", why, "err", err, "retry_in", backoff)
			retry.Reset(backoff)
			backoff = min(backoff*2, 30*time.Second)
			return
		}
		backoff = time.Second
		if a.applied.Swap(cur.Version) != cur.Version {
			a.log.Info("desired state applied", "version", cur.Version, "tunnels", len(d.Tunnels), "reason", why, "took", time.Since(start).Round(time.Millisecond))
		}
		a.kernelAt = time.Time{} // the kernel changed: ask it afresh
		a.sendStatus(ctx, cur, report)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case st := <-updates:
			d := st.Desired
			d.WANInterfaces = a.cfg.WANInterfaces
			if err := d.Validate(); err != nil {
				a.log.Error("desired state refused", "version", st.Version, "err", err)
				continue
			}
			cur, have = st, true
			if err := a.saveCache(st); err != nil {
				a.log.Error("cache write failed", "err", err)
			}
			apply("update")
		case <-retry.C:
			if have {
				apply("retry")
			}
		case <-resync.C:
			resync.Reset(jittered())
			if have {
				apply("resync")
			}
		case <-statusT.C:
			if have {
				a.sendStatus(ctx, cur, report)
			}
		case <-changed:
			if have {
				a.sendStatus(ctx, cur, report)
			}
		}
	}
}

func (a *Agent) sendStatus(ctx context.Context, cur syncer.State, report func(syncer.Report)) {
	if report == nil {
		return
	}
	d := cur.Desired
	d.WANInterfaces = a.cfg.WANInterfaces
	var err error
	if time.Since(a.kernelAt) >= a.cfg.KernelStatusEvery {
		a.kernelAt = time.Now()
		if a.kernelTS, err = a.cfg.Dataplane.Status(ctx, d); err != nil {
			a.log.Warn("status failed", "err", err)
		}
		if b, ok := a.cfg.Dataplane.(interface {
			BGPStatus(context.Context) ([]syncer.BGPPeer, error)
		}); ok {
			if a.kernelBGP, err = b.BGPStatus(ctx); err != nil {
				a.log.Warn("bgp status failed", "err", err)
			}
		}
	}
	ts := slices.Clone(a.kernelTS)
	if a.cfg.Paths != nil {
		mergeHealth(ts, a.cfg.Paths.Status())
	}
	rep := syncer.Report{AppliedVersion: a.applied.Load(), Tunnels: ts, BGPPeers: slices.Clone(a.kernelBGP)}
	if a.cfg.Paths != nil {
		for _, c := range a.cfg.Paths.Choices() {
			rep.ClassPaths = append(rep.ClassPaths, syncer.ClassPath{Class: c.Class, RemoteSite: c.RemoteSite, TunnelID: c.TunnelID, MeetsSLA: c.MeetsSLA})
		}
	}
	report(rep)
}

// DegradedLossPct is the probe loss at and above which an up tunnel is
// reported degraded.
const DegradedLossPct = 5

// mergeHealth adds the probe results to the kernel's view of each tunnel
// and refines the state: a tunnel whose link and SA are up is down when
// its probes are unanswered, and degraded while it waits out the
// hold-down or loses DegradedLossPct or more of its probes.
func mergeHealth(ts []syncer.TunnelStatus, health map[string]PathHealth) {
	for i := range ts {
		h, ok := health[ts[i].ID]
		if !ok {
			continue
		}
		t := &ts[i]
		t.Probed, t.ProbeState, t.Usable = h.Probed, h.State.String(), h.Usable
		t.RTT, t.RTTP99, t.Jitter, t.LossPct, t.Transitions = h.RTT, h.RTTP99, h.Jitter, h.LossPct, h.Transitions
		if t.State != "up" || !h.Probed {
			continue
		}
		switch {
		case h.State == probe.StateDown:
			t.State, t.Detail = "down", describeUsable(h)
		case h.HoldDown:
			t.State, t.Detail = "degraded", describeUsable(h)
		case h.LossPct >= DegradedLossPct:
			t.State, t.Detail = "degraded", fmt.Sprintf("probe loss %.1f%%", h.LossPct)
		}
	}
}

// Cleanup removes everything the data plane created and the cached state.
func (a *Agent) Cleanup(ctx context.Context) error {
	err := a.cfg.Dataplane.Cleanup(ctx)
	if rerr := os.Remove(filepath.Join(a.cfg.StateDir, cacheFile)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/syncer"
)

// EdgeStats is what one simulated edge has seen.
type EdgeStats struct {
	Site    string
	Started time.Time // enrolled, stream client started
	// FirstState and LastState are when the first and the latest accepted
	// state were taken from the stream client; Version is the latest's.
	FirstState, LastState time.Time
	Version               int64
	// State is the latest accepted state (nil before the first). It is
	// shared between snapshots and never modified.
	State *syncer.State
	// MTU is the tunnels' MTU in State (0 without tunnels) and MTUAt when
	// the edge first held a state with that MTU.
	MTU   int
	MTUAt time.Time
	// States counts accepted states; Messages the desired-state messages
	// received (Deltas of them deltas) and Bytes their wire size.
	States, Messages, Deltas int
	Bytes                    int64
	LastReceive              time.Time
	// Connects counts streams opened, Losses open streams lost and
	// Retries failed attempts to open one (the syncer's OnStream events).
	Connects, Losses, Retries int
	LastConnect               time.Time
	up                        bool
	// Refusals counts states refused (conversion or validation); Refusal
	// is the first one's error text.
	Refusals int
	Refusal  string
	// Err is set when the stream client stopped for good (the controller
	// refused this edge).
	Err string

	recvSeq, doneSeq uint64 // messages received / received when the last state was taken
}

// Failure reports a refused state or a stream client that gave up.
func (s *EdgeStats) Failure() error {
	switch {
	case s.Refusals > 0:
		return fmt.Errorf("%w: %s refused %d state(s), first: %s", ErrRefused, s.Site, s.Refusals, s.Refusal)
	case s.Err != "":
		return fmt.Errorf("%w: %s: stream client stopped: %s", ErrRefused, s.Site, s.Err)
	}
	return nil
}

// Describe summarises the record for an error message.
func (s *EdgeStats) Describe() string {
	return fmt.Sprintf("%s: %d states (version %d, mtu %d, %d tunnels, taken %s), %d messages (last %s), %d connects, %d losses, %d retries",
		s.Site, s.States, s.Version, s.MTU, len(s.TunnelIDs()), s.LastState.Format("15:04:05.000"),
		s.Messages, s.LastReceive.Format("15:04:05.000"), s.Connects, s.Losses, s.Retries)
}

// HasState says the edge holds a state.
func (s *EdgeStats) HasState() bool { return s.State != nil }

// CurrentSince says the edge received a desired-state message after t and
// has taken the state that came with it (or a later one). After a
// controller restart with t the moment the new controller served, that is
// the edge holding the state the new controller serves it.
func (s *EdgeStats) CurrentSince(t time.Time) bool {
	return s.State != nil && s.LastReceive.After(t) && s.doneSeq >= s.recvSeq
}

// TunnelIDs returns the ids of the held state's tunnels.
func (s *EdgeStats) TunnelIDs() []string {
	if s.State == nil {
		return nil
	}
	out := make([]string, len(s.State.Desired.Tunnels))
	for i, t := range s.State.Desired.Tunnels {
		out[i] = t.ID
	}
	return out
}

type edge struct {
	f       *Fleet
	site    string
	applied atomic.Int64 // version of the held state, sent in Hello
	mu      sync.Mutex   // guards st
	st      EdgeStats
}

func (e *edge) stats() EdgeStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st
}

// update changes the record under the lock and wakes the fleet's waiters.
func (e *edge) update(fn func(s *EdgeStats)) {
	e.mu.Lock()
	fn(&e.st)
	e.mu.Unlock()
	e.f.notify()
}

// onReceive is the syncer's OnReceive hook; it runs on the stream's
// receive goroutine before the state is converted and queued, so a state
// taken later was received at or after this point.
func (e *edge) onReceive(bytes int, delta bool) {
	now := time.Now()
	e.mu.Lock()
	e.st.Messages++
	if delta {
		e.st.Deltas++
	}
	e.st.Bytes += int64(bytes)
	e.st.LastReceive = now
	e.st.recvSeq++
	e.mu.Unlock()
}

// run takes states, checks them, and reports until ctx ends.
func (e *edge) run(ctx context.Context, s *syncer.Syncer) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }() // owned by run: it waits below
	defer func() {
		cancel()
		<-done
	}()

	// A random phase spreads the fleet's reports over the second, as
	// independently started agents are.
	phase := time.NewTimer(rand.N(e.f.cfg.ReportEvery))
	defer phase.Stop()
	var tick <-chan time.Time
	var held *syncer.State
	var report syncer.Report
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			done <- err // for the deferred wait
			if ctx.Err() == nil {
				e.update(func(s *EdgeStats) { s.Err = err.Error() })
			}
			return
		case st := <-s.Updates():
			if e.take(st) {
				held = &st
				report = reportFor(held, e.f.cfg.MaxReportTunnels)
				s.Report(report)
			}
		case <-phase.C:
			t := time.NewTicker(e.f.cfg.ReportEvery)
			defer t.Stop()
			tick = t.C
		case <-tick:
			if held == nil {
				continue // the syncer's heartbeat says hello meanwhile
			}
			advance(&report)
			s.Report(report)
		}
	}
}

// take checks st with the edge's own validation and holds it if valid; a
// refused state is counted and the previous one kept, as the agent does.
func (e *edge) take(st syncer.State) bool {
	err := st.Desired.Validate()
	now := time.Now()
	e.update(func(s *EdgeStats) {
		if err != nil {
			s.Refusals++
			if s.Refusal == "" {
				s.Refusal = fmt.Sprintf("version %d: %v", st.Version, err)
			}
			return
		}
		if s.State == nil {
			s.FirstState = now
		}
		s.State, s.Version, s.LastState = &st, st.Version, now
		s.States++
		s.doneSeq = s.recvSeq
		mtu := 0
		if len(st.Desired.Tunnels) > 0 {
			mtu = st.Desired.Tunnels[0].MTU
		}
		if mtu != s.MTU || s.MTUAt.IsZero() {
			s.MTU, s.MTUAt = mtu, now
		}
	})
	if err != nil {
		e.f.log.Error("simulated edge refused a desired state", "site", e.site, "version", st.Version, "err", err)
		return false
	}
	e.applied.Store(st.Version)
	return true
}

// reportFor is the report of an edge whose every tunnel is up, listing at
// most max tunnels (see FleetConfig.MaxReportTunnels).
func reportFor(st *syncer.State, max int) syncer.Report {
	r := syncer.Report{AppliedVersion: st.Version}
	for i, t := range st.Desired.Tunnels {
		if i == max {
			break
		}
		r.Tunnels = append(r.Tunnels, dataplane.TunnelStatus{
			ID: t.ID, State: dataplane.TunnelUp, LinkUp: true, IKEState: "ESTABLISHED", ChildState: "INSTALLED",
			Probed: true, ProbeState: dataplane.ProbeUp, Usable: true,
			RTT: time.Duration(5+rand.IntN(20)) * time.Millisecond, RTTP99: 30 * time.Millisecond, Jitter: time.Millisecond,
		})
	}
	return r
}

// advance moves the figures on as a second of traffic would: counters grow,
// the RTT wanders a little. Report copies the slice's elements, so the
// syncer never sees later changes.
func advance(r *syncer.Report) {
	ts := make([]dataplane.TunnelStatus, len(r.Tunnels))
	copy(ts, r.Tunnels)
	for i := range ts {
		ts[i].BytesIn += 12_000
		ts[i].BytesOut += 9_000
		ts[i].PacketsIn += 20
		ts[i].PacketsOut += 18
		ts[i].RTT = time.Duration(5+rand.IntN(20)) * time.Millisecond
	}
	r.Tunnels = ts
}

// onStream is the syncer's OnStream hook: connects, losses of a stream
// that was up, and failed attempts.
func (e *edge) onStream(up bool, _ error) {
	now := time.Now()
	e.update(func(s *EdgeStats) {
		switch {
		case up:
			s.Connects++
			s.LastConnect = now
			s.up = true
		case s.up:
			s.Losses++
			s.up = false
		default:
			s.Retries++
		}
	})
}

// streamEvents takes the one event the syncer only logs: a desired state
// it could not convert (a refusal). Other lines are dropped (5,000 edges'
// logs would swamp the run).
type streamEvents struct{ e *edge }

const msgStateRefused = "desired state rejected"

func (h streamEvents) Enabled(context.Context, slog.Level) bool { return true }

func (h streamEvents) Handle(_ context.Context, r slog.Record) error {
	switch r.Message {
	case msgStateRefused:
		var cause error = errors.New("conversion failed")
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				cause = fmt.Errorf("%v", a.Value.Any())
			}
			return true
		})
		h.e.update(func(s *EdgeStats) {
			s.Refusals++
			if s.Refusal == "" {
				s.Refusal = "conversion: " + cause.Error()
			}
		})
	}
	return nil
}

func (h streamEvents) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h streamEvents) WithGroup(string) slog.Handler      { return h }

package probe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Target is one tunnel to probe: requests go from Local (the near end of
// the tunnel's /30) to Remote (the far end; port 0 means Config.Port).
type Target struct {
	Tunnel string
	Local  netip.Addr
	Remote netip.AddrPort
}

// Event is a liveness transition of one tunnel.
type Event struct {
	Tunnel string
	Transition
}

// TunnelSnapshot is one tunnel's statistics.
type TunnelSnapshot struct {
	Target Target
	Snapshot
}

// Interval bounds and default.
const (
	DefaultInterval = 100 * time.Millisecond
	MinInterval     = 20 * time.Millisecond
	MaxInterval     = 10 * time.Second
)

// Config configures a Prober; zero fields take the defaults.
type Config struct {
	Interval  time.Duration // between requests, per tunnel; default 100 ms, within [20 ms, 10 s]
	Port      uint16        // reflector port for targets without one; default 7402
	LocalPort uint16        // source port; default 0 (ephemeral), see the package doc
	Stats     StatsConfig   // Stats.Timeout defaults to TimeoutFor(Interval)
	Listen    ListenFunc    // default ListenUDP
	Log       *slog.Logger  // nil discards
	Events    int           // buffer of the Events channel; default 64
	// Gate, if set, is asked before every request: false skips it (no
	// request, no statistics). The agent closes the gate of a tunnel
	// whose IPsec SA is not installed yet on the end that must not
	// trigger IKE (see agent.Tracker). Called from the tunnel's goroutine;
	// must be fast and safe for concurrent use.
	Gate func(tunnel string) bool
}

// ErrConfig is wrapped by configuration and target errors.
var ErrConfig = errors.New("probe: invalid configuration")

// Prober probes a set of tunnels, one socket and one sender goroutine plus
// one reader goroutine per tunnel, all owned by Run.
//
// Concurrency: mu guards tunnels (the desired set, replaced by Apply);
// each tunnel's stats are guarded by its own mu, taken after p.mu when
// both are held. Events are sent while holding the tunnel's mu, so one
// tunnel's events are in order; the send never blocks: when the channel
// is full the event is dropped and counted (Snapshot still has the state).
type Prober struct {
	cfg    Config
	log    *slog.Logger
	epoch  time.Time
	events chan Event
	kick   chan struct{} // cap 1: the desired set changed
	active atomic.Bool   // Run is running

	droppedEvents atomic.Uint64

	mu      sync.Mutex
	tunnels map[string]*tunnel
}

type tunnel struct {
	target  Target
	session uint64
	seq     uint64 // last sequence sent; only the tunnel's sender touches it

	mu    sync.Mutex
	stats *Stats
}

// NewProber validates cfg and returns a Prober with no targets.
func NewProber(cfg Config) (*Prober, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Interval < MinInterval || cfg.Interval > MaxInterval {
		return nil, fmt.Errorf("%w: interval %v outside [%v, %v]", ErrConfig, cfg.Interval, MinInterval, MaxInterval)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Stats.Timeout == 0 {
		cfg.Stats.Timeout = TimeoutFor(cfg.Interval)
	}
	if cfg.Stats.Interval == 0 {
		cfg.Stats.Interval = cfg.Interval
	}
	cfg.Stats = cfg.Stats.withDefaults()
	if cfg.Listen == nil {
		cfg.Listen = ListenUDP
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Events <= 0 {
		cfg.Events = 64
	}
	return &Prober{
		cfg: cfg, log: cfg.Log, epoch: time.Now(),
		events: make(chan Event, cfg.Events), kick: make(chan struct{}, 1),
		tunnels: map[string]*tunnel{},
	}, nil
}

// Events delivers liveness transitions as they are detected. It is never
// closed. A tunnel removed by Apply may still deliver an event until Run
// has stopped its goroutines.
func (p *Prober) Events() <-chan Event { return p.events }

// DroppedEvents is the number of events dropped because Events was full.
func (p *Prober) DroppedEvents() uint64 { return p.droppedEvents.Load() }

// Apply sets the tunnels to probe. It is idempotent: a target identical to
// one already probed keeps its statistics and socket; a changed target
// (same tunnel, other addresses) starts afresh; tunnels not listed stop.
// On error nothing changes.
func (p *Prober) Apply(targets []Target) error {
	next := make(map[string]Target, len(targets))
	for _, t := range targets {
		if t.Remote.Port() == 0 {
			t.Remote = netip.AddrPortFrom(t.Remote.Addr(), p.cfg.Port)
		}
		switch {
		case t.Tunnel == "":
			return fmt.Errorf("%w: target without a tunnel id", ErrConfig)
		case !t.Local.IsValid() || !t.Remote.Addr().IsValid():
			return fmt.Errorf("%w: tunnel %q: invalid address", ErrConfig, t.Tunnel)
		case t.Local.Unmap().Is4() != t.Remote.Addr().Unmap().Is4():
			return fmt.Errorf("%w: tunnel %q: %v and %v are of different families", ErrConfig, t.Tunnel, t.Local, t.Remote)
		}
		if _, dup := next[t.Tunnel]; dup {
			return fmt.Errorf("%w: tunnel %q listed twice", ErrConfig, t.Tunnel)
		}
		next[t.Tunnel] = t
	}
	p.mu.Lock()
	for id, old := range p.tunnels {
		if t, ok := next[id]; !ok || t != old.target {
			delete(p.tunnels, id)
		}
	}
	for id, t := range next {
		if p.tunnels[id] == nil {
			p.tunnels[id] = &tunnel{target: t, session: rand.Uint64(), stats: NewStats(p.cfg.Stats)}
		}
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return nil
}

// Snapshot returns every tunnel's statistics, sorted by tunnel id.
func (p *Prober) Snapshot() []TunnelSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]TunnelSnapshot, 0, len(p.tunnels))
	for _, t := range p.tunnels {
		t.mu.Lock()
		out = append(out, TunnelSnapshot{Target: t.target, Snapshot: t.stats.Snapshot()})
		t.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b TunnelSnapshot) int { return cmp.Compare(a.Target.Tunnel, b.Target.Tunnel) })
	return out
}

// Run probes the tunnels set by Apply until ctx ends, then stops every
// tunnel's goroutines, waits for them and returns nil. Only one Run may
// be active at a time.
func (p *Prober) Run(ctx context.Context) error {
	if !p.active.CompareAndSwap(false, true) {
		return errors.New("probe: Prober.Run already running")
	}
	defer p.active.Store(false)
	type worker struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	running := map[*tunnel]worker{}
	stop := func(t *tunnel, w worker) {
		w.cancel()
		<-w.done
		delete(running, t)
	}
	defer func() {
		for t, w := range running {
			stop(t, w)
		}
	}()
	for {
		p.mu.Lock()
		want := make(map[*tunnel]bool, len(p.tunnels))
		for _, t := range p.tunnels {
			want[t] = true
		}
		p.mu.Unlock()
		for t, w := range running {
			if !want[t] {
				stop(t, w)
			}
		}
		for t := range want {
			if _, ok := running[t]; !ok {
				wctx, cancel := context.WithCancel(ctx)
				w := worker{cancel: cancel, done: make(chan struct{})}
				running[t] = w
				go func() {
					defer close(w.done)
					p.runTunnel(wctx, t)
				}()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
		}
	}
}

// runTunnel opens the tunnel's socket (retrying while the address is not
// there yet), then sends a request every interval until ctx ends; a reader
// goroutine, ended before runTunnel returns, matches the replies.
func (p *Prober) runTunnel(ctx context.Context, t *tunnel) {
	log := p.log.With("tunnel", t.target.Tunnel, "local", t.target.Local.String(), "remote", t.target.Remote.String())
	local := netip.AddrPortFrom(t.target.Local, p.cfg.LocalPort)
	var conn PacketConn
	for {
		var err error
		if conn, err = p.cfg.Listen(ctx, local); err == nil {
			break
		}
		log.Warn("probe socket not opened, retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(p.cfg.Interval, time.Second)):
		}
	}
	stop := closeOnDone(ctx, conn)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		p.readReplies(t, conn, log)
	}()
	defer func() { stop(); <-readerDone }()

	remote := net.UDPAddrFromAddrPort(t.target.Remote)
	ticker := time.NewTicker(p.cfg.Interval)
	defer ticker.Stop()
	buf := make([]byte, 0, PacketLen)
	for {
		if p.cfg.Gate != nil && !p.cfg.Gate(t.target.Tunnel) {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				continue
			}
		}
		now := time.Now()
		t.seq++
		t.mu.Lock()
		tr, ok := t.stats.Sent(t.seq, now)
		p.emit(t, tr, ok, log)
		t.mu.Unlock()
		b, _ := Packet{Type: TypeRequest, Session: t.session, Seq: t.seq, SenderTx: int64(now.Sub(p.epoch))}.Marshal(buf[:0])
		if _, err := conn.WriteTo(b, remote); err != nil && ctx.Err() == nil {
			log.Debug("probe request not sent", "seq", t.seq, "err", err) // counted lost on timeout
		}
		// Half way to the next request, check the clock once more: the
		// silence rule then fires at most half an interval late instead
		// of a whole one (25 ms sooner on average at 100 ms).
		half := time.NewTimer(p.cfg.Interval / 2)
		select {
		case <-ctx.Done():
			half.Stop()
			return
		case <-half.C:
			t.mu.Lock()
			tr, ok := t.stats.Tick(time.Now())
			p.emit(t, tr, ok, log)
			t.mu.Unlock()
		case <-ticker.C:
			half.Stop()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// readReplies matches replies to t's requests until conn is closed.
func (p *Prober) readReplies(t *tunnel, conn PacketConn, log *slog.Logger) {
	buf := make([]byte, 2*PacketLen)
	for {
		n, from, err := conn.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !errors.Is(err, net.ErrClosed) {
				log.Warn("probe socket read failed", "err", err)
			}
			return
		}
		reply, err := Unmarshal(buf[:n])
		switch {
		case err != nil:
		case reply.Type != TypeReply:
			err = ErrType
		case reply.Session != t.session:
			err = errors.New("other session")
		case addrPort(from) != netip.AddrPortFrom(t.target.Remote.Addr().Unmap(), t.target.Remote.Port()):
			err = errors.New("unexpected source")
		}
		if err != nil {
			log.Debug("probe packet ignored", "from", from.String(), "err", err)
			continue
		}
		t.mu.Lock()
		tr, ok := t.stats.Received(reply.Seq, now, time.Duration(reply.ReflectTx-reply.ReflectRx))
		p.emit(t, tr, ok, log)
		t.mu.Unlock()
	}
}

// emit sends a transition without blocking; called with t.mu held.
func (p *Prober) emit(t *tunnel, tr Transition, ok bool, log *slog.Logger) {
	if !ok {
		return
	}
	log.Info("tunnel liveness changed", "from", tr.From.String(), "to", tr.To.String())
	select {
	case p.events <- Event{Tunnel: t.target.Tunnel, Transition: tr}:
	default:
		p.droppedEvents.Add(1)
		log.Warn("probe event dropped: channel full", "to", tr.To.String())
	}
}

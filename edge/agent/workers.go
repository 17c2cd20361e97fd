package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/meshwan/meshwan/edge/backoff"
	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/plan"
)

// slot is a newest-wins mailbox of capacity one: put replaces an unread
// value and never blocks. Every input of the owner and of its workers is
// one, so a slow reader sees the newest state, never a queue of stale
// ones, and a writer is never held up by a reader.
type slot[T any] struct{ c chan T }

func newSlot[T any]() slot[T] { return slot[T]{c: make(chan T, 1)} }

func (s slot[T]) put(v T) {
	for {
		select {
		case s.c <- v:
			return
		default:
		}
		select {
		case <-s.c:
		default:
		}
	}
}

// retryPolicy is the retry policy of the owner's steps and of the
// workers: kernel and daemon calls that failed are tried again soon, then
// less often.
var retryPolicy = backoff.Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}

// saGoneWait bounds how long the IPsec worker waits for a retiring
// tunnel's SAs to leave the kernel before it reports the tunnel gone
// anyway (charon deletes them within milliseconds of the unload).
const saGoneWait = 5 * time.Second

// serve is a worker's loop until ctx ends: apply the newest input from in,
// retry a failed apply with retryPolicy (a newer input replaces the one
// being retried), and query status after every successful apply and
// every statusEvery.
func serve[T any](ctx context.Context, log *slog.Logger, what string, in slot[T], statusEvery time.Duration, apply func(T) error, status func()) {
	var cur T
	have := false
	bo := retryPolicy.New()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	statusT := time.NewTicker(statusEvery)
	defer statusT.Stop()
	try := func() {
		err := apply(cur)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d := bo.Next()
			log.Error(what+" apply failed, will retry", "err", err, "retry_in", d)
			retry.Reset(d)
			return
		}
		bo.Reset()
		retry.Stop()
		status()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case cur = <-in.c:
			have = true
			try()
		case <-retry.C:
			if have {
				try()
			}
		case <-statusT.C:
			if have {
				status()
			}
		}
	}
}

// ipsecInput is what the owner hands the IPsec worker.
type ipsecInput struct {
	gen     uint64
	desired dataplane.Desired
	// retiring are tunnels whose links the plan keeps until the worker
	// reports them gone (unloaded, their SAs out of the kernel).
	retiring []dataplane.Tunnel
}

// ipsecAck is what the IPsec worker publishes after applying an input.
type ipsecAck struct {
	gen  uint64
	err  error
	gone map[string]bool // plan.Key of the input's retiring tunnels that are gone
}

// ipsecWorker applies the IPsec part of the plan (charon over VICI, which
// may take seconds) with retries, and queries charon's status at most
// every statusEvery. It is a goroutine owned by the Owner.
type ipsecWorker struct {
	backend     IPsec
	sas         func() (map[[2]netip.Addr]bool, error)
	log         *slog.Logger
	statusEvery time.Duration
	in          slot[ipsecInput]
	ack         slot[ipsecAck]
	status      slot[[]ipsec.Status]
}

func (w *ipsecWorker) run(ctx context.Context) {
	serve(ctx, w.log, "ipsec", w.in, w.statusEvery, func(in ipsecInput) error {
		err := w.backend.Apply(ctx, in.desired)
		if ctx.Err() != nil {
			return err
		}
		// Retiring tunnels are reported gone even when Apply failed (after
		// the bounded wait): a removed tunnel must not stay up because
		// charon is unreachable.
		w.ack.put(ipsecAck{gen: in.gen, err: err, gone: w.waitGone(ctx, in)})
		return err
	}, func() { w.queryStatus(ctx) })
}

// queryStatus ends surplus SAs (both ends negotiated at once) and
// publishes charon's status.
func (w *ipsecWorker) queryStatus(ctx context.Context) {
	st, err := w.backend.TidyStatus(ctx)
	if err != nil && ctx.Err() == nil {
		w.log.Warn("ipsec status failed", "err", err)
	}
	w.status.put(st)
}

// waitGone waits (at most saGoneWait) until the kernel holds no SA
// between the underlay endpoints of in's retiring tunnels, except pairs a
// held tunnel uses, and returns the retiring tunnels' keys.
func (w *ipsecWorker) waitGone(ctx context.Context, in ipsecInput) map[string]bool {
	if len(in.retiring) == 0 {
		return nil
	}
	pairs := map[[2]netip.Addr]bool{}
	for _, t := range in.retiring {
		pairs[[2]netip.Addr{t.LocalUnderlay, t.RemoteUnderlay}] = true
		pairs[[2]netip.Addr{t.RemoteUnderlay, t.LocalUnderlay}] = true
	}
	for _, t := range in.desired.Tunnels {
		delete(pairs, [2]netip.Addr{t.LocalUnderlay, t.RemoteUnderlay})
		delete(pairs, [2]netip.Addr{t.RemoteUnderlay, t.LocalUnderlay})
	}
	if w.sas != nil && len(pairs) > 0 {
		if err := waitSAsGone(ctx, w.sas, pairs, saGoneWait); err != nil && ctx.Err() == nil {
			w.log.Warn("deleting links whose SAs are still installed", "err", err)
		}
	}
	gone := map[string]bool{}
	for _, t := range in.retiring {
		gone[plan.Key(t)] = true
	}
	return gone
}

// waitSAsGone polls list until it holds none of pairs, for at most max.
// Polling: the SAs leave when charon processes the unload, and there is
// no cheaper event to await than a dump of a handful of states.
func waitSAsGone(ctx context.Context, list func() (map[[2]netip.Addr]bool, error), pairs map[[2]netip.Addr]bool, max time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		sas, err := list()
		if err != nil {
			return err
		}
		var left []string
		for p := range pairs {
			if sas[p] {
				left = append(left, p[0].String()+">"+p[1].String())
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			slices.Sort(left)
			return fmt.Errorf("SAs %s still installed after %v: %w", strings.Join(left, ", "), max, ctx.Err())
		case <-tick.C:
		}
	}
}

// bgpInput is what the owner hands the BGP worker: nil plan means static
// routing (no speaker).
type bgpInput struct {
	gen  uint64
	plan *plan.BGP
}

type bgpAck struct {
	gen uint64
	err error
}

// bgpWorker runs the embedded BGP speaker: starts it when the plan asks
// for BGP (re-starts it when the ASN changes), applies the neighbors and
// originated prefixes with retries, stops it when routing turns static,
// and queries its status at most every statusEvery. The speaker
// publishes its RIB straight into the owner's slot (OnRIB). Invariant:
// the worker never stops the speaker when the process exits (ctx ends):
// an agent restart must look like a BGP graceful restart (peers keep our
// routes, the next process adopts the kernel routes it finds), and Stop
// would send a Cease that makes peers withdraw at once.
type bgpWorker struct {
	start       StartBGP
	log         *slog.Logger
	statusEvery time.Duration
	in          slot[bgpInput]
	ack         slot[bgpAck]
	status      slot[[]dataplane.BGPPeer]
	rib         slot[*bgp.RIB]

	// restarting is set by the owner before run starts (see BGPStart).
	restarting bool
	speaker    Speaker
	asn        uint32
}

func (w *bgpWorker) run(ctx context.Context) {
	// No Stop when ctx ends: see the invariant.
	serve(ctx, w.log, "bgp", w.in, w.statusEvery, func(in bgpInput) error {
		err := w.apply(ctx, in.plan)
		if ctx.Err() == nil {
			w.ack.put(bgpAck{gen: in.gen, err: err})
		}
		return err
	}, func() { w.queryStatus(ctx) })
}

func (w *bgpWorker) apply(ctx context.Context, p *plan.BGP) error {
	if p == nil || (w.speaker != nil && w.asn != p.ASN) {
		if w.speaker != nil {
			w.speaker.Stop() // routing switched to static (or a new ASN): withdraw for real
			w.speaker = nil
			w.rib.put(nil)
		}
		if p == nil {
			return nil
		}
	}
	if p.Err != nil {
		return p.Err
	}
	if w.speaker == nil {
		if w.start == nil {
			return fmt.Errorf("routing: the controller asks for BGP but this agent runs without it")
		}
		s, err := w.start(ctx, BGPStart{ASN: p.ASN, RouterID: p.RouterID, Restarting: w.restarting, OnRIB: func(r bgp.RIB) { w.rib.put(&r) }})
		if err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
		w.speaker, w.asn = s, p.ASN
	}
	return w.speaker.Apply(ctx, p.Desired)
}

func (w *bgpWorker) queryStatus(ctx context.Context) {
	if w.speaker == nil {
		w.status.put(nil)
		return
	}
	ps, err := w.speaker.Status(ctx)
	if err != nil && ctx.Err() == nil {
		w.log.Warn("bgp status failed", "err", err)
	}
	out := make([]dataplane.BGPPeer, 0, len(ps))
	for _, p := range ps {
		out = append(out, dataplane.BGPPeer{Neighbor: p.Addr.String(), ASN: p.ASN, TunnelID: p.Description, State: p.State,
			Received: p.Received, Accepted: p.Accepted, Advertised: p.Advertised})
	}
	w.status.put(out)
}

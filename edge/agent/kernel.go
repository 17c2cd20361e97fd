package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/firewall"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/steer"
	"github.com/meshwan/meshwan/edge/syncer"
)

// Kernel is the real data plane: nftables, GRE links and strongSwan,
// applied in that order. The firewall goes first so the permits, the SNAT
// exemption and the GRE guard (no GRE to a peer leaves without IPsec) exist
// before a tunnel carries its first packet. Links go before IPsec on
// purpose: the lab showed that loading the connection (trap policy plus
// immediate initiation) before the link exists lets the link's first
// packets trigger a second, concurrent negotiation and duplicate SAs; with
// the link first, those packets meet the guard and are dropped instead.
type Kernel struct {
	Firewall *firewall.Manager
	Link     *link.Manager
	IPsec    *ipsec.Manager
	// Routing runs BGP when the desired state asks for it (nil: never).
	Routing *Routing
	// Steer programs the SLA steering plan (nil: traffic classes are
	// refused).
	Steer *steer.Kernel
	// SAs lists the kernel's ESP SAs as (source, destination) pairs
	// (ipsec.KernelSAs); Apply waits on it until a retiring link's SAs are
	// gone (nil: no wait).
	SAs func() (map[[2]netip.Addr]bool, error)
	// Log receives a warning when a retiring link's SAs outlive the wait.
	Log *slog.Logger

	// mu guards view, the last path decisions, and is held around every
	// use of them (link routes, BGP exclusions, steering): every Apply
	// routes by them, so a drift-repairing resync never puts a route back
	// over a tunnel the probes took out. It is never held across the slow
	// backends (firewall, IPsec over VICI, the BGP speaker's Apply): a
	// failover must not wait for a resync's IKE work.
	mu   sync.Mutex
	view PathView
	// steerClean: the last steering Apply had no classes and succeeded,
	// so the kernel holds no steering state and need not be read again
	// until classes appear (a resync then touches no nftables table it
	// does not need).
	steerClean bool
}

var _ Dataplane = (*Kernel)(nil)

// Apply applies every backend; one failing does not stop the others (each
// converges independently), and all errors are returned joined.
func (k *Kernel) Apply(ctx context.Context, d dataplane.Desired) error {
	var errs []error
	if err := k.Firewall.Apply(ctx, d); err != nil {
		errs = append(errs, fmt.Errorf("firewall: %w", err))
	}
	if err := k.retire(ctx, d); err != nil {
		errs = append(errs, err)
	}
	k.mu.Lock()
	ld := k.linkDesired(d)
	err := errors.Join(k.Link.Apply(ctx, ld), k.Link.ApplyStaticRoutes(ctx, ld))
	k.mu.Unlock()
	if err != nil {
		errs = append(errs, fmt.Errorf("links: %w", err))
	}
	if err := k.IPsec.Apply(ctx, d); err != nil {
		errs = append(errs, fmt.Errorf("ipsec: %w", err))
	}
	if k.Routing != nil {
		if err := k.Routing.Apply(ctx, d); err != nil {
			errs = append(errs, fmt.Errorf("routing: %w", err))
		}
	} else if d.BGP {
		errs = append(errs, errors.New("routing: the controller asks for BGP but this agent runs without it"))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.applySteer(ctx, d); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// saGoneWait bounds how long retire waits for a retiring link's SAs to
// leave the kernel (charon deletes them within milliseconds of the
// terminate; the emulated lab needs far less than this).
const saGoneWait = 5 * time.Second

// retire takes IPsec down for the links the link manager is about to
// delete (tunnels removed, or links re-created with other endpoints) and
// waits until the kernel holds none of their SAs, so no ESP packet is
// being decrypted into a GRE link while it is deleted (device teardown
// against the deferred transport-mode reinjection is a known class of
// kernel races, e.g. CVE-2026-31663). The IPsec Apply here gets only the
// tunnels whose links stay, so it unloads the retiring connections and
// terminates their IKE_SAs, and loads nothing new: a new tunnel's
// connection still waits for its link (see Kernel), and a re-created
// one is loaded again by Apply's IPsec step. Failures are returned but
// do not stop the link step: a removed tunnel must not stay up because
// charon is unreachable.
func (k *Kernel) retire(ctx context.Context, d dataplane.Desired) error {
	ret, present, err := k.Link.Retiring(d)
	if err != nil {
		return fmt.Errorf("links: %w", err)
	}
	if len(ret) == 0 {
		return nil
	}
	keep := d
	keep.Tunnels = slices.DeleteFunc(slices.Clone(d.Tunnels), func(t dataplane.Tunnel) bool { return !present[t.LinkName] })
	var errs []error
	if err := k.IPsec.Apply(ctx, keep); err != nil {
		errs = append(errs, fmt.Errorf("ipsec (retiring links): %w", err))
	}
	k.waitRetired(ctx, ret, keep.Tunnels)
	return errors.Join(errs...)
}

// waitRetired waits (bounded by saGoneWait) until the kernel holds no SA
// between the endpoints of any of ret, except pairs a kept tunnel uses; a
// timeout is logged, not returned.
func (k *Kernel) waitRetired(ctx context.Context, ret []link.Retiring, kept []dataplane.Tunnel) {
	pairs := map[[2]netip.Addr]bool{}
	for _, r := range ret {
		if r.Local.IsValid() && r.Remote.IsValid() {
			pairs[[2]netip.Addr{r.Local, r.Remote}] = true
			pairs[[2]netip.Addr{r.Remote, r.Local}] = true
		}
	}
	for _, t := range kept {
		delete(pairs, [2]netip.Addr{t.LocalUnderlay, t.RemoteUnderlay})
		delete(pairs, [2]netip.Addr{t.RemoteUnderlay, t.LocalUnderlay})
	}
	if k.SAs == nil || len(pairs) == 0 {
		return
	}
	if err := waitSAsGone(ctx, k.SAs, pairs, saGoneWait); err != nil && k.Log != nil {
		k.Log.Warn("deleting links whose SAs are still installed", "err", err)
	}
}

// waitSAsGone polls list until it holds none of pairs, for at most max.
// Polling: the SAs leave when charon processes the terminate, and there
// is no cheaper event to await than a dump of a handful of states.
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

// linkDesired is what the link manager gets: with BGP the routes come
// from the speaker, so the links get no static routes (the ones from an
// earlier static state are removed); without, the static routes over
// tunnels the probes declared unusable are left out (RoutedDesired).
func (k *Kernel) linkDesired(d dataplane.Desired) dataplane.Desired {
	if !d.BGP {
		return RoutedDesired(d, k.view)
	}
	ld := d
	ld.Tunnels = slices.Clone(d.Tunnels)
	for i := range ld.Tunnels {
		ld.Tunnels[i].RemoteLANs = nil
	}
	return ld
}

func (k *Kernel) applySteer(ctx context.Context, d dataplane.Desired) error {
	if k.Steer == nil {
		if len(d.Paths.Classes) > 0 && !d.Paths.Disabled {
			return errNoSteer
		}
		return nil
	}
	none := len(d.Paths.Classes) == 0 || d.Paths.Disabled
	if none && k.steerClean {
		return nil
	}
	if err := k.Steer.Apply(ctx, d.Paths.Classes, k.view.Plan); err != nil {
		k.steerClean = false
		return fmt.Errorf("steering: %w", err)
	}
	k.steerClean = none
	return nil
}

// ApplyPaths applies the probes' decisions: the static routes over
// unusable tunnels go from the main table (BGP routes are not written
// here: the BGP speaker publishes its RIB and the new owner, not yet
// wired, writes them), the steering plan is programmed, and the view is kept for
// later Applies. Only routes and steering change; links, IPsec and the
// firewall are left to Apply. (The probes may see a new desired version
// before Apply has run for it: when ApplyPaths still went through the
// link manager's full Apply, that deleted removed tunnels' links ahead of
// retire, under live ESP, and could create a new link before the firewall
// had its guard.)
func (k *Kernel) ApplyPaths(ctx context.Context, d dataplane.Desired, v PathView) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.view = v
	var errs []error
	if !d.BGP {
		if err := k.Link.ApplyStaticRoutes(ctx, k.linkDesired(d)); err != nil {
			errs = append(errs, fmt.Errorf("links: %w", err))
		}
	}
	if err := k.applySteer(ctx, d); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Status merges link and IPsec status per tunnel. A tunnel is up when its
// link is up and a child SA is installed; otherwise down, with the reason.
func (k *Kernel) Status(ctx context.Context, d dataplane.Desired) ([]syncer.TunnelStatus, error) {
	links, lerr := k.Link.Status(ctx)
	sas, ierr := k.IPsec.Status(ctx)
	byLink := map[string]link.Status{}
	for _, s := range links {
		byLink[s.TunnelID] = s
	}
	bySA := map[string]ipsec.Status{}
	for _, s := range sas {
		bySA[s.TunnelID] = s
	}
	out := make([]syncer.TunnelStatus, 0, len(d.Tunnels))
	for _, t := range d.Tunnels {
		l, sa := byLink[t.ID], bySA[t.ID]
		ts := syncer.TunnelStatus{ID: t.ID, LinkUp: l.Present && l.Up, IKEState: string(sa.IKEState), ChildState: string(sa.ChildState),
			BytesIn: l.RxBytes, BytesOut: l.TxBytes, PacketsIn: l.RxPackets, PacketsOut: l.TxPackets, PSKSerial: sa.PSKSerial}
		var why []string
		if !ts.LinkUp {
			why = append(why, "GRE link "+t.LinkName+" missing or down")
		}
		if sa.ChildState != ipsec.ChildInstalled {
			why = append(why, fmt.Sprintf("no installed child SA (IKE %q, child %q)", sa.IKEState, sa.ChildState))
		}
		ts.State = "up"
		if len(why) > 0 {
			ts.State, ts.Detail = "down", strings.Join(why, "; ")
		}
		out = append(out, ts)
	}
	return out, errors.Join(lerr, ierr)
}

// BGPStatus reports the BGP sessions.
func (k *Kernel) BGPStatus(ctx context.Context) ([]syncer.BGPPeer, error) {
	if k.Routing == nil {
		return nil, nil
	}
	return k.Routing.Status(ctx)
}

// Cleanup removes everything meshwan created, IPsec first so no SA is left
// pointing at a deleted link.
func (k *Kernel) Cleanup(ctx context.Context) error {
	var steerErr error
	if k.Steer != nil {
		steerErr = k.Steer.Cleanup(ctx)
	}
	ipsecErr := k.IPsec.Cleanup(ctx)
	// As in retire: the links go only once their SAs have left the kernel.
	if ret, _, err := k.Link.Retiring(dataplane.Desired{}); err == nil {
		k.waitRetired(ctx, ret, nil)
	}
	return errors.Join(steerErr, ipsecErr, k.Link.Cleanup(ctx), k.Firewall.Cleanup(ctx))
}

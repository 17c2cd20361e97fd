// Package network is the controller's Go API over the network intent: the
// verbs the admin API exposes (sites, topology, tunnels) and the desired
// state of each edge. It validates every change against the whole intent
// before writing (so bad input leaves the store unchanged), commits it with
// a compare-and-swap on the intent revision, and then reconciles tunnels:
// each tunnel the topology asks for gets a /30 and a sealed PSK, each tunnel
// it no longer asks for is removed with its /30 released. Tunnels are keyed
// by their ends, so a change elsewhere never moves an existing tunnel's /30
// or PSK.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// ErrRetry is returned when an intent change kept losing races.
var ErrRetry = errors.New("too much concurrent change, try again")

// Config holds what a Network needs.
type Config struct {
	Store      *store.Store
	TunnelPool ipam.Pool30
	ASNs       ipam.ASNRange
	Sealer     *secrets.Sealer
	Logger     *slog.Logger
	// EdgeKey names the store key of a site's enrollment record, deleted
	// with the site so its certificate stops working.
	EdgeKey func(site string) string
}

// Network is the intent API.
type Network struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	tuns  *ipam.Allocator
	asns  *ipam.Allocator
	recMu sync.Mutex // one reconcile at a time in this process
	now   func() time.Time
}

// New returns a Network.
func New(cfg Config) *Network {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Network{
		cfg:  cfg,
		st:   cfg.Store,
		log:  log,
		tuns: ipam.NewAllocator(cfg.Store, tunnelIPAM, cfg.TunnelPool.Size()),
		asns: ipam.NewAllocator(cfg.Store, asnIPAM, cfg.ASNs.Size()),
		now:  time.Now,
	}
}

// Snapshot reads the whole network at one revision.
func (n *Network) Snapshot(ctx context.Context) (*Snapshot, error) { return n.snapshot(ctx) }

// maxIntentAttempts bounds the optimistic-concurrency retries of one change.
const maxIntentAttempts = 20

// change runs one intent change: fn validates the proposed intent against
// a fresh snapshot and returns the writes; they commit only if no other
// intent change happened since the snapshot. asnFor, when set, asks for an
// ASN from the pool to be reserved in the same transaction.
func (n *Network) change(ctx context.Context, fn func(s *Snapshot) (changeOps, error)) error {
	for range maxIntentAttempts {
		snap, err := n.snapshot(ctx)
		if err != nil {
			return err
		}
		c, err := fn(snap)
		if err != nil {
			return err
		}
		guard := []store.Cmp{store.Unchanged(intentRev, snap.intentRev)}
		ops := append(c.ops, store.Put(intentRev, []byte(strconv.FormatInt(snap.Revision, 10))))
		if c.allocASNFor == "" {
			ok, _, err := n.st.Txn(ctx, guard, ops)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
		} else {
			_, err := n.asns.Allocate(ctx, c.allocASNFor, func(i int) ([]store.Cmp, []store.Op) {
				site := c.site
				site.ASN = n.cfg.ASNs.First + uint32(i)
				raw, _ := json.Marshal(site)
				return guard, append(slices.Clone(ops), store.Put(sitesDir+site.Name, raw))
			})
			if errors.Is(err, ipam.ErrGuardFailed) {
				continue
			}
			if err != nil {
				return err
			}
		}
		return n.Reconcile(ctx)
	}
	return ErrRetry
}

type changeOps struct {
	ops []store.Op
	// allocASNFor names the site whose ASN must be taken from the pool in
	// the same transaction; site is then written by the allocation.
	allocASNFor string
	site        intent.Site
}

// checkCapacity refuses an intent whose tunnels would not fit the pool.
func (n *Network) checkCapacity(sites []intent.Site, t intent.Topology) error {
	need := len(topology.Derive(sites, t))
	if need > n.cfg.TunnelPool.Size() {
		return fmt.Errorf("%w: tunnel pool %s holds %d /30s but this change needs %d tunnels (use a larger --tunnel-pool)",
			ipam.ErrExhausted, n.cfg.TunnelPool.Prefix(), n.cfg.TunnelPool.Size(), need)
	}
	return nil
}

func (n *Network) checkIntent(s *Snapshot, sites []intent.Site, t intent.Topology) error {
	if err := intent.CheckSites(sites, n.cfg.TunnelPool.Prefix()); err != nil {
		return err
	}
	if err := t.Validate(sites); err != nil {
		return err
	}
	return n.checkCapacity(sites, t)
}

func asnKey(r ipam.ASNRange, asn uint32) string {
	return asnIPAM + strconv.Itoa(int(asn-r.First))
}

// CreateSite adds a site; its ASN is allocated from the pool unless given.
func (n *Network) CreateSite(ctx context.Context, site intent.Site) (intent.Site, error) {
	if err := site.Validate(); err != nil {
		return intent.Site{}, err
	}
	err := n.change(ctx, func(s *Snapshot) (changeOps, error) {
		if _, ok := s.Sites[site.Name]; ok {
			return changeOps{}, fmt.Errorf("%w: site.name: a site named %q already exists", intent.ErrExists, site.Name)
		}
		sites := append(s.SiteList(), site)
		if err := n.checkIntent(s, sites, s.rawTopology); err != nil {
			return changeOps{}, err
		}
		if site.ASN == 0 {
			return changeOps{allocASNFor: site.Name, site: site}, nil
		}
		raw, _ := json.Marshal(site)
		ops := []store.Op{store.Put(sitesDir+site.Name, raw)}
		if n.cfg.ASNs.Contains(site.ASN) {
			ops = append(ops, store.Put(asnKey(n.cfg.ASNs, site.ASN), []byte(site.Name)))
		}
		return changeOps{ops: ops}, nil
	})
	if err != nil {
		return intent.Site{}, err
	}
	return n.GetSite(ctx, site.Name)
}

// UpdateSite replaces a site's definition. The ASN cannot change (BGP
// sessions are keyed on it); 0 keeps the current one.
func (n *Network) UpdateSite(ctx context.Context, site intent.Site) (intent.Site, error) {
	if err := site.Validate(); err != nil {
		return intent.Site{}, err
	}
	err := n.change(ctx, func(s *Snapshot) (changeOps, error) {
		old, ok := s.Sites[site.Name]
		if !ok {
			return changeOps{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, site.Name)
		}
		if site.ASN == 0 {
			site.ASN = old.ASN
		}
		if site.ASN != old.ASN {
			return changeOps{}, fmt.Errorf("%w: site.asn: cannot change from %d to %d; delete and re-create the site to renumber", intent.ErrPrecondition, old.ASN, site.ASN)
		}
		sites := s.SiteList()
		for i := range sites {
			if sites[i].Name == site.Name {
				sites[i] = site
			}
		}
		if err := n.checkIntent(s, sites, s.rawTopology); err != nil {
			return changeOps{}, err
		}
		raw, _ := json.Marshal(site)
		return changeOps{ops: []store.Op{store.Put(sitesDir+site.Name, raw)}}, nil
	})
	if err != nil {
		return intent.Site{}, err
	}
	return n.GetSite(ctx, site.Name)
}

// DeleteSite removes a site, its ASN reservation, its enrollment (its edge
// certificate stops working) and, through reconciliation, its tunnels.
func (n *Network) DeleteSite(ctx context.Context, name string) error {
	return n.change(ctx, func(s *Snapshot) (changeOps, error) {
		old, ok := s.Sites[name]
		if !ok {
			return changeOps{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, name)
		}
		sites := slices.DeleteFunc(s.SiteList(), func(x intent.Site) bool { return x.Name == name })
		if s.rawTopology.Mode == intent.ModeHubAndSpoke && old.Hub() && !slices.ContainsFunc(sites, intent.Site.Hub) {
			return changeOps{}, fmt.Errorf("%w: site %q is the last hub of a hub-and-spoke topology; add another hub or change the topology first", intent.ErrPrecondition, name)
		}
		ops := []store.Op{store.Delete(sitesDir + name), store.Delete(observedDir + name)}
		if n.cfg.ASNs.Contains(old.ASN) {
			ops = append(ops, store.Delete(asnKey(n.cfg.ASNs, old.ASN)))
		}
		if n.cfg.EdgeKey != nil {
			ops = append(ops, store.Delete(n.cfg.EdgeKey(name)))
		}
		return changeOps{ops: ops}, nil
	})
}

// GetSite returns one site.
func (n *Network) GetSite(ctx context.Context, name string) (intent.Site, error) {
	kv, ok, err := n.st.Get(ctx, sitesDir+name)
	if err != nil {
		return intent.Site{}, err
	}
	if !ok {
		return intent.Site{}, fmt.Errorf("%w: site %q", intent.ErrNotFound, name)
	}
	var s intent.Site
	if err := json.Unmarshal(kv.Value, &s); err != nil {
		return intent.Site{}, fmt.Errorf("stored site %s: %w", name, err)
	}
	return s, nil
}

// SiteExists reports whether a site exists.
func (n *Network) SiteExists(ctx context.Context, name string) (bool, error) {
	_, err := n.GetSite(ctx, name)
	if errors.Is(err, intent.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ListSites returns every site, sorted by name.
func (n *Network) ListSites(ctx context.Context) ([]intent.Site, error) {
	kvs, _, err := n.st.List(ctx, sitesDir, 0)
	if err != nil {
		return nil, err
	}
	out := make([]intent.Site, 0, len(kvs))
	for _, kv := range kvs {
		var s intent.Site
		if err := json.Unmarshal(kv.Value, &s); err != nil {
			return nil, fmt.Errorf("stored site %s: %w", kv.Key, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// GetTopology returns the topology with defaults filled in.
func (n *Network) GetTopology(ctx context.Context) (intent.Topology, error) {
	kv, ok, err := n.st.Get(ctx, topologyKey)
	if err != nil || !ok {
		return intent.Topology{}.WithDefaults(), err
	}
	var t intent.Topology
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return intent.Topology{}, fmt.Errorf("stored topology: %w", err)
	}
	return t.WithDefaults(), nil
}

// SetTopology replaces the topology.
func (n *Network) SetTopology(ctx context.Context, t intent.Topology) (intent.Topology, error) {
	err := n.change(ctx, func(s *Snapshot) (changeOps, error) {
		if err := n.checkIntent(s, s.SiteList(), t); err != nil {
			return changeOps{}, err
		}
		raw, _ := json.Marshal(t)
		return changeOps{ops: []store.Op{store.Put(topologyKey, raw)}}, nil
	})
	if err != nil {
		return intent.Topology{}, err
	}
	return n.GetTopology(ctx)
}

// ListTunnels returns the tunnels (all, or those with an end at site),
// sorted by id.
func (n *Network) ListTunnels(ctx context.Context, site string) ([]TunnelView, error) {
	snap, err := n.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if site != "" {
		if _, ok := snap.Sites[site]; !ok {
			return nil, fmt.Errorf("%w: site %q", intent.ErrNotFound, site)
		}
	}
	var out []TunnelView
	for _, t := range snap.Tunnels {
		if site == "" || t.A.Site == site || t.B.Site == site {
			out = append(out, snap.view(t))
		}
	}
	slices.SortFunc(out, func(a, b TunnelView) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// GetTunnel returns one tunnel.
func (n *Network) GetTunnel(ctx context.Context, id string) (TunnelView, error) {
	snap, err := n.snapshot(ctx)
	if err != nil {
		return TunnelView{}, err
	}
	t, ok := snap.Tunnels[id]
	if !ok {
		return TunnelView{}, fmt.Errorf("%w: tunnel %q", intent.ErrNotFound, id)
	}
	return snap.view(t), nil
}

// TunnelView is a tunnel with its ends resolved against the sites. It
// carries no PSK.
type TunnelView struct {
	Tunnel
	AEnd, BEnd EndView
}

// EndView is one resolved end.
type EndView struct {
	topology.End
	Underlay netip.Addr // invalid while a dynamic address is unknown
	Inner    netip.Prefix
	ASN      uint32
}

func (s *Snapshot) view(t Tunnel) TunnelView {
	return TunnelView{
		Tunnel: t,
		AEnd:   EndView{End: t.A, Underlay: s.Underlay(t.A), Inner: t.AInner(), ASN: s.Sites[t.A.Site].ASN},
		BEnd:   EndView{End: t.B, Underlay: s.Underlay(t.B), Inner: t.BInner(), ASN: s.Sites[t.B.Site].ASN},
	}
}

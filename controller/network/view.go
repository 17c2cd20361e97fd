package network

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// view is this process's copy of the network keyspace (intent, tunnels,
// observed addresses), loaded once and then kept current by one etcd watch
// on the whole root, so every hot path (a reconnecting edge's state, an
// intent change's validation, a push) reads memory instead of decoding the
// keyspace. It also keeps the indexes those paths need: tunnels per site,
// the hubs, and every tunnel's PSK opened once.
//
// Invariants: snap.Revision only grows; everything in snap is as of
// snap.Revision; bySite[s] holds exactly the ids of the stored tunnels
// with an end at s; byKey[k] holds exactly the ids of the stored tunnels
// whose unordered pair of ends is k (one, except after a race between
// replicas of different versions; see topology.Winner); psk holds the
// opened PSK of every stored tunnel.
// Readers hold mu.RLock for the duration of their use of snap and must not
// keep references into it past that (read copies what it returns).
type view struct {
	n *Network

	mu     sync.RWMutex
	snap   Snapshot
	bySite map[string]map[string]struct{}
	byKey  map[string][]string
	hubs   map[string]struct{}
	psk    map[string][]byte
	// tunIdx and asnIdx are the taken /30 and ASN pool indexes, so that
	// an allocation finds free ones without scanning the pool.
	tunIdx, asnIdx indexSet
	// unready (hub-and-spoke only) holds the spokes whose stored tunnels
	// are not exactly those the intent derives for them (a reconcile is
	// pending), kept for the sites each batch touches: a hub's readiness
	// then costs a look at this set and at the hub pairs, not a
	// derivation of its thousands of links (see ready).
	unready map[string]bool
	// auditGen counts the changes Audit depends on (sites, the topology,
	// observed addresses); audit caches Audit's answer for one count.
	auditGen uint64
	audit    auditCache
	// advanced is closed (and replaced) whenever snap.Revision grows.
	advanced  chan struct{}
	listeners []*Listener
	err       error // a stored value that could not be decoded, kept for Err
}

// Dirty says what changed in one or more applied batches: the input of
// incremental work (reconcile, desired-state push).
type Dirty struct {
	Revision int64
	// All: the topology changed or the view was reloaded; treat every
	// site as changed.
	All bool
	// Sites whose record or observed addresses changed (created, updated
	// or deleted): their own state and their peers' tunnels to them.
	Sites map[string]bool
	// Intent is the subset of Sites whose intent record changed (what the
	// reconcile loop acts on).
	Intent map[string]bool
	// Hubs: a site that is or was a hub changed.
	Hubs bool
	// Tunnels created, changed or deleted, with their two end sites.
	Tunnels map[string][2]string
}

func (d *Dirty) merge(o Dirty) {
	d.Revision = max(d.Revision, o.Revision)
	d.All = d.All || o.All
	d.Hubs = d.Hubs || o.Hubs
	if d.Sites == nil {
		d.Sites = map[string]bool{}
	}
	if d.Intent == nil {
		d.Intent = map[string]bool{}
	}
	if d.Tunnels == nil {
		d.Tunnels = map[string][2]string{}
	}
	maps.Copy(d.Sites, o.Sites)
	maps.Copy(d.Intent, o.Intent)
	maps.Copy(d.Tunnels, o.Tunnels)
}

func (d Dirty) empty() bool {
	return !d.All && !d.Hubs && len(d.Sites) == 0 && len(d.Intent) == 0 && len(d.Tunnels) == 0
}

// Listener receives the view's changes, merged while it is busy: it never
// blocks the watch and never misses a change.
type Listener struct {
	mu      sync.Mutex
	pending Dirty
	c       chan struct{}
}

// C is signalled when Take has something.
func (l *Listener) C() <-chan struct{} { return l.c }

// Take returns (and clears) what changed since the last Take.
func (l *Listener) Take() Dirty {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.pending
	l.pending = Dirty{}
	return d
}

func (l *Listener) add(d Dirty) {
	l.mu.Lock()
	l.pending.merge(d)
	l.mu.Unlock()
	select {
	case l.c <- struct{}{}:
	default:
	}
}

// Poke hands d back to the listener (a failed attempt to retry later).
func (l *Listener) Poke(d Dirty) { l.add(d) }

// Listen registers a listener; it first hears nothing until the next
// change (callers read the view once after Listen).
func (n *Network) Listen() *Listener {
	l := &Listener{c: make(chan struct{}, 1)}
	n.v.mu.Lock()
	n.v.listeners = append(n.v.listeners, l)
	n.v.mu.Unlock()
	return l
}

// Start loads the view and keeps it current until ctx ends. Every other
// method needs it.
func (n *Network) Start(ctx context.Context) error {
	if err := n.v.load(ctx); err != nil {
		return err
	}
	n.v.mu.RLock()
	rev := n.v.snap.Revision
	n.v.mu.RUnlock()
	batches := n.st.WatchFrom(ctx, "", rev)
	n.wg.Go(func() {
		for b := range batches {
			if b.Reset {
				if err := n.v.load(ctx); err != nil && ctx.Err() == nil {
					n.log.Error("reloading the network view after compaction failed", "err", err)
				}
				continue
			}
			n.v.apply(b)
		}
	})
	return nil
}

// Wait blocks until the background goroutines Start began have ended
// (after its ctx ended).
func (n *Network) Wait() { n.wg.Wait() }

func newView(n *Network) *view {
	return &view{n: n, advanced: make(chan struct{})}
}

func emptySnapshot() Snapshot {
	return Snapshot{Sites: map[string]intent.Site{}, Tunnels: map[string]Tunnel{}, Observed: map[string]map[string]netip.Addr{}, siteRevs: map[string]int64{}}
}

// load (re)reads the whole keyspace at one revision and replaces the view.
func (v *view) load(ctx context.Context) error {
	snap := emptySnapshot()
	var kvs []store.KV
	for _, prefix := range WatchPrefixes {
		part, rev, err := v.n.st.List(ctx, prefix, snap.Revision)
		if err != nil {
			return err
		}
		snap.Revision = rev
		kvs = append(kvs, part...)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.snap = snap
	v.auditGen++
	v.bySite = map[string]map[string]struct{}{}
	v.byKey = map[string][]string{}
	v.hubs = map[string]struct{}{}
	v.psk = map[string][]byte{}
	v.tunIdx, v.asnIdx = newIndexSet(), newIndexSet()
	var d Dirty
	for _, kv := range kvs {
		if err := v.put(kv.Key, kv.Value, kv.ModRevision, &d); err != nil {
			return err
		}
	}
	v.snap.Topology = v.snap.rawTopology.WithDefaults()
	v.recheck(Dirty{All: true})
	v.advance()
	for _, l := range v.listeners {
		l.add(Dirty{Revision: snap.Revision, All: true})
	}
	return nil
}

// apply folds one watch batch into the view.
func (v *view) apply(b store.Batch) {
	d := Dirty{Revision: b.Revision, Sites: map[string]bool{}, Intent: map[string]bool{}, Tunnels: map[string][2]string{}}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ev := range b.Events {
		var err error
		if ev.Deleted {
			v.del(ev.Key, &d)
		} else {
			err = v.put(ev.Key, ev.Value, ev.ModRevision, &d)
		}
		if err != nil {
			v.err = err
			v.n.log.Error("undecodable value in the store; ignored", "key", ev.Key, "err", err)
		}
	}
	if b.Revision > v.snap.Revision {
		v.snap.Revision = b.Revision
	}
	v.recheck(d)
	v.advance()
	if d.empty() {
		return
	}
	for _, l := range v.listeners {
		l.add(d)
	}
}

func (v *view) advance() {
	close(v.advanced)
	v.advanced = make(chan struct{})
}

// put applies one stored key. d may be nil (initial load).
func (v *view) put(key string, value []byte, modRev int64, d *Dirty) error {
	s := &v.snap
	switch {
	case strings.HasPrefix(key, sitesDir):
		var site intent.Site
		if err := json.Unmarshal(value, &site); err != nil {
			return fmt.Errorf("stored site %s: %w", key, err)
		}
		old, had := s.Sites[site.Name]
		if had {
			v.asn(old, false)
		}
		v.asn(site, true)
		s.Sites[site.Name] = site
		s.siteRevs[site.Name] = modRev
		v.auditGen++
		if site.Hub() {
			v.hubs[site.Name] = struct{}{}
		} else {
			delete(v.hubs, site.Name)
		}
		d.site(site.Name, true, site.Hub() || (had && old.Hub()))
	case key == topologyKey:
		var t intent.Topology
		if err := json.Unmarshal(value, &t); err != nil {
			return fmt.Errorf("stored topology: %w", err)
		}
		s.rawTopology = t
		s.Topology = t.WithDefaults()
		v.auditGen++
		d.All = true
	case key == intentRev:
		s.intentRev = modRev
	case strings.HasPrefix(key, tunnelsDir):
		var t Tunnel
		if err := json.Unmarshal(value, &t); err != nil {
			return fmt.Errorf("stored tunnel %s: %w", key, err)
		}
		t.modRev = modRev
		psk, err := v.n.cfg.Sealer.Open(t.SealedPSK, pskContext(t.ID))
		if err != nil {
			return fmt.Errorf("stored tunnel %s: PSK: %w", key, err)
		}
		if old, ok := s.Tunnels[t.ID]; ok {
			v.tunIdx.remove(old.Index)
			v.indexKey(old, false)
		}
		s.Tunnels[t.ID] = t
		v.tunIdx.add(t.Index)
		v.psk[t.ID] = psk
		v.index(t.A.Site, t.ID, true)
		v.index(t.B.Site, t.ID, true)
		v.indexKey(t, true)
		d.tunnel(t)
	case strings.HasPrefix(key, observedDir):
		var m map[string]netip.Addr
		if err := json.Unmarshal(value, &m); err != nil {
			return fmt.Errorf("stored observed addresses %s: %w", key, err)
		}
		site := strings.TrimPrefix(key, observedDir)
		s.Observed[site] = m
		v.auditGen++
		d.site(site, false, false)
	}
	return nil
}

func (v *view) del(key string, d *Dirty) {
	s := &v.snap
	switch {
	case strings.HasPrefix(key, sitesDir):
		name := strings.TrimPrefix(key, sitesDir)
		old, had := s.Sites[name]
		if had {
			v.asn(old, false)
		}
		delete(s.Sites, name)
		delete(s.siteRevs, name)
		v.auditGen++
		delete(v.hubs, name)
		d.site(name, true, had && old.Hub())
	case key == topologyKey:
		s.rawTopology = intent.Topology{}
		s.Topology = s.rawTopology.WithDefaults()
		v.auditGen++
		d.All = true
	case key == intentRev:
		s.intentRev = 0
	case strings.HasPrefix(key, tunnelsDir):
		id := strings.TrimPrefix(key, tunnelsDir)
		t, ok := s.Tunnels[id]
		if !ok {
			return
		}
		delete(s.Tunnels, id)
		v.tunIdx.remove(t.Index)
		delete(v.psk, id)
		v.index(t.A.Site, id, false)
		v.index(t.B.Site, id, false)
		v.indexKey(t, false)
		d.tunnel(t)
	case strings.HasPrefix(key, observedDir):
		site := strings.TrimPrefix(key, observedDir)
		delete(s.Observed, site)
		v.auditGen++
		d.site(site, false, false)
	}
}

func (d *Dirty) site(name string, intentRecord, hub bool) {
	if d == nil || d.Sites == nil {
		return
	}
	d.Sites[name] = true
	if intentRecord {
		d.Intent[name] = true
	}
	d.Hubs = d.Hubs || hub
}

func (d *Dirty) tunnel(t Tunnel) {
	if d == nil || d.Tunnels == nil {
		return
	}
	d.Tunnels[t.ID] = [2]string{t.A.Site, t.B.Site}
}

func (v *view) index(site, id string, add bool) {
	ids := v.bySite[site]
	if add {
		if ids == nil {
			ids = map[string]struct{}{}
			v.bySite[site] = ids
		}
		ids[id] = struct{}{}
		return
	}
	delete(ids, id)
	if len(ids) == 0 {
		delete(v.bySite, site)
	}
}

// indexKey adds t to (or removes it from) byKey.
func (v *view) indexKey(t Tunnel, add bool) {
	k := t.Key()
	ids := slices.DeleteFunc(v.byKey[k], func(id string) bool { return id == t.ID })
	if add {
		ids = append(ids, t.ID)
	}
	if len(ids) == 0 {
		delete(v.byKey, k)
		return
	}
	v.byKey[k] = ids
}

// stored returns the id of the stored tunnel with the pair of ends key,
// the winner when there are two (topology.Winner). Called with mu held.
func (v *view) stored(key string) (string, bool) {
	ids := v.byKey[key]
	if len(ids) == 0 {
		return "", false
	}
	keep := ids[0]
	for _, id := range ids[1:] {
		keep, _ = topology.Winner(keep, id)
	}
	return keep, true
}

// WaitRevision blocks until this process's view has applied store
// revision rev (read-your-writes for a write made outside Network).
func (n *Network) WaitRevision(ctx context.Context, rev int64) error { return n.v.waitRev(ctx, rev) }

// waitRev blocks until the view has applied revision rev.
func (v *view) waitRev(ctx context.Context, rev int64) error {
	for {
		v.mu.RLock()
		cur, ch := v.snap.Revision, v.advanced
		v.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the network view to reach revision %d (at %d): %w", rev, cur, ctx.Err())
		case <-ch:
		}
	}
}

// copySnapshot returns a deep copy of the view (its maps; values are
// never mutated in place).
func (v *view) copySnapshot() *Snapshot {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s := v.snap
	s.Sites = maps.Clone(s.Sites)
	s.Tunnels = maps.Clone(s.Tunnels)
	s.Observed = maps.Clone(s.Observed)
	s.siteRevs = maps.Clone(s.siteRevs)
	return &s
}

// asn records site's ASN as taken (or released) when it is in the pool.
func (v *view) asn(site intent.Site, taken bool) {
	r := v.n.cfg.ASNs
	if !r.Contains(site.ASN) {
		return
	}
	if taken {
		v.asnIdx.add(int(site.ASN - r.First))
	} else {
		v.asnIdx.remove(int(site.ASN - r.First))
	}
}

// indexSet is a set of taken pool indexes with a hint below which every
// index is taken, so that listing the lowest free ones costs about what
// is listed, not the pool's size, while allocation fills the pool densely.
type indexSet struct {
	used map[int]bool
	low  int // every index below low is taken
}

func newIndexSet() indexSet { return indexSet{used: map[int]bool{}} }

func (x *indexSet) add(i int) {
	x.used[i] = true
	for x.used[x.low] {
		x.low++
	}
}

func (x *indexSet) remove(i int) {
	delete(x.used, i)
	x.low = min(x.low, i)
}

func (x *indexSet) has(i int) bool { return x.used[i] }

// free lists up to k free indexes below size, lowest first, skipping
// those skip reports.
func (x *indexSet) free(k, size int, skip func(int) bool) []int {
	out := make([]int, 0, k)
	for i := x.low; i < size && len(out) < k; i++ {
		if !x.used[i] && !skip(i) {
			out = append(out, i)
		}
	}
	return out
}

// recheck updates unready for the spokes d touches. Called with mu held
// for writing.
func (v *view) recheck(d Dirty) {
	s := &v.snap
	if s.Topology.Mode != intent.ModeHubAndSpoke {
		v.unready = map[string]bool{}
		return
	}
	check := func(name string) {
		site, ok := s.Sites[name]
		if !ok || site.Hub() {
			delete(v.unready, name)
			return
		}
		if v.exact(site) {
			delete(v.unready, name)
		} else {
			v.unready[name] = true
		}
	}
	if d.All || d.Hubs || v.unready == nil {
		v.unready = map[string]bool{}
		for name := range s.Sites {
			check(name)
		}
		return
	}
	for name := range d.Intent {
		check(name)
	}
	for _, ends := range d.Tunnels {
		check(ends[0])
		check(ends[1])
	}
}

package network

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/ipam"
	"github.com/meshwan/meshwan/controller/store"
	"github.com/meshwan/meshwan/controller/topology"
)

// Store keys (relative to the store root). intent/rev is the guard every
// intent write compares, which serialises intent changes across replicas
// and makes cross-site validation (overlaps, duplicates) race-free.
const (
	sitesDir    = "intent/sites/"
	topologyKey = "intent/topology"
	intentRev   = "intent/rev"
	tunnelsDir  = "tunnels/"
	observedDir = "edges/observed/"
	tunnelIPAM  = "ipam/tunnel/"
	asnIPAM     = "ipam/asn/"
)

// WatchPrefixes are the key prefixes whose changes can alter any edge's
// desired state.
var WatchPrefixes = []string{"intent/", tunnelsDir, observedDir}

// Tunnel is a stored tunnel: its ends, its /30 and its sealed PSK.
type Tunnel struct {
	ID        string       `json:"id"`
	A         topology.End `json:"a"`
	B         topology.End `json:"b"`
	Index     int          `json:"index"`
	Prefix    netip.Prefix `json:"prefix"`
	CreatedAt time.Time    `json:"created_at"`
	SealedPSK []byte       `json:"sealed_psk"`
	modRev    int64
}

// AInner and BInner are the ends' addresses on the /30.
func (t Tunnel) AInner() netip.Prefix { a, _ := ipam.Ends(t.Prefix); return a }

// BInner is the B end's /30 address.
func (t Tunnel) BInner() netip.Prefix { _, b := ipam.Ends(t.Prefix); return b }

// Snapshot is the whole intent plus allocations, read at one revision.
type Snapshot struct {
	Revision int64
	Sites    map[string]intent.Site
	Topology intent.Topology // with defaults applied
	Tunnels  map[string]Tunnel
	// Observed holds the public addresses edges report for dynamic transports.
	Observed map[string]map[string]netip.Addr

	rawTopology intent.Topology
	intentRev   int64
	siteRevs    map[string]int64
}

// Converged reports whether the stored tunnels are exactly those the
// intent derives, i.e. no reconcile is pending.
func (s *Snapshot) Converged() bool {
	want := topology.Derive(s.SiteList(), s.Topology)
	if len(want) != len(s.Tunnels) {
		return false
	}
	for _, l := range want {
		if _, ok := s.Tunnels[l.ID]; !ok {
			return false
		}
	}
	return true
}

// SiteList returns the sites sorted by name.
func (s *Snapshot) SiteList() []intent.Site {
	out := make([]intent.Site, 0, len(s.Sites))
	for _, v := range s.Sites {
		out = append(out, v)
	}
	intent.SortSites(out)
	return out
}

// Underlay returns the address of a site transport: declared, or observed
// for a dynamic one (invalid when not known yet).
func (s *Snapshot) Underlay(e topology.End) netip.Addr {
	site := s.Sites[e.Site]
	tr, ok := site.Transport(e.Transport)
	if !ok {
		return netip.Addr{}
	}
	if !tr.Dynamic {
		return tr.Addr
	}
	return s.Observed[e.Site][e.Transport]
}

func (n *Network) snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Sites: map[string]intent.Site{}, Tunnels: map[string]Tunnel{}, Observed: map[string]map[string]netip.Addr{}, siteRevs: map[string]int64{}}
	// Read only what the network is made of (not the frequently changing
	// health reports), every prefix at the revision of the first read.
	var kvs []store.KV
	for _, prefix := range WatchPrefixes {
		part, rev, err := n.st.List(ctx, prefix, snap.Revision)
		if err != nil {
			return nil, err
		}
		snap.Revision = rev
		kvs = append(kvs, part...)
	}
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, sitesDir):
			var s intent.Site
			if err := json.Unmarshal(kv.Value, &s); err != nil {
				return nil, fmt.Errorf("stored site %s: %w", kv.Key, err)
			}
			snap.Sites[s.Name] = s
			snap.siteRevs[s.Name] = kv.ModRevision
		case kv.Key == topologyKey:
			if err := json.Unmarshal(kv.Value, &snap.rawTopology); err != nil {
				return nil, fmt.Errorf("stored topology: %w", err)
			}
		case kv.Key == intentRev:
			snap.intentRev = kv.ModRevision
		case strings.HasPrefix(kv.Key, tunnelsDir):
			var t Tunnel
			if err := json.Unmarshal(kv.Value, &t); err != nil {
				return nil, fmt.Errorf("stored tunnel %s: %w", kv.Key, err)
			}
			t.modRev = kv.ModRevision
			snap.Tunnels[t.ID] = t
		case strings.HasPrefix(kv.Key, observedDir):
			var m map[string]netip.Addr
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				return nil, fmt.Errorf("stored observed addresses %s: %w", kv.Key, err)
			}
			snap.Observed[strings.TrimPrefix(kv.Key, observedDir)] = m
		}
	}
	snap.Topology = snap.rawTopology.WithDefaults()
	return snap, nil
}

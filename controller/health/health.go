// Package health owns what edges report about themselves. The latest report
// of a connected edge lives in etcd under a lease held by the controller
// serving that edge's Sync stream: the lease is renewed on every report and
// revoked when the stream ends, and it expires on its own if the controller
// dies, so an edge that falls silent shows as down without anybody having
// to notice. Reports are written only when their content changes; renewals
// do not write.
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

const (
	liveDir = "health/live/"
	seenDir = "health/seen/"
	// LeaseTTL is how long a report outlives the last sign of its edge.
	LeaseTTL = 15 * time.Second
)

// TunnelStatus is one tunnel as its edge reports it.
type TunnelStatus struct {
	TunnelID   string `json:"tunnel_id"`
	State      string `json:"state"` // up, degraded, down
	LinkUp     bool   `json:"link_up"`
	IKEState   string `json:"ike_state,omitempty"`
	ChildState string `json:"child_state,omitempty"`
	BytesIn    uint64 `json:"bytes_in,omitempty"`
	BytesOut   uint64 `json:"bytes_out,omitempty"`
	PacketsIn  uint64 `json:"packets_in,omitempty"`
	PacketsOut uint64 `json:"packets_out,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

// BGPPeer is one BGP session as its edge reports it.
type BGPPeer struct {
	Neighbor   string `json:"neighbor"`
	ASN        uint32 `json:"asn"`
	TunnelID   string `json:"tunnel_id,omitempty"`
	State      string `json:"state"`
	Received   uint64 `json:"received,omitempty"`
	Accepted   uint64 `json:"accepted,omitempty"`
	Advertised uint64 `json:"advertised,omitempty"`
}

// Report is an edge's latest status.
type Report struct {
	Site           string         `json:"site"`
	AgentVersion   string         `json:"agent_version"`
	AppliedVersion int64          `json:"applied_version"`
	Tunnels        []TunnelStatus `json:"tunnels"`
	BGPPeers       []BGPPeer      `json:"bgp_peers,omitempty"`
	UpdatedAt      time.Time      `json:"updated_at"`
}

// Seen is the non-expiring record of an edge's last connection.
type Seen struct {
	AgentVersion string    `json:"agent_version"`
	ConnectedAt  time.Time `json:"connected_at"`
	LastSeen     time.Time `json:"last_seen"`
}

// State of a site's edge.
type State string

const (
	NeverSeen State = "never_seen"
	Up        State = "up"
	Down      State = "down"
)

// Status combines the live report and the seen record.
type Status struct {
	State    State
	Report   Report // zero unless Up
	LastSeen time.Time
	Agent    string
}

// Registry reads and writes edge status.
type Registry struct {
	st  *store.Store
	now func() time.Time
}

// New returns a Registry.
func New(st *store.Store) *Registry { return &Registry{st: st, now: time.Now} }

// Session is one connected edge's reporting session; it owns a lease.
type Session struct {
	r     *Registry
	site  string
	lease int64
	mu    sync.Mutex
	last  []byte // last written report, without UpdatedAt
	seen  Seen
}

// Connect starts a session for site: it grants the lease and records the
// connection.
func (r *Registry) Connect(ctx context.Context, site, agentVersion string) (*Session, error) {
	lease, err := r.st.Grant(ctx, LeaseTTL)
	if err != nil {
		return nil, err
	}
	now := r.now().UTC()
	s := &Session{r: r, site: site, lease: lease, seen: Seen{AgentVersion: agentVersion, ConnectedAt: now, LastSeen: now}}
	raw, _ := json.Marshal(s.seen)
	if _, _, err := r.st.Txn(ctx, nil, []store.Op{store.Put(seenDir+site, raw)}); err != nil {
		return nil, err
	}
	// An empty live report marks the edge up straight away.
	if err := s.Report(ctx, Report{AgentVersion: agentVersion}); err != nil {
		return nil, err
	}
	return s, nil
}

// Report records a status report: it renews the lease and writes the
// report only when it differs from the last one written.
func (s *Session) Report(ctx context.Context, rep Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep.Site = s.site
	if rep.AgentVersion == "" {
		rep.AgentVersion = s.seen.AgentVersion
	}
	rep.UpdatedAt = time.Time{}
	cmpRaw, _ := json.Marshal(rep)
	if string(cmpRaw) == string(s.last) {
		return s.r.st.KeepAlive(ctx, s.lease)
	}
	rep.UpdatedAt = s.r.now().UTC()
	raw, _ := json.Marshal(rep)
	if _, _, err := s.r.st.Txn(ctx, nil, []store.Op{store.PutWithLease(liveDir+s.site, raw, s.lease)}); err != nil {
		return fmt.Errorf("store report of %s: %w", s.site, err)
	}
	s.last = cmpRaw
	return nil
}

// Close ends the session: the edge shows as down at once.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen.LastSeen = s.r.now().UTC()
	raw, _ := json.Marshal(s.seen)
	_, _, err := s.r.st.Txn(ctx, nil, []store.Op{store.Put(seenDir+s.site, raw)})
	if rerr := s.r.st.Revoke(ctx, s.lease); err == nil {
		err = rerr
	}
	return err
}

// All returns the status of every site that has one (never-seen sites are
// absent from the map).
func (r *Registry) All(ctx context.Context) (map[string]Status, error) {
	kvs, _, err := r.st.List(ctx, "health/", 0)
	if err != nil {
		return nil, err
	}
	out := map[string]Status{}
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, liveDir):
			var rep Report
			if err := json.Unmarshal(kv.Value, &rep); err != nil {
				return nil, fmt.Errorf("stored report %s: %w", kv.Key, err)
			}
			st := out[rep.Site]
			st.State, st.Report, st.Agent, st.LastSeen = Up, rep, rep.AgentVersion, rep.UpdatedAt
			out[rep.Site] = st
		case strings.HasPrefix(kv.Key, seenDir):
			site := strings.TrimPrefix(kv.Key, seenDir)
			var seen Seen
			if err := json.Unmarshal(kv.Value, &seen); err != nil {
				return nil, fmt.Errorf("stored seen %s: %w", kv.Key, err)
			}
			st := out[site]
			if st.State != Up {
				st.State, st.Agent, st.LastSeen = Down, seen.AgentVersion, seen.LastSeen
			}
			out[site] = st
		}
	}
	return out, nil
}

// Get returns one site's status.
func (r *Registry) Get(ctx context.Context, site string) (Status, error) {
	all, err := r.All(ctx)
	if err != nil {
		return Status{}, err
	}
	st, ok := all[site]
	if !ok {
		return Status{State: NeverSeen}, nil
	}
	return st, nil
}

// Forget removes a deleted site's status.
func (r *Registry) Forget(ctx context.Context, site string) error {
	_, _, err := r.st.Txn(ctx, nil, []store.Op{store.Delete(liveDir + site), store.Delete(seenDir + site)})
	return err
}

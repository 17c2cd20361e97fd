package health

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/meshwan/meshwan/controller/store"
)

// cache is this process's copy of the health keys in etcd (every
// replica's reports and seen records), so that All and Get decode a
// stored record once per change instead of on every call. Run fills it
// with one read and keeps it current with one watch; this process's own
// writes go in at once as well (write-through), so that a read right
// after a write of this process sees it, whatever the watch's delay.
//
// Invariant: an entry only ever moves to a higher mod revision, whichever
// path (load, watch, write-through) brings it. A delete leaves a
// tombstone with its revision, so a put the watch delivers late cannot
// bring a deleted key back. Tombstones go when a reload does not need
// them any more.
//
// Records are decoded lazily, at most once per revision, and only when a
// read needs them: most reports of this process's sessions are answered
// from memory and are never decoded.
type cache struct {
	mu     sync.Mutex
	loaded bool              // Run has read the keys at least once
	live   map[string]*entry // by site
	seen   map[string]*entry // by site
}

type entry struct {
	rev     int64
	deleted bool // a tombstone: deleted at rev
	raw     []byte
	rep     *Report // raw decoded, once needed
	seen    *Seen
}

func newCache() *cache {
	return &cache{live: map[string]*entry{}, seen: map[string]*entry{}}
}

// split returns whether key is a report (else a seen record) and its site;
// ok is false for any other key.
func split(key string) (isLive bool, site string, ok bool) {
	if site, ok := strings.CutPrefix(key, liveDir); ok {
		return true, site, true
	}
	if site, ok := strings.CutPrefix(key, seenDir); ok {
		return false, site, true
	}
	return false, "", false
}

func (c *cache) dir(isLive bool) map[string]*entry {
	if isLive {
		return c.live
	}
	return c.seen
}

// setLocked records key's value (or its deletion) at rev unless the entry
// is already as new.
func (c *cache) setLocked(key string, raw []byte, deleted bool, rev int64) {
	isLive, site, ok := split(key)
	if !ok {
		return
	}
	m := c.dir(isLive)
	if e, ok := m[site]; ok && e.rev >= rev {
		return
	}
	m[site] = &entry{rev: rev, raw: raw, deleted: deleted}
}

// put and del are the write-through of this process's own writes; rev is
// the revision the write made.
func (c *cache) put(key string, raw []byte, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(key, raw, false, rev)
}

func (c *cache) del(key string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(key, nil, true, rev)
}

// load replaces the copy with a full read at rev, keeping what is newer
// than the read (write-through that overtook it) and the decoded form of
// what did not change.
func (c *cache) load(kvs []store.KV, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := map[bool]map[string]*entry{true: c.live, false: c.seen}
	c.live, c.seen = map[string]*entry{}, map[string]*entry{}
	for _, kv := range kvs {
		isLive, site, ok := split(kv.Key)
		if !ok {
			continue
		}
		if e := old[isLive][site]; e != nil && e.rev == kv.ModRevision && !e.deleted {
			c.dir(isLive)[site] = e
			continue
		}
		c.dir(isLive)[site] = &entry{rev: kv.ModRevision, raw: kv.Value}
	}
	for isLive, m := range old {
		cur := c.dir(isLive)
		for site, e := range m {
			if e.rev > rev && (cur[site] == nil || cur[site].rev < e.rev) {
				cur[site] = e
			}
		}
	}
	c.loaded = true
}

// apply records the changes the watch delivered.
func (c *cache) apply(evs []store.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range evs {
		c.setLocked(ev.Key, ev.Value, ev.Deleted, ev.ModRevision)
	}
}

func (c *cache) ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loaded
}

func (e *entry) report(site string) (Report, error) {
	if e.rep == nil {
		var rep Report
		if err := json.Unmarshal(e.raw, &rep); err != nil {
			return Report{}, fmt.Errorf("stored report %s%s: %w", liveDir, site, err)
		}
		e.rep = &rep
	}
	return *e.rep, nil
}

func (e *entry) seenRecord(site string) (Seen, error) {
	if e.seen == nil {
		var s Seen
		if err := json.Unmarshal(e.raw, &s); err != nil {
			return Seen{}, fmt.Errorf("stored seen %s%s: %w", seenDir, site, err)
		}
		e.seen = &s
	}
	return *e.seen, nil
}

// fill adds to out the status etcd holds for every site that out does not
// already show as up.
func (c *cache) fill(out map[string]Status) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for site, e := range c.live {
		if e.deleted || out[site].State == Up {
			continue
		}
		rep, err := e.report(site)
		if err != nil {
			return err
		}
		out[site] = upStatus(Status{}, rep)
	}
	for site, e := range c.seen {
		if e.deleted || out[site].State == Up {
			continue
		}
		seen, err := e.seenRecord(site)
		if err != nil {
			return err
		}
		out[site] = downStatus(seen)
	}
	return nil
}

// status is etcd's status of one site.
func (c *cache) status(site string) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.live[site]; ok && !e.deleted {
		rep, err := e.report(site)
		if err != nil {
			return Status{}, err
		}
		return upStatus(Status{}, rep), nil
	}
	if e, ok := c.seen[site]; ok && !e.deleted {
		seen, err := e.seenRecord(site)
		if err != nil {
			return Status{}, err
		}
		return downStatus(seen), nil
	}
	return Status{State: NeverSeen}, nil
}

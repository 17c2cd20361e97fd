package network

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/secrets"
	"github.com/meshwan/meshwan/controller/store"
)

// Key rotation, make-before-break. A tunnel's record moves through three
// key sets, each with its own serial (every step adds one):
//
//	staged:    both ends authenticate with the old key and also accept the new
//	committed: both ends authenticate with the new key and also accept the old;
//	           the initiating end re-authenticates its IKE_SA with the new key
//	done (""): both ends use and accept only the new key
//
// A step is taken only when BOTH ends have reported (TunnelStatus.psk_serial)
// that they loaded the current serial: while an end still holds the
// previous set, every key it may use is accepted by the other end, so no
// IKE exchange fails at any moment and established SAs are never touched.
// A rotation that does not progress is never forced: it stays in its phase
// (the rotation driver warns about it).
//
// Every step is a compare-and-swap on the tunnel record's mod revision, so
// several replicas advancing at once take each step exactly once, and the
// state lives in etcd, so a restarted controller resumes where it was. A
// tunnel deleted mid-rotation simply disappears: its CAS fails and the
// retry no longer finds it.
const (
	RotationStaged    = "staged"
	RotationCommitted = "committed"
)

// rotateBatch bounds one rotation transaction (one guard and one put per
// tunnel) well under etcd's default of 128 operations.
const rotateBatch = 40

// acceptContext binds a sealed accept-only key to its tunnel and slot, so
// it cannot be swapped with the primary key's ciphertext.
func acceptContext(id string) string { return tunnelsDir + id + "#accept" }

func (n *Network) openAccept(t Tunnel) ([]byte, error) {
	return n.cfg.Sealer.Open(t.SealedAcceptPSK, acceptContext(t.ID))
}

// RotationSelector names the tunnels of a rotation request: exactly one of
// IDs, Site and All.
type RotationSelector struct {
	IDs  []string
	Site string
	All  bool
}

// RotateTunnelKeys starts a rotation of the selected tunnels' keys and
// returns the ids whose rotation started (sorted); tunnels already rotating
// are skipped. by says who asked (audit log; never a key). Unknown ids or
// site: NotFound, and nothing starts.
func (n *Network) RotateTunnelKeys(ctx context.Context, sel RotationSelector, by string) ([]string, error) {
	set := 0
	if len(sel.IDs) > 0 {
		set++
	}
	if sel.Site != "" {
		set++
	}
	if sel.All {
		set++
	}
	if set != 1 {
		return nil, fmt.Errorf("%w: rotate: exactly one of tunnel_ids, site and all must be set", intent.ErrInvalid)
	}
	var ids []string
	var err error
	n.Read(func(s *Snapshot) {
		switch {
		case sel.All:
			for id := range s.Tunnels {
				ids = append(ids, id)
			}
		case sel.Site != "":
			if _, ok := s.Sites[sel.Site]; !ok {
				err = fmt.Errorf("%w: site %q", intent.ErrNotFound, truncate(sel.Site))
				return
			}
			for id := range n.v.bySite[sel.Site] {
				ids = append(ids, id)
			}
		default:
			for i, id := range sel.IDs {
				if _, ok := s.Tunnels[id]; !ok {
					err = fmt.Errorf("%w: tunnel_ids[%d]: tunnel %q", intent.ErrNotFound, i, truncate(id))
					return
				}
				ids = append(ids, id)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return n.startRotations(ctx, ids, by)
}

// truncate bounds user input quoted in an error.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// startRotations stages a new key on every listed tunnel that is not
// rotating already and has no unmanaged end. A tunnel to a third-party
// router is skipped: its end never reports the serial it loaded, so a
// rotation would stay staged forever; its key changes by a new export
// (docs/third-party.md).
func (n *Network) startRotations(ctx context.Context, ids []string, by string) ([]string, error) {
	ids = n.managedOnly(ids, by)
	now := n.now().UTC()
	started, err := n.casTunnels(ctx, ids, func(t Tunnel) (Tunnel, bool) {
		if t.PSKRotation != "" {
			return t, false
		}
		t.PSKSerial = t.Serial() + 1
		t.PSKRotation = RotationStaged
		t.SealedAcceptPSK = n.cfg.Sealer.Seal(secrets.NewPSK(), acceptContext(t.ID))
		t.PhaseSince = now
		return t, true
	})
	for _, id := range started {
		n.log.Info("psk rotation started", "tunnel_id", id, "by", by)
	}
	if len(ids) > 1 {
		n.log.Info("psk rotations requested", "by", by, "requested", len(ids), "started", len(started))
	}
	return started, err
}

// managedOnly drops the tunnels with an unmanaged end from ids (logging
// each one skipped).
func (n *Network) managedOnly(ids []string, by string) []string {
	var skipped []string
	n.Read(func(s *Snapshot) {
		ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool {
			t, ok := s.Tunnels[id]
			if ok && (s.Sites[t.A.Site].Unmanaged || s.Sites[t.B.Site].Unmanaged) {
				skipped = append(skipped, id)
				return true
			}
			return false
		})
	})
	for _, id := range skipped {
		n.log.Info("psk rotation skipped: the tunnel has an unmanaged end", "tunnel_id", id, "by", by)
	}
	return ids
}

// DueForRotation lists up to limit tunnels (oldest key first) whose key is
// older than maxAge and that are not rotating, minus the tunnels rotating
// now: at most limit rotations run at once.
func (n *Network) DueForRotation(maxAge time.Duration, limit int) []string {
	if maxAge <= 0 || limit <= 0 {
		return nil
	}
	type due struct {
		id  string
		age time.Time
	}
	var list []due
	busy := 0
	cutoff := n.now().Add(-maxAge)
	n.Read(func(s *Snapshot) {
		for _, t := range s.Tunnels {
			if t.PSKRotation != "" {
				busy++
				continue
			}
			if s.Sites[t.A.Site].Unmanaged || s.Sites[t.B.Site].Unmanaged {
				continue // see startRotations
			}
			if t.KeyAge().Before(cutoff) {
				list = append(list, due{t.ID, t.KeyAge()})
			}
		}
	})
	slices.SortFunc(list, func(a, b due) int {
		if c := a.age.Compare(b.age); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	out := []string{}
	for _, d := range list[:min(len(list), max(0, limit-busy))] {
		out = append(out, d.id)
	}
	return out
}

// StartDueRotations starts the rotations DueForRotation lists.
func (n *Network) StartDueRotations(ctx context.Context, maxAge time.Duration, limit int) ([]string, error) {
	ids := n.DueForRotation(maxAge, limit)
	if len(ids) == 0 {
		return nil, nil
	}
	return n.startRotations(ctx, ids, "schedule")
}

// LoadedSerials returns, for the tunnels of site, the key serial its edge
// reports having loaded (absent: no report).
type LoadedSerials func(ctx context.Context, site string) (map[string]uint64, error)

// Rotation is one tunnel's rotation in progress.
type Rotation struct {
	TunnelID    string
	Phase       string
	Serial      uint64
	Since       time.Time
	LoadedA     uint64 // serial reported by the A end (0: none)
	LoadedB     uint64
	AEnd, BEnd  string
	AdvancedNow bool // this call took the step
	FinishedNow bool // this call completed the rotation
}

// AdvanceRotations takes the next step of every rotation whose two ends
// have reported the current serial, and returns every rotation that was in
// progress (with the reported serials), sorted by tunnel id.
func (n *Network) AdvanceRotations(ctx context.Context, loaded LoadedSerials) ([]Rotation, error) {
	var rots []Rotation
	n.Read(func(s *Snapshot) {
		for _, t := range s.Tunnels {
			if t.PSKRotation != "" {
				rots = append(rots, Rotation{TunnelID: t.ID, Phase: t.PSKRotation, Serial: t.Serial(), Since: t.PhaseSince, AEnd: t.A.Site, BEnd: t.B.Site})
			}
		}
	})
	if len(rots) == 0 {
		return nil, nil
	}
	slices.SortFunc(rots, func(a, b Rotation) int { return strings.Compare(a.TunnelID, b.TunnelID) })
	reports := map[string]map[string]uint64{}
	get := func(site string) (map[string]uint64, error) {
		if r, ok := reports[site]; ok {
			return r, nil
		}
		r, err := loaded(ctx, site)
		if err != nil {
			return nil, err
		}
		reports[site] = r
		return r, nil
	}
	ready := map[string]uint64{} // tunnel id -> serial both ends loaded
	for i := range rots {
		r := &rots[i]
		a, err := get(r.AEnd)
		if err != nil {
			return rots, err
		}
		b, err := get(r.BEnd)
		if err != nil {
			return rots, err
		}
		r.LoadedA, r.LoadedB = a[r.TunnelID], b[r.TunnelID]
		if r.LoadedA >= r.Serial && r.LoadedB >= r.Serial {
			ready[r.TunnelID] = r.Serial
		}
	}
	if len(ready) == 0 {
		return rots, nil
	}
	ids := make([]string, 0, len(ready))
	for id := range ready {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	now := n.now().UTC()
	var stepErr error
	done, err := n.casTunnels(ctx, ids, func(t Tunnel) (Tunnel, bool) {
		if t.PSKRotation == "" || t.Serial() != ready[t.ID] {
			return t, false // another replica stepped it already
		}
		next, err := n.step(t, now)
		if err != nil {
			stepErr = err
			return t, false
		}
		return next, true
	})
	stepped := map[string]bool{}
	for _, id := range done {
		stepped[id] = true
	}
	for i := range rots {
		r := &rots[i]
		if !stepped[r.TunnelID] {
			continue
		}
		r.AdvancedNow = true
		r.FinishedNow = r.Phase == RotationCommitted
		if r.FinishedNow {
			n.log.Info("psk rotation completed", "tunnel_id", r.TunnelID, "psk_serial", r.Serial+1)
		} else {
			n.log.Info("psk rotation committed", "tunnel_id", r.TunnelID, "psk_serial", r.Serial+1)
		}
	}
	if err == nil {
		err = stepErr
	}
	return rots, err
}

// step returns t's record after its current rotation phase: staged ->
// committed swaps the keys (the new one becomes the primary, the old one
// is still accepted), committed -> done drops the old one.
func (n *Network) step(t Tunnel, now time.Time) (Tunnel, error) {
	switch t.PSKRotation {
	case RotationStaged:
		old, err := n.PSK(t)
		if err != nil {
			return t, fmt.Errorf("tunnel %s: %w", t.ID, err)
		}
		next, err := n.openAccept(t)
		if err != nil {
			return t, fmt.Errorf("tunnel %s: accepted key: %w", t.ID, err)
		}
		t.SealedPSK = n.cfg.Sealer.Seal(next, pskContext(t.ID))
		t.SealedAcceptPSK = n.cfg.Sealer.Seal(old, acceptContext(t.ID))
		t.PSKRotation = RotationCommitted
	case RotationCommitted:
		t.SealedAcceptPSK = nil
		t.PSKRotation = ""
		t.PSKRotatedAt = now
	default:
		return t, fmt.Errorf("tunnel %s: unknown rotation phase %q", t.ID, t.PSKRotation)
	}
	t.PSKSerial = t.Serial() + 1
	t.PhaseSince = now
	return t, nil
}

// casTunnels rewrites the listed tunnels' records with fn (which returns
// false to leave one alone), each put guarded on the record's mod
// revision as the view shows it, in batches. A batch that loses a race is
// recomputed from a view that has seen the winner; a tunnel gone from the
// view is skipped. It returns the ids written, sorted, and returns once
// this process's view shows them.
func (n *Network) casTunnels(ctx context.Context, ids []string, fn func(Tunnel) (Tunnel, bool)) ([]string, error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var written []string
	var lastRev int64
	for start := 0; start < len(ids); start += rotateBatch {
		batch := ids[start:min(start+rotateBatch, len(ids))]
		for attempt := 0; ; attempt++ {
			if attempt >= maxIntentAttempts {
				return written, fmt.Errorf("rotate: %w", ErrRetry)
			}
			var cmps []store.Cmp
			var ops []store.Op
			var mine []string
			n.Read(func(s *Snapshot) {
				for _, id := range batch {
					t, ok := s.Tunnels[id]
					if !ok {
						continue
					}
					next, change := fn(t)
					if !change {
						continue
					}
					raw, _ := json.Marshal(next)
					cmps = append(cmps, store.Unchanged(tunnelsDir+id, t.modRev))
					ops = append(ops, store.Put(tunnelsDir+id, raw))
					mine = append(mine, id)
				}
			})
			if len(ops) == 0 {
				break
			}
			ok, rev, err := n.st.Txn(ctx, cmps, ops)
			if err != nil {
				return written, fmt.Errorf("rotate: %w", err)
			}
			lastRev = max(lastRev, rev)
			if ok {
				written = append(written, mine...)
				break
			}
			if err := n.v.waitRev(ctx, rev); err != nil {
				return written, err
			}
		}
	}
	if lastRev > 0 {
		if err := n.v.waitRev(ctx, lastRev); err != nil {
			return written, err
		}
	}
	return written, nil
}

package ipsec

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Duplicate IKE_SAs. Only the active end of a tunnel initiates, but the
// passive end installs trap policies (its own GRE traffic brings a tunnel
// up, which matters when it restarted: its INITIAL_CONTACT clears the
// active end's stale SAs at once), so both ends can negotiate at the same
// time. Observed with charon 5.9.8 (TestPrivilegedTidyEndsDuplicates):
//   - both IKE_SAs complete and both ends hold both; or
//   - one end, processing the other's IKE_AUTH with INITIAL_CONTACT after
//     its own IKE_SA was established, destroys its own IKE_SA without a
//     DELETE: the other end keeps a stale IKE_SA with an installed
//     CHILD_SA until DPD gives up on it (dpd_delay plus about 165 s of
//     retransmits).
//
// The kernel sends on the newest SA, so traffic flows either way, but the
// status shows two IKE_SAs and every rekey is done twice. The peer sends
// on one CHILD_SA only (its newest), so of two settled IKE_SAs the one
// whose CHILD_SA receives nothing while the other's does is the surplus:
// stale (the peer has no such SA) or unused. Tidy ends it: one DELETE to
// the peer, and the SA destroyed at once (forced: a peer that has no such
// SA never answers, and an unforced delete would be retransmitted for
// minutes with the SA still listed). The active end acts after
// ActiveQuiet of silence; the passive end waits PassiveQuiet, longer, so
// when both ends hold both SAs the active end's choice comes first and
// the passive end then sees one SA left.

// Silence an IKE_SA must show before Tidy ends it (see above).
const (
	ActiveQuiet  = 3 * time.Second
	PassiveQuiet = 30 * time.Second
)

// seenSA is what Tidy remembers of a settled IKE_SA between two looks.
type seenSA struct {
	in      uint64    // packets received, summed over its INSTALLED CHILD_SAs
	changed time.Time // when in last changed, or when the SA was first seen
}

// settled reports whether an IKE_SA is ESTABLISHED (not rekeying, rekeyed
// or deleting) with an INSTALLED CHILD_SA.
func settled(sa ikeSA) bool {
	return sa.state == IKEEstablished && slices.ContainsFunc(sa.children, func(c childSA) bool { return c.state == ChildInstalled })
}

// packetsIn sums the received packets of an IKE_SA's INSTALLED CHILD_SAs
// (a rekeyed CHILD_SA's counters leave the sum; a drop counts as a change).
func packetsIn(sa ikeSA) uint64 {
	var n uint64
	for _, c := range sa.children {
		if c.state == ChildInstalled {
			n += c.packetsIn
		}
	}
	return n
}

// surplus returns the unique ids of the IKE_SAs of one connection to end,
// and what to remember for the next look (settled IKE_SAs only). An
// IKE_SA is ended when it is settled, was seen before with the same
// received-packet count and has been silent for at least quiet, while
// another settled IKE_SA received packets since the previous look. So an
// IKE_SA is never ended without another that carries traffic, and never
// on its first sighting.
func surplus(sas []ikeSA, prev map[string]seenSA, now time.Time, quiet time.Duration) (end []string, seen map[string]seenSA) {
	seen = map[string]seenSA{}
	moved := false
	for _, sa := range sas {
		if !settled(sa) {
			continue
		}
		in := packetsIn(sa)
		p, ok := prev[sa.id]
		switch {
		case !ok:
			seen[sa.id] = seenSA{in: in, changed: now}
		case p.in != in:
			seen[sa.id] = seenSA{in: in, changed: now}
			moved = true
		default:
			seen[sa.id] = p
		}
	}
	if !moved || len(seen) < 2 {
		return nil, seen
	}
	for _, sa := range sas {
		s, ok := seen[sa.id]
		if _, before := prev[sa.id]; ok && before && s.changed.Before(now) && now.Sub(s.changed) >= quiet {
			end = append(end, sa.id)
		}
	}
	return end, seen
}

// Tidy ends surplus IKE_SAs (see surplus) of the tunnels of the last
// Apply: after ActiveQuiet where this end initiates, after PassiveQuiet
// where it does not. Each is ended by a forced terminate (one DELETE,
// not awaited). The IPsec worker runs it with every status query
// (TidyStatus).
func (m *Manager) Tidy(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sas, err := m.listSAs(ctx)
	if err != nil {
		return fmt.Errorf("ipsec tidy: %w", err)
	}
	_, err = m.tidy(ctx, sas)
	return err
}

// tidy is Tidy over one listing; it returns the unique ids it ended, per
// connection name. The caller holds mu.
func (m *Manager) tidy(ctx context.Context, sas map[string][]ikeSA) (map[string]map[string]bool, error) {
	now := m.now()
	seen := map[string]map[string]seenSA{}
	ended := map[string]map[string]bool{}
	var errs []error
	for _, t := range m.last {
		name := ConnName(t.ID)
		quiet := m.activeQuiet
		if t.Passive {
			quiet = m.passiveQuiet
		}
		end, s := surplus(sas[name], m.seen[name], now, quiet)
		seen[name] = s
		for _, id := range end {
			if _, err := m.request(ctx, "terminate", terminateRequest{IKEID: id, Force: true, Timeout: -1, LogLevel: -1}); err != nil {
				errs = append(errs, fmt.Errorf("end surplus IKE_SA %s of %s: %w", id, name, err))
				continue
			}
			if ended[name] == nil {
				ended[name] = map[string]bool{}
			}
			ended[name][id] = true
			m.log.Info("ipsec surplus IKE_SA ended (another IKE_SA of the tunnel carries the traffic)", "conn", name, "ike_id", id)
		}
	}
	m.seen = seen
	if err := errors.Join(errs...); err != nil {
		return ended, fmt.Errorf("ipsec tidy: %w", err)
	}
	return ended, nil
}

package web

import (
	"slices"
	"strings"
	"time"
)

// severity orders tunnel report states, worst last.
func severity(state string) int {
	switch state {
	case TunnelUp:
		return 1
	case TunnelDegraded:
		return 2
	case TunnelDown:
		return 3
	}
	return 0
}

// deriveTunnel sets t's state from what its ends report: the worst report
// wins, and with no report at all it is unknown. IKE and child SA states
// come from the worst report. An end whose edge is not connected adds a
// note but does not by itself make the tunnel down: the other end reports
// that once its dead-peer detection notices, and an edge that is merely
// (re)connecting would otherwise flap the tunnel.
func deriveTunnel(t *Tunnel, sites map[string]Site) {
	var worst *EndReport
	for i := range t.Reports {
		r := &t.Reports[i]
		if severity(r.State) == 0 {
			continue
		}
		if worst == nil || severity(r.State) > severity(worst.State) {
			worst = r
		}
	}
	t.State, t.IKEState, t.ChildState, t.Detail = TunnelUnknown, "", "", ""
	if worst != nil {
		t.State, t.IKEState, t.ChildState, t.Detail = worst.State, worst.IKEState, worst.ChildState, worst.Detail
		if t.Detail != "" && len(t.Reports) > 1 {
			t.Detail = worst.Site + ": " + t.Detail
		}
	}
	for _, end := range []string{t.A.Site, t.B.Site} {
		if sites[end].State == SiteDown {
			note := "edge of " + end + " is not connected"
			if t.Detail != "" {
				note = t.Detail + "; " + note
			}
			t.Detail = note
		}
	}
}

// summarize counts sites and tunnels by state.
func summarize(st *State) {
	var s Summary
	for _, site := range st.Sites {
		switch site.State {
		case SiteUp:
			s.SitesUp++
		case SiteDown:
			s.SitesDown++
		case SiteUnmanaged:
			s.SitesUnmanaged++
		default:
			s.SitesNeverSeen++
		}
		if c := site.Cert; c != nil && (c.ExpiresSoon || c.Expired || c.Revoked) {
			s.CertsExpiringSoon++
		}
	}
	for _, d := range st.Devices {
		if d.State == "pending" {
			s.DevicesPending++
		}
	}
	for _, t := range st.Tunnels {
		switch t.State {
		case TunnelUp:
			s.TunnelsUp++
		case TunnelDegraded:
			s.TunnelsDegraded++
		case TunnelDown:
			s.TunnelsDown++
		default:
			s.TunnelsUnknown++
		}
	}
	st.Summary = s
}

// tracker follows tunnel states across refreshes: it stamps each tunnel's
// last change and turns transitions into events. The first state it sees
// is the baseline: no events, no change times.
type tracker struct {
	primed  bool
	state   map[string]string
	changed map[string]time.Time
	events  []Event
	max     int
}

func newTracker(max int) *tracker {
	return &tracker{state: map[string]string{}, changed: map[string]time.Time{}, max: max}
}

// observe updates the tracker with the derived tunnels of a new state and
// sets their LastChange.
func (tr *tracker) observe(now time.Time, tunnels []Tunnel) {
	seen := make(map[string]bool, len(tunnels))
	for i := range tunnels {
		t := &tunnels[i]
		seen[t.ID] = true
		prev := tr.state[t.ID]
		tr.state[t.ID] = t.State
		if tr.primed && prev != t.State {
			tr.changed[t.ID] = now
			// A tunnel that appears or loses its reports is not news: the
			// topology or edge events say why.
			if t.State != TunnelUnknown {
				tr.add(Event{Time: now, What: transition(t), Level: levelOf(t.State)})
			}
		}
		if ts, ok := tr.changed[t.ID]; ok {
			t.LastChange = &ts
		}
	}
	for id := range tr.state {
		if !seen[id] {
			delete(tr.state, id)
			delete(tr.changed, id)
		}
	}
	tr.primed = true
}

func (tr *tracker) add(ev Event) {
	tr.events = append(tr.events, ev)
	if len(tr.events) > tr.max {
		tr.events = slices.Delete(tr.events, 0, len(tr.events)-tr.max)
	}
}

func transition(t *Tunnel) string {
	var b strings.Builder
	b.WriteString("tunnel " + t.ID + " " + t.State)
	if t.State != TunnelUp && t.Detail != "" {
		b.WriteString(": " + t.Detail)
	}
	return b.String()
}

func levelOf(state string) string {
	switch state {
	case TunnelUp:
		return LevelOK
	case TunnelDegraded:
		return LevelWarn
	case TunnelDown:
		return LevelError
	}
	return LevelInfo
}

// mergeEvents joins the source's events and the derived ones, oldest
// first, keeping the last max.
func mergeEvents(src, derived []Event, max int) []Event {
	out := make([]Event, 0, len(src)+len(derived))
	for _, e := range src {
		if e.Level == "" {
			e.Level = LevelInfo
		}
		out = append(out, e)
	}
	out = append(out, derived...)
	slices.SortStableFunc(out, func(a, b Event) int { return a.Time.Compare(b.Time) })
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

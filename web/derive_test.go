package web

import (
	"testing"
	"time"
)

func TestDeriveTunnel(t *testing.T) {
	up := map[string]Site{"a": {State: SiteUp}, "b": {State: SiteUp}}
	bDown := map[string]Site{"a": {State: SiteUp}, "b": {State: SiteDown}}
	rep := func(site, state string) EndReport {
		return EndReport{Site: site, State: state, IKEState: "ike-" + state, Detail: "why " + state}
	}
	cases := []struct {
		name      string
		reports   []EndReport
		sites     map[string]Site
		want, ike string
	}{
		{"no report", nil, up, TunnelUnknown, ""},
		{"one end up", []EndReport{rep("a", "up")}, up, TunnelUp, "ike-up"},
		{"both up", []EndReport{rep("a", "up"), rep("b", "up")}, up, TunnelUp, "ike-up"},
		{"worst wins", []EndReport{rep("a", "up"), rep("b", "down")}, up, TunnelDown, "ike-down"},
		{"degraded", []EndReport{rep("a", "degraded"), rep("b", "up")}, up, TunnelDegraded, "ike-degraded"},
		{"unreported state ignored", []EndReport{rep("a", ""), rep("b", "up")}, up, TunnelUp, "ike-up"},
		{"silent edge: as the other end says", []EndReport{rep("a", "up")}, bDown, TunnelUp, "ike-up"},
		{"silent edge, no report", nil, bDown, TunnelUnknown, ""},
	}
	for _, tc := range cases {
		tn := Tunnel{ID: "x", A: TunnelEnd{Site: "a"}, B: TunnelEnd{Site: "b"}, Reports: tc.reports}
		deriveTunnel(&tn, tc.sites)
		if tn.State != tc.want || tn.IKEState != tc.ike {
			t.Errorf("%s: state %q ike %q, want %q %q", tc.name, tn.State, tn.IKEState, tc.want, tc.ike)
		}
	}
	tn := Tunnel{A: TunnelEnd{Site: "a"}, B: TunnelEnd{Site: "b"}, Reports: []EndReport{rep("a", "up"), rep("b", "down")}}
	deriveTunnel(&tn, up)
	if tn.Detail != "b: why down" {
		t.Errorf("detail %q, want the reporting end named", tn.Detail)
	}
	tn = Tunnel{A: TunnelEnd{Site: "a"}, B: TunnelEnd{Site: "b"}, Reports: []EndReport{rep("a", "down")}}
	deriveTunnel(&tn, bDown)
	if tn.Detail != "why down; edge of b is not connected" {
		t.Errorf("detail %q, want the silent edge noted", tn.Detail)
	}
}

func TestTrackerEventsAndChangeTimes(t *testing.T) {
	tr := newTracker(3)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	states := func(s ...string) []Tunnel {
		var out []Tunnel
		for i, st := range s {
			out = append(out, Tunnel{ID: string(rune('a' + i)), State: st})
		}
		return out
	}
	base := states(TunnelUp, TunnelUnknown)
	tr.observe(t0, base)
	if len(tr.events) != 0 || base[0].LastChange != nil {
		t.Fatalf("baseline made events %v or change times", tr.events)
	}
	next := states(TunnelDown, TunnelUnknown)
	tr.observe(t0.Add(time.Second), next)
	if len(tr.events) != 1 || tr.events[0].What != "tunnel a down" || tr.events[0].Level != LevelError {
		t.Fatalf("events %v", tr.events)
	}
	if next[0].LastChange == nil || !next[0].LastChange.Equal(t0.Add(time.Second)) || next[1].LastChange != nil {
		t.Errorf("change times %v %v", next[0].LastChange, next[1].LastChange)
	}
	// b gets reported (an event), a loses its reports (no event); a new
	// tunnel c appears unreported (no event).
	tr.observe(t0.Add(2*time.Second), states(TunnelUnknown, TunnelUp, TunnelUnknown))
	if len(tr.events) != 2 || tr.events[1].What != "tunnel b up" || tr.events[1].Level != LevelOK {
		t.Errorf("events %v", tr.events)
	}
	for i := range 5 {
		tr.observe(t0.Add(time.Duration(3+i)*time.Second), states(TunnelUp, []string{TunnelUp, TunnelDegraded}[i%2], TunnelUnknown))
	}
	if len(tr.events) != 3 {
		t.Errorf("kept %d events, want the last 3", len(tr.events))
	}
}

func TestMergeEvents(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src := []Event{{Time: t0, What: "s1"}, {Time: t0.Add(2 * time.Second), What: "s2"}}
	derived := []Event{{Time: t0.Add(time.Second), What: "d1", Level: LevelError}}
	got := mergeEvents(src, derived, 2)
	if len(got) != 2 || got[0].What != "d1" || got[1].What != "s2" || got[1].Level != LevelInfo {
		t.Errorf("merged %v", got)
	}
}

func TestSummaryCountsDevicesAndCertificates(t *testing.T) {
	st := State{
		Sites: []Site{{Name: "a", State: SiteUp, Cert: &Cert{ExpiresSoon: true}}, {Name: "b", State: SiteUp, Cert: &Cert{}},
			{Name: "c", State: SiteDown, Cert: &Cert{Revoked: true}}, {Name: "d", State: SiteNeverSeen}},
		Devices: []Device{{ID: "1", State: "pending"}, {ID: "2", State: "pending"}, {ID: "3", State: "enrolled"}},
	}
	summarize(&st)
	if st.Summary.DevicesPending != 2 || st.Summary.CertsExpiringSoon != 2 {
		t.Errorf("summary %+v, want 2 devices pending and 2 certificates flagged", st.Summary)
	}
}

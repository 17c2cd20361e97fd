package ipsec

import (
	"context"
	"slices"
	"testing"
	"time"
)

func est(id string, in uint64) ikeSA {
	return ikeSA{id: id, state: IKEEstablished, children: []childSA{{name: ChildName, state: ChildInstalled, packetsIn: in}}}
}

// TestSurplus runs surplus over two looks: prev is the first look's SAs
// (at t0), sas the second (at t0+5s).
func TestSurplus(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		first, then []ikeSA
		quiet       time.Duration
		want        []string
	}{
		{"one IKE_SA is never surplus", []ikeSA{est("1", 5)}, []ikeSA{est("1", 5)}, 0, nil},
		{"the silent one of two goes", []ikeSA{est("1", 5), est("2", 0)}, []ikeSA{est("1", 9), est("2", 0)}, 0, []string{"2"}},
		{"silent for less than quiet stays", []ikeSA{est("1", 5), est("2", 0)}, []ikeSA{est("1", 9), est("2", 0)}, 30 * time.Second, nil},
		{"both silent: nothing to tell, both stay", []ikeSA{est("1", 5), est("2", 3)}, []ikeSA{est("1", 5), est("2", 3)}, 0, nil},
		{"both receiving: both stay", []ikeSA{est("1", 5), est("2", 3)}, []ikeSA{est("1", 6), est("2", 4)}, 0, nil},
		{"a new IKE_SA is not judged on its first sighting", []ikeSA{est("1", 5)}, []ikeSA{est("1", 9), est("2", 0)}, 0, nil},
		{"the peer moved to the new one: the old goes", []ikeSA{est("1", 5), est("2", 0)}, []ikeSA{est("1", 5), est("2", 4)}, 0, []string{"1"}},
		{"one that is rekeying is not settled", []ikeSA{est("1", 5), est("2", 0)},
			[]ikeSA{est("1", 9), {id: "2", state: IKERekeying, children: []childSA{{name: ChildName, state: ChildInstalled}}}}, 0, nil},
		{"one without an installed CHILD_SA is not settled", []ikeSA{est("1", 5), est("2", 0)},
			[]ikeSA{est("1", 9), {id: "2", state: IKEEstablished, children: []childSA{{name: ChildName, state: ChildRekeyed}}}}, 0, nil},
		{"three: every silent one goes", []ikeSA{est("1", 1), est("2", 2), est("3", 3)}, []ikeSA{est("1", 1), est("2", 7), est("3", 3)}, 0, []string{"1", "3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, seen := surplus(tt.first, nil, t0, tt.quiet)
			got, _ := surplus(tt.then, seen, t0.Add(5*time.Second), tt.quiet)
			if !slices.Equal(got, tt.want) {
				t.Errorf("surplus = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSurplusQuietCountsFromTheLastPacket: silence is measured from the
// last change of the counter, across looks.
func TestSurplusQuietCountsFromTheLastPacket(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	_, seen := surplus([]ikeSA{est("1", 1), est("2", 1)}, nil, t0, 30*time.Second)
	for i, step := range []struct {
		in1, in2 uint64
		want     []string
	}{
		{2, 2, nil},           // t0+10s: both moved
		{3, 2, nil},           // t0+20s: 2 silent for 10 s
		{4, 2, nil},           // t0+30s: 20 s
		{5, 2, []string{"2"}}, // t0+40s: 30 s
	} {
		var got []string
		got, seen = surplus([]ikeSA{est("1", step.in1), est("2", step.in2)}, seen, t0.Add(time.Duration(i+1)*10*time.Second), 30*time.Second)
		if !slices.Equal(got, step.want) {
			t.Errorf("look %d: surplus = %v, want %v", i+1, got, step.want)
		}
	}
}

// TestTidyEndsTheSilentIKESA: Tidy ends the IKE_SA of a tunnel that
// receives nothing while the tunnel's other IKE_SA does, by its unique id,
// after ActiveQuiet at an initiating end and PassiveQuiet at a passive
// one; a second look with one IKE_SA left ends nothing.
func TestTidyEndsTheSilentIKESA(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	d := twoTunnels()
	d.Tunnels[1].Passive = true
	must(t, m.Apply(ctx, d))
	set := func(in1, in2 uint64) {
		f.mu.Lock()
		f.sas["mw-t1"] = []ikeSA{est("4", in1), est("5", 0)}
		f.sas["mw-t2"] = []ikeSA{est("10", in2), est("11", 0)}
		f.mu.Unlock()
	}
	set(1, 1)
	must(t, m.Tidy(ctx))
	f.takeCalls()
	now = now.Add(5 * time.Second)
	set(2, 2)
	must(t, m.Tidy(ctx))
	if got := writes(f.takeCalls()); !slices.Equal(got, []string{"terminate ike-id=5"}) {
		t.Errorf("after 5 s: writes %q, want the initiating tunnel's silent IKE_SA 5 ended", got)
	}
	now = now.Add(30 * time.Second)
	f.mu.Lock()
	f.sas["mw-t2"] = []ikeSA{est("10", 3), est("11", 0)}
	f.mu.Unlock()
	must(t, m.Tidy(ctx))
	if got := writes(f.takeCalls()); !slices.Equal(got, []string{"terminate ike-id=11"}) {
		t.Errorf("after 35 s: writes %q, want the passive tunnel's silent IKE_SA 11 ended", got)
	}
	st, err := m.Status(ctx)
	must(t, err)
	if st[0].IKEIDs != "4" || st[1].IKEIDs != "10" {
		t.Errorf("after tidy: %+v", st)
	}
	now = now.Add(time.Minute)
	must(t, m.Tidy(ctx))
	if got := writes(f.takeCalls()); len(got) != 0 {
		t.Errorf("tidy with one IKE_SA per tunnel wrote %q", got)
	}
}

// TestTidyStatusListsOnce: the worker's periodic query lists charon's
// SAs once, ends the silent IKE_SA, and reports the tunnel without it.
func TestTidyStatusListsOnce(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	must(t, m.Apply(ctx, desired(tunnel("t1", "198.51.100.1", psk1))))
	set := func(in uint64) {
		f.mu.Lock()
		f.sas["mw-t1"] = []ikeSA{est("4", in), est("5", 0)}
		f.mu.Unlock()
	}
	set(1)
	_, err := m.TidyStatus(ctx)
	must(t, err)
	now = now.Add(5 * time.Second)
	set(2)
	f.takeCalls()
	st, err := m.TidyStatus(ctx)
	must(t, err)
	calls := f.takeCalls()
	if n := slices.Index(calls, "list-sas"); n < 0 || slices.Index(calls[n+1:], "list-sas") >= 0 {
		t.Errorf("calls %q, want one list-sas", calls)
	}
	if got := writes(calls); !slices.Equal(got, []string{"terminate ike-id=5"}) {
		t.Errorf("writes %q, want the silent IKE_SA 5 ended", got)
	}
	if len(st) != 1 || st[0].IKESAs != 1 || st[0].IKEIDs != "4" {
		t.Errorf("status %+v, want only IKE_SA 4", st)
	}
}

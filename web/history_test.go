package web

import (
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
	"time"
)

func ptr(v float64) *float64 { return &v }

func TestHistory(t *testing.T) {
	h := newHistory(time.Minute, 10*time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // a slot boundary
	tn := []Tunnel{{ID: "x", State: TunnelUp}}
	h.observe(t0, tn)
	h.observe(t0.Add(time.Second), tn) // unchanged, same slot: skipped
	tn[0].State = TunnelDown
	h.observe(t0.Add(2*time.Second), tn) // a state change: at once
	got, _ := h.get(t0.Add(3*time.Second), "x")
	if len(got) != 2 || got[1].State != TunnelDown {
		t.Fatalf("samples %+v", got)
	}
	// Figures-only changes within the slot wait; the next slot's sample
	// carries the latest.
	tn[0].RTTMillis, tn[0].JitterMillis, tn[0].LossPercent = ptr(12.5), ptr(1), ptr(0)
	h.observe(t0.Add(3*time.Second), tn)
	tn[0].RTTMillis = ptr(14)
	h.observe(t0.Add(4*time.Second), tn)
	if got, _ := h.get(t0.Add(5*time.Second), "x"); len(got) != 2 {
		t.Fatalf("figures-only changes within the slot were sampled: %+v", got)
	}
	h.observe(t0.Add(10*time.Second), tn)
	got, _ = h.get(t0.Add(10*time.Second), "x")
	if last := got[len(got)-1]; len(got) != 3 || last.RTTMillis == nil || *last.RTTMillis != 14 || last.JitterMillis == nil || *last.JitterMillis != 1 {
		t.Fatalf("after the slot: %+v, want a third sample with RTT 14 ms, jitter 1 ms", got)
	}
	// Keep sampling: the window drops old samples.
	for i := range 30 {
		h.observe(t0.Add(time.Duration(20+i*10)*time.Second), tn)
	}
	now := t0.Add(310 * time.Second)
	got, _ = h.get(now, "x")
	if len(got) != 6 || got[0].Time.Before(now.Add(-time.Minute)) {
		t.Errorf("after 5 min: %+v, want the 6 samples of the last minute", got)
	}
	h.observe(now, nil)
	if _, ok := h.get(now, "x"); ok {
		t.Error("a removed tunnel kept its history")
	}
}

// Reads as far apart as the period, with jitter, each make a sample: the
// pacing is by slot, not by time since the last sample (which would drop
// every read that came a little early, halving the rate).
func TestHistoryReadsEveryPeriod(t *testing.T) {
	h := newHistory(time.Hour, 5*time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 2, 500e6, time.UTC) // mid-slot
	rng := rand.New(rand.NewPCG(3, 4))
	tn := []Tunnel{{ID: "x", State: TunnelUp}}
	for i := range 720 {
		tn[0].RTTMillis = ptr(float64(i))
		h.observe(t0.Add(time.Duration(i)*5*time.Second+time.Duration(rng.IntN(400)-200)*time.Millisecond), tn)
	}
	if got, _ := h.get(t0.Add(time.Hour), "x"); len(got) != 720 {
		t.Errorf("720 reads 5 s apart (±200 ms) gave %d samples, want 720", len(got))
	}
}

// An hour of per-second reports through the Server: the RTT, jitter and
// loss move every second and the state changes now and then, sometimes
// several times within a second or two. The hour fits, and every state
// change is there, at its time.
func TestHistoryHourOfPerSecondReports(t *testing.T) {
	src := newFakeSource(twoSites(TunnelUp))
	s, err := New(Config{Source: src, NoAuth: true}) // HistoryPeriod: the default 5 s
	if err != nil {
		t.Fatal(err)
	}
	const id = "a.inet~b.inet"
	stateAt := func(i int) string {
		switch {
		case i >= 2000 && i < 2004: // four changes in four seconds
			return []string{TunnelDegraded, TunnelDown, TunnelDegraded, TunnelUp}[i-2000]
		case i%300 >= 100 && i%300 < 103: // a 3-s outage every 5 min
			return TunnelDown
		}
		return TunnelUp
	}
	type change struct {
		at    time.Time
		state string
	}
	var changes []change
	rtts := map[time.Time]float64{}
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var now time.Time
	s.now = func() time.Time { return now }
	for i := range 3600 {
		now = t0.Add(time.Duration(i)*time.Second + time.Duration(rng.IntN(300))*time.Millisecond)
		st := twoSites(stateAt(i))
		rtt := 20 + 10*rng.Float64()
		st.Tunnels[0].RTTMillis, st.Tunnels[0].JitterMillis, st.Tunnels[0].LossPercent = &rtt, ptr(rtt/10), ptr(float64(i%3))
		src.set(st)
		if err := s.update(t.Context()); err != nil {
			t.Fatal(err)
		}
		rtts[now] = rtt
		if i > 0 && stateAt(i) != stateAt(i-1) {
			changes = append(changes, change{now, stateAt(i)})
		}
	}

	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/api/history?tunnel="+id, nil))
	var hist struct {
		Window  int      `json:"window_seconds"`
		Samples []Sample `json:"samples"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &hist); rec.Code != 200 || err != nil {
		t.Fatalf("GET /api/history: %d %v %s", rec.Code, err, rec.Body)
	}
	got := hist.Samples
	if hist.Window != 3600 {
		t.Errorf("window %d s, want 3600", hist.Window)
	}
	if len(got) > 1440 {
		t.Errorf("%d samples, want at most 1440", len(got))
	}
	if len(got) == 0 || now.Sub(got[0].Time) < 59*time.Minute {
		t.Fatalf("%d samples from %v to %v, want the last 59 minutes at least", len(got), got[0].Time, now)
	}
	t.Logf("%d samples over %v; %d state changes", len(got), now.Sub(got[0].Time), len(changes))

	var seen []change
	for i, smp := range got {
		if want, ok := rtts[smp.Time]; !ok || smp.RTTMillis == nil || *smp.RTTMillis != want || smp.JitterMillis == nil || smp.LossPercent == nil {
			t.Fatalf("sample %d %+v: not the figures reported at its time (RTT %v)", i, smp, want)
		}
		if i == 0 {
			continue
		}
		prev := got[i-1]
		if smp.State != prev.State {
			seen = append(seen, change{smp.Time, smp.State})
		} else if smp.Time.Truncate(5*time.Second) == prev.Time.Truncate(5*time.Second) {
			t.Errorf("samples %d and %d (%v, %v): two without a state change in one 5-s slot", i-1, i, prev.Time, smp.Time)
		}
	}
	var want []change
	for _, c := range changes {
		if c.at.After(got[0].Time) {
			want = append(want, c)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("state changes in the history:\n%v\nwant (every one reported after %v):\n%v", seen, got[0].Time, want)
	}
	for i := range want {
		if !seen[i].at.Equal(want[i].at) || seen[i].state != want[i].state {
			t.Errorf("state change %d: %v %s, want %v %s", i, seen[i].at, seen[i].state, want[i].at, want[i].state)
		}
	}
}

// A tunnel flapping every second keeps every change, within a bounded ring
// that then covers less than the window.
func TestHistoryFlapping(t *testing.T) {
	h := newHistory(time.Hour, 5*time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tn := []Tunnel{{ID: "x"}}
	for i := range 3600 {
		tn[0].State = []string{TunnelUp, TunnelDown}[i%2]
		h.observe(t0.Add(time.Duration(i)*time.Second), tn)
	}
	got, _ := h.get(t0.Add(time.Hour), "x")
	if len(got) != 1440 {
		t.Fatalf("%d samples, want the ring's 1440", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].State == got[i-1].State || got[i].Time.Sub(got[i-1].Time) != time.Second {
			t.Fatalf("samples %d and %d: %+v %+v, want every flip", i-1, i, got[i-1], got[i])
		}
	}
}

func TestRing(t *testing.T) {
	r := newRing(3)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.push(Sample{Time: t0})
	if len(r.buf) != 1 {
		t.Errorf("one sample in %d slots; want the ring to grow as needed", len(r.buf))
	}
	for i := 1; i < 5; i++ {
		r.push(Sample{Time: t0.Add(time.Duration(i) * time.Second)})
	}
	got := r.since(time.Time{})
	if len(got) != 3 || !got[0].Time.Equal(t0.Add(2*time.Second)) || !got[2].Time.Equal(t0.Add(4*time.Second)) {
		t.Errorf("ring %+v", got)
	}
	if last, _ := r.last(); !last.Time.Equal(t0.Add(4 * time.Second)) {
		t.Errorf("last %v", last.Time)
	}
	if got := r.since(t0.Add(3 * time.Second)); len(got) != 1 {
		t.Errorf("since 3 s: %+v", got)
	}
}

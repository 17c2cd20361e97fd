package web

import (
	"sync"
	"time"
)

// Sample is one point of a tunnel's history.
type Sample struct {
	Time        time.Time `json:"t"`
	State       string    `json:"state"`
	RTTMillis   *float64  `json:"rtt_ms,omitempty"`
	LossPercent *float64  `json:"loss_pct,omitempty"`
}

// ring is a fixed-capacity buffer of samples, oldest first.
type ring struct {
	buf   []Sample
	start int
	n     int
}

func newRing(capacity int) *ring { return &ring{buf: make([]Sample, capacity)} }

func (r *ring) push(s Sample) {
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = s
		r.n++
		return
	}
	r.buf[r.start] = s
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) last() (Sample, bool) {
	if r.n == 0 {
		return Sample{}, false
	}
	return r.buf[(r.start+r.n-1)%len(r.buf)], true
}

// since returns the samples newer than t, oldest first.
func (r *ring) since(t time.Time) []Sample {
	out := make([]Sample, 0, r.n)
	for i := range r.n {
		s := r.buf[(r.start+i)%len(r.buf)]
		if s.Time.After(t) {
			out = append(out, s)
		}
	}
	return out
}

// history keeps each tunnel's recent samples in memory: one every `every`
// while nothing changes, and one at every change, for the last `window`.
// It is a view of what this process saw, like the events.
type history struct {
	mu     sync.Mutex
	window time.Duration
	every  time.Duration
	cap    int
	m      map[string]*ring
}

func newHistory(window, every time.Duration) *history {
	// Room for a sample per period plus as many changes.
	return &history{window: window, every: every, cap: max(2*int(window/every), 256), m: map[string]*ring{}}
}

func sampleOf(now time.Time, t *Tunnel) Sample {
	return Sample{Time: now, State: t.State, RTTMillis: t.RTTMillis, LossPercent: t.LossPercent}
}

func (h *history) observe(now time.Time, tunnels []Tunnel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := make(map[string]bool, len(tunnels))
	for i := range tunnels {
		t := &tunnels[i]
		seen[t.ID] = true
		r := h.m[t.ID]
		if r == nil {
			r = newRing(h.cap)
			h.m[t.ID] = r
		}
		s := sampleOf(now, t)
		if last, ok := r.last(); ok && now.Sub(last.Time) < h.every && same(last, s) {
			continue
		}
		r.push(s)
	}
	for id := range h.m {
		if !seen[id] {
			delete(h.m, id)
		}
	}
}

func same(a, b Sample) bool {
	return a.State == b.State && eqPtr(a.RTTMillis, b.RTTMillis) && eqPtr(a.LossPercent, b.LossPercent)
}

func eqPtr(a, b *float64) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

// get returns a tunnel's samples of the last window; ok is false for a
// tunnel it does not know.
func (h *history) get(now time.Time, id string) ([]Sample, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.m[id]
	if !ok {
		return nil, false
	}
	return r.since(now.Add(-h.window)), true
}

package web

import (
	"sync"
	"time"
)

// Sample is one point of a tunnel's history.
type Sample struct {
	Time         time.Time `json:"t"`
	State        string    `json:"state"`
	RTTMillis    *float64  `json:"rtt_ms,omitempty"`
	JitterMillis *float64  `json:"jitter_ms,omitempty"`
	LossPercent  *float64  `json:"loss_pct,omitempty"`
}

// ring is a bounded buffer of samples, oldest first. It grows up to its
// capacity as samples come (a tunnel seen for a minute holds a minute's
// worth, not an hour's), then overwrites the oldest.
type ring struct {
	buf   []Sample
	cap   int
	start int // index of the oldest sample once full
}

func newRing(capacity int) *ring { return &ring{cap: capacity} }

func (r *ring) push(s Sample) {
	if len(r.buf) < r.cap {
		r.buf = append(r.buf, s)
		return
	}
	r.buf[r.start] = s
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) last() (Sample, bool) {
	if len(r.buf) == 0 {
		return Sample{}, false
	}
	return r.buf[(r.start+len(r.buf)-1)%len(r.buf)], true
}

// since returns the samples newer than t, oldest first.
func (r *ring) since(t time.Time) []Sample {
	out := make([]Sample, 0, len(r.buf))
	for i := range len(r.buf) {
		s := r.buf[(r.start+i)%len(r.buf)]
		if s.Time.After(t) {
			out = append(out, s)
		}
	}
	return out
}

// history keeps each tunnel's recent samples in memory, for the last
// window. It is a view of what this process saw, like the events.
//
// Sampling, per tunnel:
//   - a state change is recorded at once, every time;
//   - otherwise (nothing changed, or only RTT, jitter or loss moved) at most
//     one sample per slot of the clock `every` long (time truncated to
//     every), carrying the figures of that moment, the latest.
//
// The pacing does not depend on how often observe is called: edges report
// every second and the server re-reads the state up to once a second, which
// at one sample per read filled an hour's ring in 24 minutes. Slots rather
// than "every since the last sample" keep the pacing when the reads are
// themselves every apart with jitter (a read 4.999 s after the last sample
// would otherwise be skipped and the next sample come 10 s later).
//
// A ring holds 2*window/every samples: one per slot plus as many state
// changes. A tunnel that changes state more often than once per slot on
// average keeps less than the window (its oldest samples go first); the
// samples then still show it flapping.
type history struct {
	mu     sync.Mutex
	window time.Duration
	every  time.Duration
	cap    int
	m      map[string]*ring
}

func newHistory(window, every time.Duration) *history {
	return &history{window: window, every: every, cap: max(2*int(window/every), 256), m: map[string]*ring{}}
}

func sampleOf(now time.Time, t *Tunnel) Sample {
	return Sample{Time: now, State: t.State, RTTMillis: t.RTTMillis, JitterMillis: t.JitterMillis, LossPercent: t.LossPercent}
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
		if last, ok := r.last(); ok && last.State == t.State && !h.newSlot(last.Time, now) {
			continue // figures only, or nothing, within the slot of the last sample
		}
		r.push(sampleOf(now, t))
	}
	for id := range h.m {
		if !seen[id] {
			delete(h.m, id)
		}
	}
}

// newSlot reports whether now falls in a later sampling slot than last.
func (h *history) newSlot(last, now time.Time) bool {
	return now.Truncate(h.every).After(last.Truncate(h.every))
}

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

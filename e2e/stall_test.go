//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// stallMonitor records the moments the test process could not run for
// longer than a threshold. In the emulated VM the whole guest stalls now
// and then (the host deschedules qemu, or the guest's two vCPUs are
// saturated): every process in it, the edges' probe timers included, then
// misses its deadlines together, so the stalls explain probe timeouts
// that no packet loss caused.
type stallMonitor struct {
	min    time.Duration
	mu     sync.Mutex
	stalls []stall
}

type stall struct {
	end time.Time
	d   time.Duration
}

// startStallMonitor samples the clock every 10 ms until the test ends.
func startStallMonitor(t *testing.T, min time.Duration) *stallMonitor {
	m := &stallMonitor{min: min}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		last := time.Now()
		for ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			now := time.Now()
			if d := now.Sub(last) - 10*time.Millisecond; d >= m.min {
				m.mu.Lock()
				m.stalls = append(m.stalls, stall{end: now, d: d})
				m.mu.Unlock()
			}
			last = now
		}
	}()
	return m
}

// between returns how many stalls ended in [from, to) and the longest.
func (m *stallMonitor) between(from, to time.Time) (int, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, longest := 0, time.Duration(0)
	for _, s := range m.stalls {
		if !s.end.Before(from) && s.end.Before(to) {
			n++
			longest = max(longest, s.d)
		}
	}
	return n, longest
}

// near reports whether a stall overlapped [t-before, t].
func (m *stallMonitor) near(t time.Time, before time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.stalls {
		start := s.end.Add(-s.d)
		if !start.After(t) && !s.end.Before(t.Add(-before)) {
			return true
		}
	}
	return false
}

var livenessDown = regexp.MustCompile(`^time=(\S+) .*msg="tunnel liveness changed" tunnel=(\S+) .* from=up to=down`)

// down is a tunnel's probes going down, from an edge's log.
type down struct {
	at     time.Time
	tunnel string
}

// tunnelDowns returns the times an edge's log says a tunnel's probes went
// down, within [from, to). It reads the agent's log text ("tunnel liveness
// changed tunnel=ID ... from=up to=down", edge/probe): nil if there is
// none.
func tunnelDowns(log string, from, to time.Time) []down {
	var out []down
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := livenessDown.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err == nil && !ts.Before(from) && ts.Before(to) {
			out = append(out, down{at: ts, tunnel: m[2]})
		}
	}
	return out
}

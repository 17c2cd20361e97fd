package backoff

import (
	"testing"
	"time"
)

func TestDoublesUpToMaxAndResets(t *testing.T) {
	b := Policy{Min: 100 * time.Millisecond, Max: time.Second}.New()
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("step %d: %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Fatalf("after Reset: %v", got)
	}
}

func TestZeroPolicy(t *testing.T) {
	b := Policy{}.New()
	if got := b.Next(); got != time.Second {
		t.Fatalf("first: %v", got)
	}
	for range 10 {
		b.Next()
	}
	if got := b.Next(); got != 30*time.Second {
		t.Fatalf("cap: %v", got)
	}
}

func TestJitterStaysInRange(t *testing.T) {
	b := Policy{Min: time.Second, Max: time.Second, Jitter: 0.5}.New()
	seen := map[time.Duration]bool{}
	for range 200 {
		d := b.Next()
		if d < 500*time.Millisecond || d > time.Second {
			t.Fatalf("delay %v outside [0.5s, 1s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("jitter produced only %d distinct delays", len(seen))
	}
}

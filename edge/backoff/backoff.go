// Package backoff owns the one retry policy of the edge: exponential
// backoff from Min to Max with optional full jitter. Every retry loop of
// the edge (the controller stream, the data-plane owner, the IPsec and BGP
// workers, the probe reflector, certificate renewal) uses it, so a
// failing dependency is retried the same way everywhere and the policy is
// tested once.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is a retry policy; the zero value retries after 1 s, doubling up
// to 30 s, without jitter.
type Policy struct {
	Min, Max time.Duration
	// Jitter in [0,1]: each delay is drawn uniformly from
	// [d*(1-Jitter), d], so a fleet that failed together does not retry
	// together. 0: none.
	Jitter float64
}

// Backoff is one sequence of delays under a Policy. It is not safe for
// concurrent use: each retry loop owns its own.
type Backoff struct {
	p    Policy
	next time.Duration
}

// New starts a sequence.
func (p Policy) New() *Backoff {
	if p.Min <= 0 {
		p.Min = time.Second
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	p.Max = max(p.Max, p.Min)
	p.Jitter = min(max(p.Jitter, 0), 1)
	return &Backoff{p: p, next: p.Min}
}

// Next returns the delay before the next attempt and doubles the one
// after it, up to Max.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(b.next*2, b.p.Max)
	if b.p.Jitter > 0 {
		d -= time.Duration(rand.Float64() * b.p.Jitter * float64(d))
	}
	return d
}

// Reset starts the sequence again at Min (after a success).
func (b *Backoff) Reset() { b.next = b.p.Min }

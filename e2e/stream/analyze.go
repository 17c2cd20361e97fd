package stream

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// Gap is a run of missing sequence numbers between two received packets.
type Gap struct {
	Before, After Record
}

// Lost is how many sequence numbers are missing.
func (g Gap) Lost() uint64 { return g.After.Seq - g.Before.Seq - 1 }

// Recv is the gap's length at the receiver: After's arrival minus
// Before's (0 if reordering made it negative). It includes any difference
// in the two packets' one-way latencies, e.g. a slower path after the hole.
func (g Gap) Recv() time.Duration { return max(0, time.Duration(g.After.Recv-g.Before.Recv)) }

// Send is the same in send times: how long packets were being sent into
// the hole. It depends on neither path's latency nor on the receiver.
func (g Gap) Send() time.Duration { return max(0, time.Duration(g.After.Sent-g.Before.Sent)) }

func (g Gap) String() string {
	return fmt.Sprintf("%v sent into it, %v at the receiver (seq %d..%d, %d lost)", g.Send(), g.Recv(), g.Before.Seq, g.After.Seq, g.Lost())
}

// bySeq returns recs sorted by sequence number, first copy of each kept.
func bySeq(recs []Record) []Record {
	s := slices.Clone(recs)
	slices.SortStableFunc(s, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return slices.CompactFunc(s, func(a, b Record) bool { return a.Seq == b.Seq })
}

// Gaps returns every hole in the sequence numbers of recs (in any order,
// duplicates allowed), in sequence order. Losses before the first or after
// the last received packet are not holes: nothing brackets them.
func Gaps(recs []Record) []Gap {
	s := bySeq(recs)
	var out []Gap
	for i := 1; i < len(s); i++ {
		if s[i].Seq > s[i-1].Seq+1 {
			out = append(out, Gap{Before: s[i-1], After: s[i]})
		}
	}
	return out
}

// Longest returns the gap with the longest Recv (the first of equals).
func Longest(gaps []Gap) (Gap, bool) { return LongestBy(gaps, Gap.Recv) }

// LongestBy returns the gap for which length is longest (the first of
// equals), e.g. Gap.Send.
func LongestBy(gaps []Gap, length func(Gap) time.Duration) (Gap, bool) {
	if len(gaps) == 0 {
		return Gap{}, false
	}
	best := gaps[0]
	for _, g := range gaps[1:] {
		if length(g) > length(best) {
			best = g
		}
	}
	return best, true
}

// Percentiles of a set of durations (nearest rank).
type Percentiles struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func (p Percentiles) String() string {
	return fmt.Sprintf("p50 %v p90 %v p99 %v max %v (n=%d)", p.P50, p.P90, p.P99, p.Max, p.N)
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted values: the ceil(p/100*n)-th smallest; 0 for no values.
func Percentile[T cmp.Ordered](sorted []T, p float64) T {
	n := len(sorted)
	if n == 0 {
		var zero T
		return zero
	}
	i := int(math.Ceil(p/100*float64(n))) - 1
	return sorted[min(max(i, 0), n-1)]
}

// PercentilesOf sorts a copy of ds and takes its percentiles.
func PercentilesOf(ds []time.Duration) Percentiles {
	s := slices.Clone(ds)
	slices.Sort(s)
	p := Percentiles{N: len(s), P50: Percentile(s, 50), P90: Percentile(s, 90), P99: Percentile(s, 99)}
	if len(s) > 0 {
		p.Max = s[len(s)-1]
	}
	return p
}

// Latencies returns the one-way latency of every record.
func Latencies(recs []Record) []time.Duration {
	out := make([]time.Duration, len(recs))
	for i, r := range recs {
		out[i] = r.Latency()
	}
	return out
}

// Summary describes a set of records.
type Summary struct {
	Received   int // distinct sequence numbers
	Duplicates int
	// Reordered counts arrivals with a lower sequence number than one that
	// arrived before them (records are taken in arrival order).
	Reordered         int
	FirstSeq, LastSeq uint64
	// Lost is how many sequence numbers between FirstSeq and LastSeq never
	// arrived.
	Lost    uint64
	Gaps    int
	Longest Gap // zero when nothing was lost
	Latency Percentiles
}

func (s Summary) String() string {
	out := fmt.Sprintf("received %d (seq %d..%d), lost %d in %d gaps, %d reordered, %d duplicates; one-way latency %v",
		s.Received, s.FirstSeq, s.LastSeq, s.Lost, s.Gaps, s.Reordered, s.Duplicates, s.Latency)
	if s.Gaps > 0 {
		out += "; longest gap " + s.Longest.String()
	}
	return out
}

// Summarize analyses records in arrival order.
func Summarize(recs []Record) Summary {
	var s Summary
	if len(recs) == 0 {
		return s
	}
	seen := make(map[uint64]bool, len(recs))
	var top uint64
	for i, r := range recs {
		if seen[r.Seq] {
			s.Duplicates++
			continue
		}
		seen[r.Seq] = true
		if i > 0 && r.Seq < top {
			s.Reordered++
		}
		top = max(top, r.Seq)
	}
	uniq := bySeq(recs)
	s.Received = len(uniq)
	s.FirstSeq, s.LastSeq = uniq[0].Seq, uniq[len(uniq)-1].Seq
	s.Lost = s.LastSeq - s.FirstSeq + 1 - uint64(s.Received)
	gaps := Gaps(uniq)
	s.Gaps = len(gaps)
	s.Longest, _ = Longest(gaps)
	s.Latency = PercentilesOf(Latencies(uniq))
	return s
}

// SentBetween returns the records sent in [from, to); a zero bound is
// open.
func SentBetween(recs []Record, from, to time.Time) []Record {
	var out []Record
	for _, r := range recs {
		if !from.IsZero() && r.Sent < from.UnixNano() {
			continue
		}
		if !to.IsZero() && r.Sent >= to.UnixNano() {
			continue
		}
		out = append(out, r)
	}
	return out
}

// FirstSustained finds when a condition on packets began to hold: the
// first packet sent at or after from that satisfies ok and such that at
// least frac (0..1) of the packets sent during the following window
// (itself included) satisfy it too. It reports false while no such
// packet exists or the window after the candidate is not over yet (no
// packet sent at or after candidate+window has arrived), so a caller
// polling a growing set of records gets the answer once it is final.
func FirstSustained(recs []Record, from time.Time, ok func(Record) bool, window time.Duration, frac float64) (Record, bool) {
	s := SentBetween(recs, from, time.Time{})
	slices.SortStableFunc(s, func(a, b Record) int { return cmp.Compare(a.Sent, b.Sent) })
	good := make([]int, len(s)+1) // good[i]: how many of s[:i] satisfy ok
	for i, r := range s {
		good[i+1] = good[i]
		if ok(r) {
			good[i+1]++
		}
	}
	j := 0
	for i, r := range s {
		if !ok(r) {
			continue
		}
		end := r.Sent + int64(window)
		j = max(j, i)
		for j < len(s) && s[j].Sent < end {
			j++
		}
		if j == len(s) {
			return Record{}, false // the window is not over yet
		}
		if n := j - i; float64(good[j]-good[i]) >= frac*float64(n) {
			return r, true
		}
	}
	return Record{}, false
}

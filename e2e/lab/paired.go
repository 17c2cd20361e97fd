package lab

import (
	"fmt"
	"slices"
)

// Spread is the median and range of a sample.
type Spread struct {
	Median, Min, Max float64
	N                int
}

func (s Spread) String() string {
	return fmt.Sprintf("%.2f (%.2f-%.2f, n=%d)", s.Median, s.Min, s.Max, s.N)
}

// SpreadOf returns the median (the mean of the middle two for an even
// count) and range of xs; the zero Spread for none.
func SpreadOf(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Spread{Median: med, Min: s[0], Max: s[n-1], N: n}
}

// PairedRatios returns num[i]/den[i] for every repetition i both samples
// hold with a non-zero denominator: ratios of runs made back to back, so
// that slow phases of the (emulated, shared) machine cancel out.
func PairedRatios(num, den []float64) []float64 {
	var out []float64
	for i := range min(len(num), len(den)) {
		if den[i] != 0 {
			out = append(out, num[i]/den[i])
		}
	}
	return out
}

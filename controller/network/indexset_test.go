package network

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIndexSetFree checks the hinted free list against the obvious
// reference (scan the whole pool) over random adds and removes.
func TestIndexSetFree(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const size = 64
	x := newIndexSet()
	ref := map[int]bool{}
	for step := range 5000 {
		i := r.IntN(size)
		if r.IntN(3) == 0 {
			x.remove(i)
			delete(ref, i)
		} else {
			x.add(i)
			ref[i] = true
		}
		skip := func(i int) bool { return i%7 == 3 }
		k := r.IntN(10)
		var want []int
		for j := 0; j < size && len(want) < k; j++ {
			if !ref[j] && !skip(j) {
				want = append(want, j)
			}
		}
		if got := x.free(k, size, skip); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("step %d: free(%d) = %v, want %v", step, k, got, want)
		}
	}
}

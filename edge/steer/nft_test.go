package steer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// lcsLen is the obvious quadratic longest common subsequence length.
func lcsLen(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = 1 + dp[i+1][j+1]
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func TestKeepInOrder(t *testing.T) {
	for _, tc := range []struct {
		have, want []string
		keep       string // kept have indexes (any maximal choice would do; this is the one made)
	}{
		{nil, nil, "[]"},
		{[]string{"a", "b", "c"}, []string{"a", "b", "c"}, "[0 1 2]"},
		{[]string{"a", "x", "c"}, []string{"a", "b", "c"}, "[0 2]"},
		{[]string{"c", "a", "b"}, []string{"a", "b", "c"}, "[1 2]"},
		{[]string{"a", "a", "b"}, []string{"a", "b"}, "[1 2]"},
		{[]string{"b", "a"}, []string{"a", "b"}, "[1]"},
		{[]string{"x", "y"}, []string{"a"}, "[]"},
	} {
		kh, kw := keepInOrder(tc.have, tc.want)
		var kept []int
		for i, j := range kh {
			if j >= 0 {
				kept = append(kept, i)
				if kw[j] != i || tc.have[i] != tc.want[j] {
					t.Errorf("%v -> %v: inconsistent pairing %d <-> %d", tc.have, tc.want, i, j)
				}
			}
		}
		if got := fmt.Sprint(kept); got != tc.keep {
			t.Errorf("keepInOrder(%v, %v) keeps %s, want %s", tc.have, tc.want, got, tc.keep)
		}
	}
}

// TestKeepInOrderMatchesLCS: on random chains (want distinct, have with
// strangers and duplicates), the kept rules are a common subsequence, in
// order, of maximal length.
func TestKeepInOrderMatchesLCS(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		want := r.Perm(1 + r.IntN(10))
		var ws []string
		for _, v := range want {
			ws = append(ws, fmt.Sprint(v))
		}
		var hs []string
		for range r.IntN(12) {
			hs = append(hs, fmt.Sprint(r.IntN(14))) // 10..13 are strangers
		}
		kh, kw := keepInOrder(hs, ws)
		var keptHave, keptWant []string
		lastJ := -1
		for i, j := range kh {
			if j < 0 {
				continue
			}
			if j <= lastJ {
				t.Fatalf("have %v want %v: kept out of order", hs, ws)
			}
			lastJ = j
			keptHave = append(keptHave, hs[i])
		}
		for j, i := range kw {
			if i >= 0 {
				keptWant = append(keptWant, ws[j])
			}
		}
		if !slices.Equal(keptHave, keptWant) {
			t.Fatalf("have %v want %v: kept %v vs %v", hs, ws, keptHave, keptWant)
		}
		if len(keptHave) != lcsLen(hs, ws) {
			t.Fatalf("have %v want %v: kept %d, LCS is %d", hs, ws, len(keptHave), lcsLen(hs, ws))
		}
	}
}

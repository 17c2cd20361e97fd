package sim

import (
	"testing"
	"time"
)

func TestSummariseNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := Summarise(ds).String()
	want := "mean 50.5 ms, p50 50.0 ms, p99 99.0 ms, max 100.0 ms (n=100)"
	if got != want {
		t.Errorf("Summarise = %q, want %q", got, want)
	}
	if got := Summarise([]time.Duration{3 * time.Second}); got.P50 != 3*time.Second || got.P99 != 3*time.Second {
		t.Errorf("one sample: %+v", got)
	}
	if got := Summarise(nil); got.N != 0 {
		t.Errorf("no samples: %+v", got)
	}
}

func TestTableMarkdown(t *testing.T) {
	tb := &Table{Title: "N=3 · 9. Example", Command: "meshwan-sim --edges 3"}
	tb.Add("calls", "%d", 7)
	tb.Goal("p99", ms(1500*time.Millisecond), "≤ "+secs(time.Second), false)
	tb.Goal("bytes", kb(20<<10), "≤ 2 KB", true)
	want := "#### N=3 · 9. Example\n\n`meshwan-sim --edges 3`\n\n" +
		"| figure | value | goal | |\n| --- | ---: | --- | --- |\n" +
		"| calls | 7 |  |  |\n" +
		"| p99 | 1500.0 ms | ≤ 1 s | **missed** |\n" +
		"| bytes | 20.0 KB | ≤ 2 KB | **met** |\n\n"
	if got := tb.Markdown(); got != want {
		t.Errorf("Markdown:\n%s\nwant:\n%s", got, want)
	}
	if m := tb.Missed(); len(m) != 1 || m[0] != "N=3 · 9. Example: p99" {
		t.Errorf("Missed = %q", m)
	}
}

func TestReadUsageOfThisProcess(t *testing.T) {
	u, err := ReadUsage(0)
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 || u.HWM < u.RSS {
		t.Errorf("RSS %d, HWM %d: want 0 < RSS <= HWM", u.RSS, u.HWM)
	}
	if u.CPU < 0 {
		t.Errorf("CPU %v", u.CPU)
	}
}

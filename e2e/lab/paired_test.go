package lab

import (
	"math"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []float64
		want Spread
	}{
		{"none", nil, Spread{}},
		{"one", []float64{3}, Spread{3, 3, 3, 1}},
		{"odd count takes the middle", []float64{5, 1, 3}, Spread{3, 1, 5, 3}},
		{"even count averages the middle two", []float64{4, 1, 2, 10}, Spread{3, 1, 10, 4}},
	} {
		if got := SpreadOf(c.in); got != c.want {
			t.Errorf("%s: SpreadOf(%v) = %+v, want %+v", c.name, c.in, got, c.want)
		}
	}
}

func TestPairedRatiosPairsByRepetition(t *testing.T) {
	got := PairedRatios([]float64{2, 3, 5, 7}, []float64{4, 0, 5})
	want := []float64{0.5, 1} // the zero denominator and the unpaired 7 are left out
	if len(got) != len(want) {
		t.Fatalf("PairedRatios = %v, want %v", got, want)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("PairedRatios = %v, want %v", got, want)
		}
	}
}

func TestParseIperf(t *testing.T) {
	js := `{"start":{},"end":{"sum_sent":{"bytes":250000000,"retransmits":45,"bits_per_second":2.0e8},"sum_received":{"bytes":249000000,"bits_per_second":1.99e8}}}`
	r, err := ParseIperf([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if r.BitsPerSecond != 1.99e8 || r.Bytes != 250000000 || r.Retransmits != 45 {
		t.Fatalf("ParseIperf = %+v", r)
	}
	if got := r.RetransmitsPerMB(); math.Abs(got-0.18) > 1e-9 {
		t.Fatalf("RetransmitsPerMB = %v, want 0.18", got)
	}
	if _, err := ParseIperf([]byte(`{"error":"unable to connect to server"}`)); err == nil {
		t.Fatal("an iperf3 error report parsed without error")
	}
}

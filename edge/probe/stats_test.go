package probe

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

// runScript feeds s a script of space-separated events, times in ms:
// "s3@100" sent seq 3 at 100; "r3@130" reply to 3 at 130; "r3@130+10"
// the same with 10 ms held by the reflector; "t@1000" tick. It returns the
// transitions as text.
func runScript(t *testing.T, s *Stats, script string) string {
	t.Helper()
	var out []string
	for _, ev := range strings.Fields(script) {
		at, delay := ev[strings.Index(ev, "@")+1:], 0
		if i := strings.Index(at, "+"); i >= 0 {
			delay, _ = strconv.Atoi(at[i+1:])
			at = at[:i]
		}
		when, err := strconv.Atoi(at)
		if err != nil {
			t.Fatalf("bad event %q", ev)
		}
		seq, _ := strconv.ParseUint(ev[1:strings.Index(ev, "@")], 10, 64)
		var tr Transition
		var ok bool
		switch ev[0] {
		case 's':
			tr, ok = s.Sent(seq, ms(when))
		case 'r':
			tr, ok = s.Received(seq, ms(when), time.Duration(delay)*time.Millisecond)
		case 't':
			tr, ok = s.Tick(ms(when))
		default:
			t.Fatalf("bad event %q", ev)
		}
		if ok {
			out = append(out, fmt.Sprintf("%v->%v@%d", tr.From, tr.To, tr.At.Sub(t0).Milliseconds()))
		}
	}
	return strings.Join(out, " ")
}

func (sn Snapshot) text() string {
	return fmt.Sprintf("state=%v misses=%d succ=%d sent=%d recv=%d lost=%d late=%d dup=%d unk=%d loss=%.1f rtt=%v srtt=%v jitter=%v p50=%v p99=%v n=%d",
		sn.State, sn.ConsecutiveMisses, sn.ConsecutiveSuccesses, sn.Sent, sn.Received, sn.Lost, sn.Late, sn.Duplicate, sn.Unknown,
		sn.LossPct, sn.RTT, sn.SRTT, sn.Jitter, sn.P50, sn.P99, sn.Samples)
}

// sends returns "s<i>@<i*step>" for i in [from, to).
func sends(from, to, step int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, " s%d@%d", i, i*step)
	}
	return b.String()
}

func TestStatsRules(t *testing.T) {
	for _, tc := range []struct {
		name, script, transitions, snap string
		cfg                             StatsConfig
	}{
		{name: "first success: unknown -> up",
			script:      "s1@0 r1@30",
			transitions: "unknown->up@30",
			snap:        "state=up misses=0 succ=1 sent=1 recv=1 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=30ms srtt=30ms jitter=0s p50=30ms p99=30ms n=1"},
		{name: "4 misses leave unknown alone",
			script: sends(0, 4, 100) + " t@1300",
			snap:   "state=unknown misses=4 succ=0 sent=4 recv=0 lost=4 late=0 dup=0 unk=0 loss=100.0 rtt=0s srtt=0s jitter=0s p50=0s p99=0s n=0"},
		{name: "5 misses: unknown -> down, lost at age >= timeout",
			script:      sends(0, 5, 100) + " t@1399 t@1400",
			transitions: "unknown->down@1400",
			snap:        "state=down misses=5 succ=0 sent=5 recv=0 lost=5 late=0 dup=0 unk=0 loss=100.0 rtt=0s srtt=0s jitter=0s p50=0s p99=0s n=0"},
		{name: "up -> down after 5 misses, not 4",
			script:      "s0@0 r0@10" + sends(1, 6, 100) + " t@1499 t@1500",
			transitions: "unknown->up@10 up->down@1500",
			snap:        "state=down misses=5 succ=0 sent=6 recv=1 lost=5 late=0 dup=0 unk=0 loss=83.3 rtt=10ms srtt=10ms jitter=0s p50=10ms p99=10ms n=1"},
		{name: "a success resets the miss run",
			script:      "s0@0 r0@10 s1@100 s2@200 s3@300 s4@400 t@1400 s5@1400 r5@1410 s6@1500 s7@1600 s8@1700 s9@1800 t@2800",
			transitions: "unknown->up@10",
			snap:        "state=up misses=4 succ=0 sent=10 recv=2 lost=8 late=0 dup=0 unk=0 loss=80.0 rtt=10ms srtt=10ms jitter=0s p50=10ms p99=10ms n=2"},
		{name: "down -> up only after 3 successes",
			script:      sends(0, 5, 100) + " t@1400 s5@1400 r5@1410 s6@1500 r6@1510 t@1600 s7@1600 r7@1610",
			transitions: "unknown->down@1400 down->up@1610",
			snap:        "state=up misses=0 succ=3 sent=8 recv=3 lost=5 late=0 dup=0 unk=0 loss=62.5 rtt=10ms srtt=10ms jitter=0s p50=10ms p99=10ms n=3"},
		{name: "a miss resets the success run while down",
			script:      sends(0, 5, 100) + " t@1400 s5@1400 r5@1410 s6@1500 r6@1510 s7@1600 t@2600 s8@2600 r8@2610 s9@2700 r9@2710",
			transitions: "unknown->down@1400",
			snap:        "state=down misses=0 succ=2 sent=10 recv=4 lost=6 late=0 dup=0 unk=0 loss=60.0 rtt=10ms srtt=10ms jitter=0s p50=10ms p99=10ms n=4"},
		{name: "late reply after tick counts late, not received",
			script: "s1@0 t@1000 r1@1100",
			snap:   "state=unknown misses=1 succ=0 sent=1 recv=0 lost=1 late=1 dup=0 unk=0 loss=100.0 rtt=0s srtt=0s jitter=0s p50=0s p99=0s n=0"},
		{name: "reply at exactly the timeout is late even without a tick",
			script: "s1@0 r1@1000",
			snap:   "state=unknown misses=1 succ=0 sent=1 recv=0 lost=1 late=1 dup=0 unk=0 loss=100.0 rtt=0s srtt=0s jitter=0s p50=0s p99=0s n=0"},
		{name: "duplicate and unknown replies are counted, not sampled",
			script:      "s1@0 r1@20 r1@25 r9@30",
			transitions: "unknown->up@20",
			snap:        "state=up misses=0 succ=1 sent=1 recv=1 lost=0 late=0 dup=1 unk=1 loss=0.0 rtt=20ms srtt=20ms jitter=0s p50=20ms p99=20ms n=1"},
		{name: "reordered replies both count; jitter per RFC 3550",
			script:      "s1@0 s2@100 r2@130 r1@150",
			transitions: "unknown->up@130",
			snap:        "state=up misses=0 succ=2 sent=2 recv=2 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=150ms srtt=45ms jitter=7.5ms p50=30ms p99=150ms n=2"},
		{name: "reflector delay is subtracted; srtt alpha 1/8",
			script:      "s1@0 r1@90+10 s2@100 r2@260",
			transitions: "unknown->up@90",
			snap:        "state=up misses=0 succ=2 sent=2 recv=2 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=160ms srtt=90ms jitter=5ms p50=80ms p99=160ms n=2"},
		{name: "a pending probe pushed out of the window is lost",
			cfg:         StatsConfig{Window: 2, Timeout: time.Hour},
			script:      "s1@0 s2@100 s3@200 r1@210 r2@220",
			transitions: "unknown->up@220",
			snap:        "state=up misses=0 succ=1 sent=3 recv=1 lost=1 late=0 dup=0 unk=1 loss=0.0 rtt=120ms srtt=120ms jitter=0s p50=120ms p99=120ms n=1"},
		{name: "silence: down after DownAfter probes and DownAfter x interval without a success",
			cfg:         StatsConfig{Interval: 100 * time.Millisecond},
			script:      "s0@0 r0@10" + sends(1, 6, 100) + " t@509 t@510",
			transitions: "unknown->up@10 up->down@510",
			snap:        "state=down misses=0 succ=0 sent=6 recv=1 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=10ms srtt=10ms jitter=0s p50=10ms p99=10ms n=1"},
		{name: "silence needs DownAfter probes, not only time",
			cfg:         StatsConfig{Interval: 100 * time.Millisecond},
			script:      "s0@0 r0@10 s1@100 s2@200 s3@300 s4@400 t@900",
			transitions: "unknown->up@10",
			snap:        "state=up misses=0 succ=1 sent=5 recv=1 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=10ms srtt=10ms jitter=0s p50=10ms p99=10ms n=1"},
		{name: "an RTT jump of 300ms is not silence",
			cfg:         StatsConfig{Interval: 100 * time.Millisecond},
			script:      "s0@0 r0@10 s1@100 s2@200 s3@300 r1@410 s4@400 r2@510 s5@500 r3@610 s6@600 r4@710 t@800",
			transitions: "unknown->up@10",
			snap:        "state=up misses=0 succ=5 sent=7 recv=5 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=310ms srtt=134.145508ms jitter=15.449524ms p50=310ms p99=310ms n=5"},
		{name: "silence from the start: unknown -> down",
			cfg:         StatsConfig{Interval: 100 * time.Millisecond},
			script:      sends(0, 5, 100) + " t@499 t@500",
			transitions: "unknown->down@500",
			snap:        "state=down misses=0 succ=0 sent=5 recv=0 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=0s srtt=0s jitter=0s p50=0s p99=0s n=0"},
		{name: "probes lost in an outage time out after recovery without breaking the success run",
			cfg:         StatsConfig{Interval: 100 * time.Millisecond},
			script:      "s0@0 r0@10" + sends(1, 11, 100) + " s11@1100 r11@1110 s12@1200 r12@1210 s13@1300 r13@1310",
			transitions: "unknown->up@10 up->down@600 down->up@1310",
			snap:        "state=up misses=0 succ=3 sent=14 recv=4 lost=3 late=0 dup=0 unk=0 loss=42.9 rtt=10ms srtt=10ms jitter=0s p50=10ms p99=10ms n=4"},
		{name: "a repeated Sent of a seq in the window is ignored",
			script:      "s1@0 s1@50 r1@60",
			transitions: "unknown->up@60",
			snap:        "state=up misses=0 succ=1 sent=1 recv=1 lost=0 late=0 dup=0 unk=0 loss=0.0 rtt=60ms srtt=60ms jitter=0s p50=60ms p99=60ms n=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Interval == 0 {
				// The per-probe timeout rules alone: no silence rule.
				tc.cfg.Interval = time.Hour
			}
			s := NewStats(tc.cfg)
			if got := runScript(t, s, tc.script); got != tc.transitions {
				t.Errorf("transitions\n got %q\nwant %q", got, tc.transitions)
			}
			if got := s.Snapshot().text(); got != tc.snap {
				t.Errorf("snapshot\n got %s\nwant %s", got, tc.snap)
			}
		})
	}
}

func TestTimeoutFor(t *testing.T) {
	for _, tc := range []struct{ interval, want time.Duration }{
		{20 * time.Millisecond, time.Second},
		{100 * time.Millisecond, time.Second},
		{time.Second, 3 * time.Second},
		{10 * time.Second, 30 * time.Second},
	} {
		if got := TimeoutFor(tc.interval); got != tc.want {
			t.Errorf("TimeoutFor(%v) = %v, want %v", tc.interval, got, tc.want)
		}
	}
}

// refPercentile is the textbook nearest-rank definition, by counting: the
// smallest sample v with at least p% of the samples <= v.
func refPercentile(xs []time.Duration, p int) time.Duration {
	var best time.Duration
	found := false
	for _, v := range xs {
		n := 0
		for _, x := range xs {
			if x <= v {
				n++
			}
		}
		if 100*n >= p*len(xs) && (!found || v < best) {
			best, found = v, true
		}
	}
	return best
}

type refEvent struct {
	at     time.Time
	send   bool
	seq    uint64
	refl   time.Duration
	finalT bool
}

// TestStatsAgainstReference feeds random traffic (loss, late, duplicate
// and reordered replies) to Stats and to an obvious model that keeps the
// whole history, then compares loss, percentiles, SRTT, jitter and totals.
func TestStatsAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		cfg := StatsConfig{Window: 1 + rng.IntN(40), Timeout: 300 * time.Millisecond}
		n := rng.IntN(120)
		var evs []refEvent
		for i := range n {
			sent := t0.Add(time.Duration(i*100) * time.Millisecond)
			evs = append(evs, refEvent{at: sent, send: true, seq: uint64(i)})
			replies := 1
			switch r := rng.IntN(10); {
			case r < 2:
				replies = 0
			case r < 3:
				replies = 2
			}
			for range replies {
				d := time.Duration(1+rng.IntN(500)) * time.Millisecond
				evs = append(evs, refEvent{at: sent.Add(d), seq: uint64(i), refl: time.Duration(rng.IntN(int(min(d, 5*time.Millisecond))))})
			}
		}
		end := t0.Add(time.Duration(n*100)*time.Millisecond + time.Hour)
		evs = append(evs, refEvent{at: end, finalT: true})
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })

		s := NewStats(cfg)
		sentAt := map[uint64]time.Time{}
		got := map[uint64]bool{} // seq answered in time
		var samples []time.Duration
		var late, dup, unknown uint64
		for _, ev := range evs {
			switch {
			case ev.finalT:
				s.Tick(ev.at)
			case ev.send:
				s.Sent(ev.seq, ev.at)
				sentAt[ev.seq] = ev.at
			default:
				s.Received(ev.seq, ev.at, ev.refl)
				d := ev.at.Sub(sentAt[ev.seq])
				switch {
				case int(ev.seq) < len(sentAt)-cfg.Window:
					unknown++ // pushed out of the window
				case got[ev.seq]:
					dup++
				case d >= cfg.Timeout:
					late++
				default:
					got[ev.seq] = true
					samples = append(samples, d-ev.refl)
				}
			}
		}
		sn := s.Snapshot()
		if sn.Late != late || sn.Unknown != unknown || sn.Duplicate != dup || sn.Received != uint64(len(samples)) || sn.Lost != uint64(n-len(samples)) || sn.Sent != uint64(n) {
			t.Fatalf("iter %d: totals %s; want late=%d unknown=%d dup=%d recv=%d lost=%d", iter, sn.text(), late, unknown, dup, len(samples), n-len(samples))
		}
		var lost, recv int
		for i := max(n-cfg.Window, 0); i < n; i++ {
			if got[uint64(i)] {
				recv++
			} else {
				lost++
			}
		}
		wantLoss := 0.0
		if lost+recv > 0 {
			wantLoss = 100 * float64(lost) / float64(lost+recv)
		}
		if math.Abs(sn.LossPct-wantLoss) > 1e-9 {
			t.Fatalf("iter %d: loss %v, want %v", iter, sn.LossPct, wantLoss)
		}
		last := samples[max(len(samples)-cfg.Window, 0):]
		for _, p := range []struct {
			got time.Duration
			p   int
		}{{sn.P50, 50}, {sn.P90, 90}, {sn.P99, 99}} {
			if want := refPercentile(slices.Clone(last), p.p); p.got != want {
				t.Fatalf("iter %d: p%d = %v, want %v (samples %v)", iter, p.p, p.got, want, last)
			}
		}
		var srtt, jit float64
		for i, x := range samples {
			if i == 0 {
				srtt = float64(x)
				continue
			}
			srtt = srtt*7/8 + float64(x)/8
			jit = jit*15/16 + math.Abs(float64(x-samples[i-1]))/16
		}
		if d := math.Abs(float64(sn.SRTT) - srtt); d > 1 {
			t.Fatalf("iter %d: srtt %v, want %v", iter, sn.SRTT, srtt)
		}
		if d := math.Abs(float64(sn.Jitter) - jit); d > 1 {
			t.Fatalf("iter %d: jitter %v, want %v", iter, sn.Jitter, jit)
		}
	}
}

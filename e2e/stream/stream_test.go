package stream

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

// rec builds a record sent at sentMS and received latMS later (ms after
// an arbitrary epoch).
func rec(seq uint64, sentMS, latMS int64) Record {
	return Record{Seq: seq, Sent: sentMS * ms, Recv: (sentMS + latMS) * ms}
}

// steady is a 2 ms stream (500 pps) of seqs [from, to) with latency lat.
func steady(from, to uint64, lat int64) []Record {
	var out []Record
	for s := from; s < to; s++ {
		out = append(out, rec(s, int64(s)*2, lat))
	}
	return out
}

func TestWireRoundTrip(t *testing.T) {
	buf := bytes.Repeat([]byte{0xff}, 64)
	p := Packet{ID: 7, Seq: 1<<40 + 3, Sent: -5}
	p.Encode(buf)
	got, err := Decode(buf)
	if err != nil || got != p {
		t.Fatalf("Decode(Encode(%+v)) = %+v, %v", p, got, err)
	}
	if !bytes.Equal(buf[HeaderLen:], make([]byte, 64-HeaderLen)) {
		t.Error("padding not zeroed")
	}
	for _, bad := range [][]byte{nil, buf[:HeaderLen-1], append([]byte("XWS1"), buf[4:]...)} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%x) accepted", bad)
		}
	}
}

func TestRecordFileAndTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r")
	all := steady(0, 5, 3)
	var b []byte
	for _, r := range all {
		b = AppendRecord(b, r)
	}
	// A partial record at the end is left for the next read.
	if err := os.WriteFile(path, b[:2*RecordLen+5], 0o644); err != nil {
		t.Fatal(err)
	}
	tail := Tail{Path: path}
	got, err := tail.Read()
	if err != nil || !slices.Equal(got, all[:2]) {
		t.Fatalf("first read: %v %v, want %v", got, err, all[:2])
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = tail.Read()
	if err != nil || !slices.Equal(got, all[2:]) {
		t.Fatalf("second read: %v %v, want %v", got, err, all[2:])
	}
	if got, _ := tail.Read(); len(got) != 0 {
		t.Fatalf("third read: %v, want nothing", got)
	}
}

func TestGapsAndSummary(t *testing.T) {
	// 500 pps; seqs 100..349 lost (a 500 ms outage), then 3 arrive out of
	// order and one twice.
	recs := steady(0, 100, 5)
	after := steady(350, 400, 20)
	after[1], after[2] = after[2], after[1] // 352 before 351
	recs = append(recs, after...)
	recs = append(recs, rec(360, 720, 20)) // duplicate
	recs = append(recs, steady(401, 410, 5)...)

	gaps := Gaps(recs)
	var got []string
	for _, g := range gaps {
		got = append(got, g.String())
	}
	want := []string{
		// 99 received at 198+5 ms, 350 at 700+20 ms: 517 ms.
		"502ms sent into it, 517ms at the receiver (seq 99..350, 250 lost)",
		// 399 received at 798+20 ms, 401 at 802+5 ms: negative, clamped.
		"4ms sent into it, 0s at the receiver (seq 399..401, 1 lost)",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("gaps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	l, ok := Longest(gaps)
	if !ok || l.Recv() != 517*time.Millisecond || l.Lost() != 250 || l.Send() != 502*time.Millisecond {
		t.Errorf("longest = %v", l)
	}
	if _, ok := Longest(nil); ok {
		t.Error("Longest(nil) found a gap")
	}
	// By send window: a 10 ms send window whose receive gap is long
	// because the packet after it took a slow path (+200 ms) loses to a
	// 30 ms hole on one path.
	slow := []Gap{
		{Before: rec(1, 0, 1), After: rec(7, 10, 201)},
		{Before: rec(10, 20, 1), After: rec(25, 50, 1)},
	}
	if g, _ := Longest(slow); g.After.Seq != 7 {
		t.Errorf("Longest by receive time = %v, want the one before seq 7", g)
	}
	if g, _ := LongestBy(slow, Gap.Send); g.After.Seq != 25 || g.Send() != 30*time.Millisecond {
		t.Errorf("LongestBy(Send) = %v, want the one before seq 25", g)
	}

	s := Summarize(recs)
	if s.Received != 159 || s.Duplicates != 1 || s.Reordered != 1 || s.FirstSeq != 0 || s.LastSeq != 409 || s.Lost != 251 || s.Gaps != 2 {
		t.Errorf("summary = %+v", s)
	}
	// 109 at 5 ms, 50 at 20 ms: p50 5 ms, p90 20 ms.
	if s.Latency.P50 != 5*time.Millisecond || s.Latency.P90 != 20*time.Millisecond || s.Latency.Max != 20*time.Millisecond || s.Latency.N != 159 {
		t.Errorf("latency = %v", s.Latency)
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("Summarize(nil) not zero")
	}
	if g := Gaps(steady(0, 50, 1)); len(g) != 0 {
		t.Errorf("no loss, gaps %v", g)
	}
}

func TestPercentile(t *testing.T) {
	d := func(vs ...int) []time.Duration {
		var out []time.Duration
		for _, v := range vs {
			out = append(out, time.Duration(v))
		}
		return out
	}
	twenty := d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
	for _, tc := range []struct {
		vals []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{d(7), 1, 7},
		{d(7), 100, 7},
		{d(1, 2), 50, 1},
		{d(1, 2, 3), 50, 2},
		{d(1, 2, 3, 4), 50, 2},
		{twenty, 50, 10},
		{twenty, 95, 19},
		{twenty, 99, 20}, // nearest rank: p99 of 20 is the maximum
		{twenty, 100, 20},
		{twenty, 0.1, 1},
	} {
		if got := Percentile(tc.vals, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.vals, tc.p, got, tc.want)
		}
	}
	p := PercentilesOf(d(5, 1, 4, 2, 3))
	if p != (Percentiles{N: 5, P50: 3, P90: 5, P99: 5, Max: 5}) {
		t.Errorf("PercentilesOf = %+v", p)
	}
}

func TestSentBetween(t *testing.T) {
	recs := steady(0, 10, 1) // sent at 0, 2, ..., 18 ms
	at := func(m int64) time.Time { return time.Unix(0, m*ms) }
	var seqs []uint64
	for _, r := range SentBetween(recs, at(4), at(10)) {
		seqs = append(seqs, r.Seq)
	}
	if !slices.Equal(seqs, []uint64{2, 3, 4}) {
		t.Errorf("SentBetween [4ms,10ms) = %v", seqs)
	}
	if n := len(SentBetween(recs, time.Time{}, at(3))); n != 2 {
		t.Errorf("open start: %d records", n)
	}
	if n := len(SentBetween(recs, at(15), time.Time{})); n != 2 {
		t.Errorf("open end: %d records", n)
	}
}

func TestFirstSustained(t *testing.T) {
	fast := func(r Record) bool { return r.Latency() < 25*time.Millisecond }
	at := func(m int64) time.Time { return time.Unix(0, m*ms) }
	// 0..99 slow (60 ms), one fast outlier at 50, then fast from 100 on
	// with one slow spike at 130.
	var recs []Record
	for s := uint64(0); s < 300; s++ {
		lat := int64(60)
		if s >= 100 || s == 50 {
			lat = 5
		}
		if s == 130 {
			lat = 90
		}
		recs = append(recs, rec(s, int64(s)*2, lat))
	}
	slices.Reverse(recs) // order must not matter
	r, ok := FirstSustained(recs, at(0), fast, 100*time.Millisecond, 0.9)
	if !ok || r.Seq != 100 {
		t.Errorf("FirstSustained = %v %v, want seq 100", r, ok)
	}
	// Strict (frac 1): the spike at 130 pushes it past 130.
	if r, ok := FirstSustained(recs, at(0), fast, 100*time.Millisecond, 1); !ok || r.Seq != 131 {
		t.Errorf("strict FirstSustained = %v %v, want seq 131", r, ok)
	}
	// from excludes earlier packets.
	if r, ok := FirstSustained(recs, at(400), fast, 100*time.Millisecond, 0.9); !ok || r.Seq != 200 {
		t.Errorf("FirstSustained from 400ms = %v %v, want seq 200", r, ok)
	}
	// The window after the candidate is not over: no answer yet.
	if _, ok := FirstSustained(steady(0, 10, 5), at(0), fast, time.Second, 0.9); ok {
		t.Error("answered before the window was over")
	}
	if _, ok := FirstSustained(steady(0, 100, 60), at(0), fast, 10*time.Millisecond, 0.5); ok {
		t.Error("found a fast packet in a slow stream")
	}
}

// TestSendReceiveLoopback runs the real sender and receiver over UDP on
// loopback (no privileges needed).
func TestSendReceiveLoopback(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skipf("no loopback UDP: %v", err)
	}
	defer rc.Close()
	sc, err := net.ListenUDP("udp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := SetDSCP(sc, 46); err != nil {
		t.Fatalf("SetDSCP: %v", err)
	}
	if err := SetDSCP(sc, 64); err == nil {
		t.Error("SetDSCP(64) accepted")
	}
	// A foreign packet and a packet of another stream are ignored.
	other := make([]byte, HeaderLen)
	Packet{ID: 9}.Encode(other)
	dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()
	sc.WriteToUDP([]byte("hello"), net.UDPAddrFromAddrPort(dst))
	sc.WriteToUDP(other, net.UDPAddrFromAddrPort(dst))

	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		n, _ := Receive(ctx, rc, &out, RecvConfig{ID: 3, Flush: 10 * time.Millisecond})
		done <- n
	}()
	res, err := Send(context.Background(), sc, SendConfig{Dst: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dst.Port()), Rate: 1000, Size: 60, ID: 3, Count: 200})
	if err != nil || res.Sent != 200 {
		t.Fatalf("Send = %v, %v", res, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, _ := ParseRecords(out.Bytes())
		if len(recs) == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	n := <-done
	recs, _ := ParseRecords(out.Bytes())
	s := Summarize(recs)
	if n != 200 || s.Received != 200 || s.FirstSeq != 0 || s.LastSeq != 199 || s.Lost != 0 {
		t.Fatalf("received %d: %v", n, s)
	}
	// 200 packets at 1000 pps take ~199 ms.
	if span := time.Duration(recs[len(recs)-1].Sent - recs[0].Sent); span < 190*time.Millisecond || span > 5*time.Second {
		t.Errorf("200 packets at 1000 pps sent over %v", span)
	}
	t.Log(s, "; ", res)
}

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

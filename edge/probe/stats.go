package probe

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// State is a tunnel's liveness.
type State uint8

// Liveness states. A tunnel starts Unknown and leaves it on its first
// success (Up) or after DownAfter consecutive misses (Down).
const (
	StateUnknown State = iota
	StateUp
	StateDown
)

func (s State) String() string {
	switch s {
	case StateUnknown:
		return "unknown"
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Transition is a change of liveness state, at the time it was detected.
type Transition struct {
	From, To State
	At       time.Time
}

// StatsConfig configures Stats; zero fields take the defaults.
type StatsConfig struct {
	Window    int           // probes and RTT samples kept; default 100
	Timeout   time.Duration // a probe unanswered this long is lost; default 1s
	DownAfter int           // consecutive misses that take a tunnel down; default 5
	UpAfter   int           // consecutive successes that bring it up again; default 3
	// Interval is the probe interval; with DownAfter it sets the silence
	// that takes a tunnel down (DownAfter x Interval). Default 100 ms.
	Interval time.Duration
}

// Defaults of StatsConfig.
const (
	DefaultWindow    = 100
	DefaultTimeout   = time.Second
	DefaultDownAfter = 5
	DefaultUpAfter   = 3
)

// TimeoutFor is the loss timeout for a probe interval: 1 s or three
// intervals, whichever is larger.
func TimeoutFor(interval time.Duration) time.Duration {
	return max(DefaultTimeout, 3*interval)
}

func (c StatsConfig) withDefaults() StatsConfig {
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.DownAfter <= 0 {
		c.DownAfter = DefaultDownAfter
	}
	if c.UpAfter <= 0 {
		c.UpAfter = DefaultUpAfter
	}
	if c.Interval <= 0 {
		c.Interval = 100 * time.Millisecond
	}
	return c
}

// Snapshot is a copy of a tunnel's statistics.
type Snapshot struct {
	State          State
	LastTransition Transition // zero if none yet

	RTT      time.Duration // latest sample
	SRTT     time.Duration // EWMA, alpha 1/8
	P50, P90 time.Duration // nearest-rank, over the last Window samples
	P99      time.Duration
	Jitter   time.Duration // RFC 3550 interarrival jitter of the RTT
	Samples  int           // RTT samples in the window
	LossPct  float64       // lost / (lost + received) among the last Window probes sent, 0..100

	ConsecutiveMisses    int
	ConsecutiveSuccesses int

	// Totals since the Stats was created.
	Sent, Received, Lost, Late, Duplicate, Unknown uint64
	Transitions                                    uint64
}

type probeStatus uint8

const (
	pending probeStatus = iota
	received
	lost
)

type probeRecord struct {
	seq    uint64
	sentAt time.Time
	status probeStatus
}

// Stats holds one tunnel's probe statistics and liveness. It is pure: no
// I/O and no clock reads; every call passes the time. Times passed in must
// not decrease from call to call. Stats is not safe for concurrent use.
//
// Rules (the tests name them):
//   - a probe is lost once Timeout has passed since it was sent without a
//     reply (age >= Timeout), checked on every call; a reply after that is
//     Late and changes nothing else; a probe pushed out of the window while
//     still pending is lost at that moment;
//   - a second reply to a probe is a Duplicate; a reply to a sequence not in
//     the window (never sent, or pushed out) is Unknown;
//   - successes and misses are counted in the order they are decided; a
//     success resets the miss run and vice versa, except that a probe
//     sent before the latest answered one is old news when it times out:
//     it counts as lost but neither extends a miss run nor breaks a
//     success run (otherwise the probes lost during an outage, timing
//     out for a whole Timeout after the path came back, would hold the
//     tunnel down that long);
//   - Unknown -> Up on the first success; Down -> Up after UpAfter
//     consecutive successes;
//   - Unknown or Up -> Down after DownAfter consecutive misses, or sooner
//     on silence: at least DownAfter probes sent since the last success
//     (or since the first probe, if none succeeded) and no success for
//     DownAfter x Interval. Silence is what makes failover fast: waiting
//     for DownAfter probes to time out would take Timeout (1 s) longer.
//     Replies keep arriving every Interval on a path whose RTT merely
//     grew, so silence tolerates an RTT jump of up to (DownAfter-1) x
//     Interval without a false down, where a per-probe miss timeout of
//     one interval would not;
//   - at most one transition per call.
type Stats struct {
	cfg StatsConfig

	probes []probeRecord   // ring of the last Window probes sent, oldest at head
	head   int             // index of the oldest probe when len(probes) == Window
	bySeq  map[uint64]int  // seq -> index in probes, for probes in the ring
	rtts   []time.Duration // ring of the last Window RTT samples
	// lastOK is the time of the last success, or of the first probe when
	// none has succeeded; sinceOK counts the probes sent since then.
	lastOK     time.Time
	sinceOK    int
	lastOKSent time.Time     // send time of the latest answered probe
	rttAt      int           // next slot in rtts once full
	snap       Snapshot      // counters, state and estimators
	srtt       float64       // ns
	jitter     float64       // ns
	prev       time.Duration // previous RTT sample, for jitter
}

// NewStats returns empty statistics in state Unknown.
func NewStats(cfg StatsConfig) *Stats {
	cfg = cfg.withDefaults()
	return &Stats{cfg: cfg, bySeq: make(map[uint64]int, cfg.Window)}
}

// Config returns the configuration in use, defaults filled in.
func (s *Stats) Config() StatsConfig { return s.cfg }

// Sent records probe seq sent at the given time. A seq already in the
// window is ignored.
func (s *Stats) Sent(seq uint64, at time.Time) (Transition, bool) {
	tr, ok := s.expire(at)
	if _, dup := s.bySeq[seq]; dup {
		return tr, ok
	}
	s.snap.Sent++
	if s.lastOK.IsZero() {
		s.lastOK = at
	}
	s.sinceOK++
	if t, changed := s.silence(at); changed {
		tr, ok = t, true
	}
	rec := probeRecord{seq: seq, sentAt: at}
	if len(s.probes) < s.cfg.Window {
		s.bySeq[seq] = len(s.probes)
		s.probes = append(s.probes, rec)
		return tr, ok
	}
	old := &s.probes[s.head]
	if old.status == pending {
		// Only when Timeout exceeds Window intervals.
		old.status = lost
		if t, changed := s.miss(at, old.sentAt); changed {
			tr, ok = t, true
		}
	}
	delete(s.bySeq, old.seq)
	*old = rec
	s.bySeq[seq] = s.head
	s.head = (s.head + 1) % s.cfg.Window
	return tr, ok
}

// Received records a reply to probe seq arriving at recvAt, with the time
// the reflector held it. The RTT is measured from the recorded send time,
// not from a timestamp echoed by the far end, which cannot therefore
// forge it.
func (s *Stats) Received(seq uint64, recvAt time.Time, reflectorDelay time.Duration) (Transition, bool) {
	tr, ok := s.expire(recvAt)
	i, known := s.bySeq[seq]
	if !known {
		s.snap.Unknown++
		return tr, ok
	}
	rec := &s.probes[i]
	switch rec.status {
	case received:
		s.snap.Duplicate++
		return tr, ok
	case lost:
		s.snap.Late++
		return tr, ok
	}
	rec.status = received
	s.snap.Received++
	rtt := max(recvAt.Sub(rec.sentAt)-max(reflectorDelay, 0), 0)
	s.sample(rtt)
	if rec.sentAt.After(s.lastOKSent) {
		s.lastOKSent = rec.sentAt
	}
	if t, changed := s.success(recvAt); changed {
		tr, ok = t, true
	}
	return tr, ok
}

// Tick declares lost the probes that have timed out by now and applies
// the silence rule.
func (s *Stats) Tick(now time.Time) (Transition, bool) {
	tr, ok := s.expire(now)
	if t, changed := s.silence(now); changed {
		tr, ok = t, true
	}
	return tr, ok
}

// silence takes the tunnel down when DownAfter probes went out since the
// last success and nothing succeeded for DownAfter x Interval.
func (s *Stats) silence(now time.Time) (Transition, bool) {
	if s.snap.State == StateDown || s.sinceOK < s.cfg.DownAfter || s.lastOK.IsZero() {
		return Transition{}, false
	}
	if now.Sub(s.lastOK) < time.Duration(s.cfg.DownAfter)*s.cfg.Interval {
		return Transition{}, false
	}
	s.snap.ConsecutiveSuccesses = 0
	return s.move(StateDown, now), true
}

// expire marks timed-out probes lost, oldest first.
func (s *Stats) expire(now time.Time) (tr Transition, ok bool) {
	for k := range s.probes {
		rec := &s.probes[(s.head+k)%len(s.probes)]
		if rec.status != pending {
			continue
		}
		if now.Sub(rec.sentAt) < s.cfg.Timeout {
			break // sent times do not decrease along the ring
		}
		rec.status = lost
		if t, changed := s.miss(now, rec.sentAt); changed {
			tr, ok = t, true
		}
	}
	return tr, ok
}

func (s *Stats) sample(rtt time.Duration) {
	if s.snap.Received == 1 {
		s.srtt = float64(rtt)
	} else {
		s.srtt += (float64(rtt) - s.srtt) / 8
		d := math.Abs(float64(rtt - s.prev))
		s.jitter += (d - s.jitter) / 16
	}
	s.prev = rtt
	s.snap.RTT = rtt
	if len(s.rtts) < s.cfg.Window {
		s.rtts = append(s.rtts, rtt)
	} else {
		s.rtts[s.rttAt] = rtt
		s.rttAt = (s.rttAt + 1) % s.cfg.Window
	}
}

func (s *Stats) success(at time.Time) (Transition, bool) {
	s.lastOK, s.sinceOK = at, 0
	s.snap.ConsecutiveMisses = 0
	s.snap.ConsecutiveSuccesses++
	switch {
	case s.snap.State == StateUnknown,
		s.snap.State == StateDown && s.snap.ConsecutiveSuccesses >= s.cfg.UpAfter:
		return s.move(StateUp, at), true
	}
	return Transition{}, false
}

func (s *Stats) miss(at, sentAt time.Time) (Transition, bool) {
	s.snap.Lost++
	if sentAt.Before(s.lastOKSent) {
		return Transition{}, false // old news, see the rules
	}
	s.snap.ConsecutiveSuccesses = 0
	s.snap.ConsecutiveMisses++
	if s.snap.State != StateDown && s.snap.ConsecutiveMisses >= s.cfg.DownAfter {
		return s.move(StateDown, at), true
	}
	return Transition{}, false
}

func (s *Stats) move(to State, at time.Time) Transition {
	tr := Transition{From: s.snap.State, To: to, At: at}
	s.snap.State = to
	s.snap.LastTransition = tr
	s.snap.Transitions++
	return tr
}

// Snapshot returns the current statistics.
func (s *Stats) Snapshot() Snapshot {
	out := s.snap
	out.SRTT = time.Duration(math.Round(s.srtt))
	out.Jitter = time.Duration(math.Round(s.jitter))
	out.Samples = len(s.rtts)
	if len(s.rtts) > 0 {
		sorted := slices.Clone(s.rtts)
		slices.Sort(sorted)
		out.P50, out.P90, out.P99 = percentile(sorted, 50), percentile(sorted, 90), percentile(sorted, 99)
	}
	var nLost, nRecv int
	for _, rec := range s.probes {
		switch rec.status {
		case lost:
			nLost++
		case received:
			nRecv++
		}
	}
	if nLost+nRecv > 0 {
		out.LossPct = 100 * float64(nLost) / float64(nLost+nRecv)
	}
	return out
}

// percentile is the nearest-rank percentile of a sorted, non-empty slice:
// the smallest value with at least p% of the values at or below it.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

package steer

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
)

// refChoose is the slow, obvious statement of the undamped choice:
//  1. the tunnels meeting the SLA: usable, and each non-zero bound holds;
//  2. if any, the most preferred: lowest position of its transport in
//     sla.Transports (unlisted: after all listed), then transport name,
//     then tunnel ID;
//  3. else among the usable ones the smallest total relative excess,
//     ties by the same preference;
//  4. else none.
func refChoose(ts []dataplane.Tunnel, sla dataplane.SLA, health map[string]Health) string {
	before := refBefore(sla)
	meetsRef := func(h Health) bool { return refMeets(h, sla, 1) }
	excessRef := func(h Health) float64 {
		e := 0.0
		for _, vb := range [][2]float64{{float64(h.RTT), float64(sla.MaxRTT)}, {h.LossPct, sla.MaxLossPct}, {float64(h.Jitter), float64(sla.MaxJitter)}} {
			if vb[1] > 0 && vb[0] > vb[1] {
				e += (vb[0] - vb[1]) / vb[1]
			}
		}
		return e
	}
	var best *dataplane.Tunnel
	for i := range ts {
		if meetsRef(health[ts[i].ID]) && (best == nil || before(ts[i], *best)) {
			best = &ts[i]
		}
	}
	if best != nil {
		return best.ID
	}
	for i := range ts {
		h := health[ts[i].ID]
		if !h.Usable {
			continue
		}
		if best == nil {
			best = &ts[i]
			continue
		}
		e, be := excessRef(h), excessRef(health[best.ID])
		if e < be || (e == be && before(ts[i], *best)) {
			best = &ts[i]
		}
	}
	if best == nil {
		return ""
	}
	return best.ID
}

// refMeets: usable, and every non-zero bound, scaled, holds.
func refMeets(h Health, sla dataplane.SLA, scale float64) bool {
	ok := func(v, bound float64) bool { return bound == 0 || v <= bound*scale }
	return h.Usable && ok(float64(h.RTT), float64(sla.MaxRTT)) && ok(h.LossPct, sla.MaxLossPct) && ok(float64(h.Jitter), float64(sla.MaxJitter))
}

// refBefore is the preference: a before b.
func refBefore(sla dataplane.SLA) func(a, b dataplane.Tunnel) bool {
	position := func(t dataplane.Tunnel) int {
		for i, tr := range sla.Transports {
			if tr == t.LocalTransport {
				return i
			}
		}
		return 1 << 30
	}
	return func(a, b dataplane.Tunnel) bool {
		if position(a) != position(b) {
			return position(a) < position(b)
		}
		if a.LocalTransport != b.LocalTransport {
			return a.LocalTransport < b.LocalTransport
		}
		return a.ID < b.ID
	}
}

// refOrder sorts by refBefore, by insertion.
func refOrder(ts []dataplane.Tunnel, sla dataplane.SLA) []dataplane.Tunnel {
	before := refBefore(sla)
	out := slices.Clone(ts)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && before(out[j], out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

type randomWorld struct {
	d      dataplane.Desired
	dests  []Dest
	health map[string]Health
}

func newRandomWorld(r *rand.Rand) randomWorld {
	transports := []string{"inet1", "inet2", "lte", "mpls"}
	sites := []string{"b", "c", "h1", "h2"}
	var w randomWorld
	n := 1 + r.IntN(6)
	for i := range n {
		w.d.Tunnels = append(w.d.Tunnels, dataplane.Tunnel{
			ID:             fmt.Sprintf("t%d", r.IntN(20)*100+i), // random order of IDs
			LinkName:       fmt.Sprintf("mw-%d", i),
			RemoteSite:     sites[r.IntN(len(sites))],
			LocalTransport: transports[r.IntN(len(transports))],
			RemoteInner:    netip.AddrFrom4([4]byte{10, 255, 0, byte(4*i + 2)}),
		})
	}
	bound := func(max time.Duration) time.Duration {
		if r.IntN(3) == 0 {
			return 0
		}
		return time.Duration(1+r.IntN(10)) * max / 10
	}
	for s := range 2 {
		sla := dataplane.SLA{Name: fmt.Sprintf("sla%d", s), MaxRTT: bound(200 * ms), MaxJitter: bound(50 * ms)}
		if r.IntN(3) > 0 {
			sla.MaxLossPct = float64(1 + r.IntN(5))
		}
		for _, i := range r.Perm(len(transports))[:r.IntN(len(transports)+1)] {
			sla.Transports = append(sla.Transports, transports[i])
		}
		w.d.Paths.SLAs = append(w.d.Paths.SLAs, sla)
	}
	for c := range 1 + r.IntN(3) {
		w.d.Paths.Classes = append(w.d.Paths.Classes, dataplane.TrafficClass{Name: fmt.Sprintf("class%d", c), SLA: fmt.Sprintf("sla%d", r.IntN(2))})
	}
	for p := range 1 + r.IntN(4) {
		var ids []string
		for _, t := range w.d.Tunnels {
			if r.IntN(2) == 0 {
				ids = append(ids, t.ID)
			}
		}
		w.dests = append(w.dests, Dest{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(p), 0, 0}), 16), Tunnels: ids})
	}
	w.health = map[string]Health{}
	for _, t := range w.d.Tunnels {
		if r.IntN(6) == 0 {
			continue // no health at all
		}
		w.health[t.ID] = Health{Usable: r.IntN(4) > 0, RTT: time.Duration(r.IntN(300)) * ms,
			Jitter: time.Duration(r.IntN(60)) * ms, LossPct: float64(r.IntN(8))}
	}
	return w
}

// refPlan computes the undamped plan's choices with refChoose, grouping by
// hand.
func refPlan(w randomWorld) []Choice {
	byID := map[string]dataplane.Tunnel{}
	for _, t := range w.d.Tunnels {
		byID[t.ID] = t
	}
	var out []Choice
	for _, c := range w.d.Paths.Classes {
		var sla dataplane.SLA
		for _, s := range w.d.Paths.SLAs {
			if s.Name == c.SLA {
				sla = s
			}
		}
		groups := map[string][]dataplane.Tunnel{}
		for _, d := range w.dests {
			var sites []string
			for _, id := range d.Tunnels {
				if !slices.Contains(sites, byID[id].RemoteSite) {
					sites = append(sites, byID[id].RemoteSite)
				}
			}
			if len(sites) == 0 {
				continue
			}
			slices.Sort(sites)
			key := ""
			for i, s := range sites {
				if i > 0 {
					key += "+"
				}
				key += s
			}
			for _, id := range d.Tunnels {
				if !slices.ContainsFunc(groups[key], func(t dataplane.Tunnel) bool { return t.ID == id }) {
					groups[key] = append(groups[key], byID[id])
				}
			}
		}
		var keys []string
		for k := range groups {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			id := refChoose(groups[k], sla, w.health)
			meets := false
			if id != "" {
				meets = meets || refChoose([]dataplane.Tunnel{byID[id]}, dataplane.SLA{
					MaxRTT: sla.MaxRTT, MaxLossPct: sla.MaxLossPct, MaxJitter: sla.MaxJitter}, w.health) == id && excess(w.health[id], sla) == 0
			}
			out = append(out, Choice{Class: c.Name, RemoteSite: k, TunnelID: id, MeetsSLA: meets})
		}
	}
	return out
}

// TestDecideMatchesReference: on random worlds, a fresh Steerer's first
// plan (and every plan with Damping 0) has the reference's choices; every
// route goes via its group's choice when the destination lists it; and
// two Steerers fed the same sequence give identical plans (no map order
// leaks into a plan).
func TestDecideMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 1500 {
		w := newRandomWorld(r)
		s1, s2 := New(), New()
		for round := range 3 {
			if round > 0 {
				w.health = newRandomWorld(r).health // new numbers, possibly for unknown IDs
				for _, tn := range w.d.Tunnels {
					if _, ok := w.health[tn.ID]; !ok && r.IntN(2) == 0 {
						w.health[tn.ID] = Health{Usable: true, RTT: time.Duration(r.IntN(300)) * ms}
					}
				}
			}
			now := time.Unix(int64(1000+round), 0)
			p := s1.Decide(now, w.d, w.dests, w.health)
			want := refPlan(w)
			if got := fmt.Sprint(p.Choices); got != fmt.Sprint(want) {
				t.Fatalf("world %d round %d: choices\n%v\nwant\n%v\nworld %+v\ndests %v\nhealth %v", i, round, got, want, w.d, w.dests, w.health)
			}
			if p2 := s2.Decide(now, w.d, w.dests, w.health); planText(p2) != planText(p) {
				t.Fatalf("world %d: two Steerers disagree:\n%s\n%s", i, planText(p), planText(p2))
			}
			for ci, tb := range p.Tables {
				for _, rt := range tb.Routes {
					if rt.TunnelID == "" || rt.Link == "" || !rt.Gw.IsValid() {
						t.Fatalf("world %d: incomplete route %+v", i, rt)
					}
					if h := w.health[rt.TunnelID]; !h.Usable {
						t.Fatalf("world %d: class %d routed via unusable %s", i, ci, rt.TunnelID)
					}
				}
			}
		}
	}
}

// TestDampingZeroIsUndamped: with Damping 0, every Decide is the fresh
// choice, whatever came before.
func TestDampingZeroIsUndamped(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		w := newRandomWorld(r)
		s := New()
		for round := range 10 {
			w.health = newRandomWorld(r).health
			for _, tn := range w.d.Tunnels {
				w.health[tn.ID] = Health{Usable: r.IntN(4) > 0, RTT: time.Duration(r.IntN(300)) * ms, LossPct: float64(r.IntN(4))}
			}
			p := s.Decide(time.Unix(int64(round), 0), w.d, w.dests, w.health)
			if got, want := fmt.Sprint(p.Choices), fmt.Sprint(refPlan(w)); got != want {
				t.Fatalf("world %d round %d: %s, want %s", i, round, got, want)
			}
		}
	}
}

// sample is one health sample as the damping reference records it.
type sample struct {
	at        time.Time
	meets     bool // the SLA holds
	qualifies bool // the SLA holds with every bound at Hysteresis of itself
}

// refDampedChoice states the damping rules once more, from the raw sample
// history of every tunnel (newest last) instead of running state:
//   - current unusable or none: the fresh choice;
//   - else the first candidate more preferred than current whose samples
//     over the last Damping (at least one sample that old) all qualify;
//   - else current if its last sample meets, or if some sample within the
//     last Damping met (it has not failed for Damping);
//   - else the fresh choice if it meets; else the fresh choice if it differs,
//     has a smaller excess and current was chosen Damping ago; else current.
func refDampedChoice(now time.Time, cur string, curSince time.Time, cands []dataplane.Tunnel, sla dataplane.SLA,
	hist map[string][]sample, health map[string]Health) string {
	cands = refOrder(cands, sla)
	fresh := refChoose(cands, sla, health)
	if cur == "" || !health[cur].Usable || !slices.ContainsFunc(cands, func(t dataplane.Tunnel) bool { return t.ID == cur }) {
		return fresh
	}
	// all reports whether every sample of id from the one at or before
	// now-Damping on satisfies f.
	all := func(id string, f func(sample) bool) bool {
		ss := hist[id]
		for i := len(ss) - 1; i >= 0; i-- {
			if !f(ss[i]) {
				return false
			}
			if now.Sub(ss[i].at) >= sla.Damping {
				return true
			}
		}
		return false
	}
	for _, t := range cands {
		if t.ID == cur {
			break
		}
		if all(t.ID, func(s sample) bool { return s.qualifies }) {
			return t.ID
		}
	}
	if !all(cur, func(s sample) bool { return !s.meets }) {
		return cur
	}
	if fresh != "" && hist[fresh][len(hist[fresh])-1].meets {
		return fresh
	}
	if fresh != cur && now.Sub(curSince) >= sla.Damping && excess(health[fresh], sla) < excess(health[cur], sla) {
		return fresh
	}
	return cur
}

// TestDampingMatchesReference: random walks of health around the bounds
// of one class towards one site, checked step by step against
// refDampedChoice; and a class is never on an unusable tunnel.
func TestDampingMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	transports := []string{"inet1", "inet2", "lte"}
	moves := 0
	for i := range 400 {
		var d dataplane.Desired
		n := 2 + r.IntN(3)
		for j := range n {
			d.Tunnels = append(d.Tunnels, dataplane.Tunnel{ID: fmt.Sprintf("t%d", r.IntN(9)*10+j), LinkName: fmt.Sprintf("mw-%d", j),
				RemoteSite: "b", LocalTransport: transports[r.IntN(len(transports))], RemoteInner: netip.AddrFrom4([4]byte{10, 255, 0, byte(4*j + 2)})})
		}
		sla := dataplane.SLA{Name: "s", MaxRTT: 100 * ms, Damping: time.Duration(1+r.IntN(3)) * time.Second}
		if r.IntN(2) == 0 {
			sla.MaxLossPct = 2
		}
		for _, j := range r.Perm(len(transports))[:r.IntN(len(transports)+1)] {
			sla.Transports = append(sla.Transports, transports[j])
		}
		d.Paths.SLAs = []dataplane.SLA{sla}
		d.Paths.Classes = []dataplane.TrafficClass{{Name: "c", SLA: "s"}}
		dests := []Dest{{Prefix: pfx("10.1.0.0/16")}}
		for _, tn := range d.Tunnels {
			dests[0].Tunnels = append(dests[0].Tunnels, tn.ID)
		}
		health := map[string]Health{}
		for _, tn := range d.Tunnels {
			health[tn.ID] = Health{Usable: r.IntN(5) > 0, RTT: time.Duration(50+r.IntN(100)) * ms, LossPct: float64(r.IntN(4))}
		}
		s := New()
		hist := map[string][]sample{}
		cur, curSince := "", time.Time{}
		now := time.Unix(1000, 0)
		for step := range 80 {
			now = now.Add(time.Duration(100+r.IntN(600)) * ms)
			for _, tn := range d.Tunnels {
				h := health[tn.ID]
				h.RTT = max(0, h.RTT+time.Duration(r.IntN(41)-20)*ms)
				h.LossPct = max(0, h.LossPct+float64(r.IntN(3)-1)*0.5)
				if r.IntN(25) == 0 {
					h.Usable = !h.Usable
				}
				health[tn.ID] = h
				hist[tn.ID] = append(hist[tn.ID], sample{at: now, meets: refMeets(h, sla, 1), qualifies: refMeets(h, sla, 0.9)})
			}
			want := refDampedChoice(now, cur, curSince, d.Tunnels, sla, hist, health)
			p := s.Decide(now, d, dests, health)
			got := p.Choices[0].TunnelID
			if got != want {
				t.Fatalf("world %d step %d at %v: chose %q, reference %q (current %q since %v)\nsla %+v\nhealth %v",
					i, step, now.Sub(time.Unix(1000, 0)), got, want, cur, now.Sub(curSince), sla, health)
			}
			if got != "" && !health[got].Usable {
				t.Fatalf("world %d: on unusable %s", i, got)
			}
			if got != cur {
				moves++
				cur, curSince = got, now
			}
		}
	}
	t.Logf("%d moves", moves)
	if moves < 500 {
		t.Errorf("only %d moves in all walks: the walks do not exercise damping", moves)
	}
}

package agent

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/probe"
)

// TestTracker drives the path state machine through a script of inputs
// (probe transitions, SA listings, time) and checks the view after each.
func TestTracker(t *testing.T) {
	d := twoTransports()
	d.Paths.HoldDown = 2 * time.Second
	t0 := time.Unix(1000, 0)
	pair := func(i int) [2]netip.Addr {
		return [2]netip.Addr{d.Tunnels[i].LocalUnderlay, d.Tunnels[i].RemoteUnderlay}
	}
	all := map[[2]netip.Addr]bool{pair(0): true, pair(1): true, pair(2): true}
	noT1 := map[[2]netip.Addr]bool{pair(1): true, pair(2): true}

	type in struct {
		at   time.Duration
		ev   string // "t1 up", "t1 down"
		sas  map[[2]netip.Addr]bool
		want string // usable list, then fallback ranks of the others, then hold-downs
	}
	for _, tc := range []struct {
		name   string
		script []in
	}{
		{"fresh edge: first up has no hold-down; no SA, no use", []in{
			{at: 0, want: "usable [] fallback [] hold []"},
			{at: 0, ev: "t1 up", want: "usable [] fallback [] hold []"},
			{at: 0, sas: all, want: "usable [t1] fallback [] hold []"},
			{at: 0, ev: "t2 up", want: "usable [t1 t2] fallback [] hold []"},
		}},
		{"down then up: hold-down, ranked first while in it", []in{
			{at: 0, sas: all},
			{at: 0, ev: "t1 up"},
			{at: 0, ev: "t2 up", want: "usable [t1 t2] fallback [] hold []"},
			{at: time.Second, ev: "t1 down", want: "usable [t2] fallback [t1=1001] hold []"},
			{at: 3 * time.Second, ev: "t1 up", want: "usable [t2] fallback [t1=max] hold [t1]"},
			{at: 4999 * time.Millisecond, want: "usable [t2] fallback [t1=max] hold [t1]"},
			{at: 5 * time.Second, want: "usable [t1 t2] fallback [] hold []"},
		}},
		{"the SA going away takes a tunnel out; its return is a recovery", []in{
			{at: 0, sas: all},
			{at: 0, ev: "t1 up", want: "usable [t1] fallback [] hold []"},
			{at: time.Second, sas: noT1, want: "usable [] fallback [t1=1001] hold []"},
			{at: 2 * time.Second, sas: all, want: "usable [] fallback [t1=max] hold [t1]"},
			{at: 4 * time.Second, want: "usable [t1] fallback [] hold []"},
		}},
		{"the most recently usable ranks above an older one", []in{
			{at: 0, sas: all},
			{at: 0, ev: "t1 up"},
			{at: 0, ev: "t2 up"},
			{at: time.Second, ev: "t1 down"},
			{at: 2 * time.Second, ev: "t2 down", want: "usable [] fallback [t1=1001 t2=1002] hold []"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := NewTracker()
			k.SetDesired(d)
			for i, step := range tc.script {
				now := t0.Add(step.at)
				if step.sas != nil {
					k.SAs(now, step.sas)
				}
				if step.ev != "" {
					id, to, _ := strings.Cut(step.ev, " ")
					st := probe.StateDown
					if to == "up" {
						st = probe.StateUp
					}
					k.Event(probe.Event{Tunnel: id, Transition: probe.Transition{To: st, At: now}})
				}
				v, h := k.View(now, d, nil, nil)
				if step.want == "" {
					continue
				}
				var fb, hold []string
				for _, id := range []string{"t1", "t2", "t3"} {
					switch r, ok := v.Fallback[id]; {
					case !ok:
					case r == math.MaxInt64:
						fb = append(fb, id+"=max")
					default:
						fb = append(fb, fmt.Sprintf("%s=%d", id, r/int64(time.Second)))
					}
					if h[id].HoldDown {
						hold = append(hold, id)
					}
				}
				got := fmt.Sprintf("usable %v fallback %v hold %v", usableList(v.Usable), fb, hold)
				if got != step.want {
					t.Errorf("step %d (%+v): %s, want %s", i, step, got, step.want)
				}
			}
		})
	}
}

// TestTrackerDisabledAndRestart: probing off gives no verdicts (every
// tunnel may carry traffic); a changed probe timing asks for a new prober
// and forgets the probe states but not the SAs.
func TestTrackerDisabledAndRestart(t *testing.T) {
	d := twoTransports()
	k := NewTracker()
	if !k.SetDesired(d) {
		t.Error("first desired state: no prober restart asked")
	}
	if k.SetDesired(d) {
		t.Error("same policy: prober restart asked")
	}
	k.SAs(time.Now(), nil)
	k.Event(probe.Event{Tunnel: "t1", Transition: probe.Transition{To: probe.StateUp, At: time.Now()}})
	d.Paths.ProbeInterval = 50 * time.Millisecond
	if !k.SetDesired(d) {
		t.Error("new interval: no prober restart asked")
	}
	k.Reset()
	if v, _ := k.View(time.Now(), d, nil, nil); v.Usable["t1"] {
		t.Error("t1 usable after a reset without a new up")
	}
	if !k.Probed()["t1"] {
		t.Error("the reset forgot t1's SA")
	}
	d.Paths.Disabled = true
	k.SetDesired(d)
	if v, h := k.View(time.Now(), d, nil, nil); v.Usable != nil || h != nil {
		t.Errorf("disabled: view %+v health %v, want no verdicts", v, h)
	}
	// A tunnel added later starts with what the last SA listing said.
	d.Paths.Disabled = false
	extra := d.Tunnels[0]
	extra.ID, extra.LinkName = "t4", "mw-t4"
	d.Tunnels = append(d.Tunnels, extra)
	k.SetDesired(d)
	if !k.Probed()["t4"] {
		t.Error("t4 added after an all-SAs listing is not probed")
	}
}

// TestTrackerUnmanagedPeer: a tunnel to a third-party router (no probe
// reflector) is never probed and is usable exactly while its outbound SA
// is installed, with the hold-down after the SA comes back; a probed
// tunnel beside it still needs its probes.
func TestTrackerUnmanagedPeer(t *testing.T) {
	d := twoTransports()
	d.Tunnels[0].RemoteUnmanaged = true
	id, other := d.Tunnels[0].ID, d.Tunnels[1].ID
	pair := [2]netip.Addr{d.Tunnels[0].LocalUnderlay, d.Tunnels[0].RemoteUnderlay}
	k := NewTracker()
	k.SetDesired(d)
	now := time.Now()
	k.SAs(now, map[[2]netip.Addr]bool{pair: true, {d.Tunnels[1].LocalUnderlay, d.Tunnels[1].RemoteUnderlay}: true})
	if k.Probed()[id] || !k.Probed()[other] {
		t.Fatalf("probed: %v; want only %s", k.Probed(), other)
	}
	v, h := k.View(now, d, nil, nil)
	if !v.Usable[id] || v.Usable[other] {
		t.Errorf("with both SAs and no probe answer: usable %v; want only %s (by its SA)", v.Usable, id)
	}
	if h[id].Probed {
		t.Errorf("%s reported as probed", id)
	}
	k.SAs(now.Add(time.Second), map[[2]netip.Addr]bool{})
	if v, _ := k.View(now.Add(time.Second), d, nil, nil); v.Usable[id] {
		t.Errorf("%s usable without its SA", id)
	}
	back := now.Add(2 * time.Second)
	k.SAs(back, map[[2]netip.Addr]bool{pair: true})
	if v, h := k.View(back, d, nil, nil); v.Usable[id] || !h[id].HoldDown {
		t.Errorf("SA back: usable %v hold-down %v; want hold-down first", v.Usable[id], h[id].HoldDown)
	}
	if v, _ := k.View(back.Add(k.Policy().HoldDown), d, nil, nil); !v.Usable[id] {
		t.Errorf("%s not usable after the hold-down", id)
	}
}

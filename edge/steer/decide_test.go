package steer

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

const ms = time.Millisecond

var timeZero = time.Unix(0, 0)

// world is two sites over two transports, one site over one, and two
// hubs both reaching 10.50.0.0/16:
//
//	t1 b inet1  t2 b inet2   -> 10.1.0.0/16
//	t3 c inet1               -> 10.3.0.0/16
//	t4 h1 inet1 t5 h2 inet1  -> 10.50.0.0/16
func world() dataplane.Desired {
	tun := func(id, site, transport, inner string, lans ...string) dataplane.Tunnel {
		t := dataplane.Tunnel{ID: id, LinkName: "mw-" + id, RemoteSite: site, LocalTransport: transport, RemoteTransport: transport,
			RemoteInner: netip.MustParseAddr(inner)}
		for _, l := range lans {
			t.RemoteLANs = append(t.RemoteLANs, pfx(l))
		}
		return t
	}
	return dataplane.Desired{
		Site: "a",
		Tunnels: []dataplane.Tunnel{
			tun("t1", "b", "inet1", "10.255.0.2", "10.1.0.0/16"),
			tun("t2", "b", "inet2", "10.255.0.6", "10.1.0.0/16"),
			tun("t3", "c", "inet1", "10.255.0.10", "10.3.0.0/16"),
			tun("t4", "h1", "inet1", "10.255.0.14", "10.50.0.0/16"),
			tun("t5", "h2", "inet1", "10.255.0.18", "10.50.0.0/16"),
		},
		Paths: dataplane.PathPolicy{
			SLAs: []dataplane.SLA{
				{Name: "realtime", MaxRTT: 100 * ms, MaxLossPct: 1, MaxJitter: 30 * ms, Transports: []string{"inet1", "inet2"}},
				{Name: "bulk", Transports: []string{"inet2"}},
			},
			Classes: []dataplane.TrafficClass{
				{Name: "voice", SLA: "realtime", Protocol: "udp", Ports: []dataplane.PortRange{{From: 5004, To: 5004}}},
				{Name: "backup", SLA: "bulk", Protocol: "tcp"},
			},
		},
	}
}

func planText(p Plan) string {
	var b strings.Builder
	for _, c := range p.Choices {
		meets := ""
		if c.MeetsSLA {
			meets = " meets"
		}
		tid := c.TunnelID
		if tid == "" {
			tid = "-"
		}
		fmt.Fprintf(&b, "choice %s %s %s%s\n", c.Class, c.RemoteSite, tid, meets)
	}
	for _, t := range p.Tables {
		fmt.Fprintf(&b, "table %s mark %#08x table %d\n", t.Class, t.Mark, t.Table)
		for _, r := range t.Routes {
			fmt.Fprintf(&b, "  %v (%s)\n", r, r.TunnelID)
		}
	}
	return b.String()
}

var good = Health{Usable: true, RTT: 20 * ms, Jitter: 2 * ms}

func healthy(ids ...string) map[string]Health {
	h := map[string]Health{}
	for _, id := range ids {
		h[id] = good
	}
	return h
}

func with(h map[string]Health, id string, x Health) map[string]Health {
	out := map[string]Health{}
	for k, v := range h {
		out[k] = v
	}
	out[id] = x
	return out
}

// TestDecide covers the undamped choice: one Decide on a fresh Steerer.
func TestDecide(t *testing.T) {
	all := healthy("t1", "t2", "t3", "t4", "t5")
	for _, tc := range []struct {
		name   string
		edit   func(*dataplane.Desired)
		dests  []Dest // nil: DestsFromDesired
		health map[string]Health
		want   string
	}{
		{
			name:   "preference order",
			health: all,
			want: `choice voice b t1 meets
choice voice c t3 meets
choice voice h1+h2 t4 meets
choice backup b t2 meets
choice backup c t3 meets
choice backup h1+h2 t4 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.2 dev mw-t1 (t1)
  10.3.0.0/16 via 10.255.0.10 dev mw-t3 (t3)
  10.50.0.0/16 via 10.255.0.14 dev mw-t4 (t4)
table backup mark 0x02000000 table 7402
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.3.0.0/16 via 10.255.0.10 dev mw-t3 (t3)
  10.50.0.0/16 via 10.255.0.14 dev mw-t4 (t4)
`,
		},
		{
			name:   "SLA fail moves to the next",
			health: with(all, "t1", Health{Usable: true, RTT: 150 * ms}),
			want: `choice voice b t2 meets
choice voice c t3 meets
choice voice h1+h2 t4 meets
choice backup b t2 meets
choice backup c t3 meets
choice backup h1+h2 t4 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.3.0.0/16 via 10.255.0.10 dev mw-t3 (t3)
  10.50.0.0/16 via 10.255.0.14 dev mw-t4 (t4)
table backup mark 0x02000000 table 7402
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.3.0.0/16 via 10.255.0.10 dev mw-t3 (t3)
  10.50.0.0/16 via 10.255.0.14 dev mw-t4 (t4)
`,
		},
		{
			// t1: RTT 2x the bound (excess 1.0); t2: loss 1.5x (0.5).
			name: "none meets: the smallest excess",
			health: with(with(all, "t1", Health{Usable: true, RTT: 200 * ms}),
				"t2", Health{Usable: true, RTT: 10 * ms, LossPct: 1.5}),
			want: `choice voice b t2
choice voice c t3 meets
choice voice h1+h2 t4 meets
choice backup b t2 meets
choice backup c t3 meets
choice backup h1+h2 t4 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.3.0.0/16 via 10.255.0.10 dev mw-t3 (t3)
  10.50.0.0/16 via 10.255.0.14 dev mw-t4 (t4)
table backup mark 0x02000000 table 7402
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.3.0.0/16 via 10.255.0.10 dev mw-t3 (t3)
  10.50.0.0/16 via 10.255.0.14 dev mw-t4 (t4)
`,
		},
		{
			name: "unusable skipped, however good its numbers; none usable: no route",
			health: map[string]Health{"t1": {RTT: 1 * ms}, "t2": good, "t3": {Usable: false},
				"t4": {Usable: false}, "t5": {Usable: true, RTT: 500 * ms, LossPct: 50}},
			want: `choice voice b t2 meets
choice voice c -
choice voice h1+h2 t5
choice backup b t2 meets
choice backup c -
choice backup h1+h2 t5 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.50.0.0/16 via 10.255.0.18 dev mw-t5 (t5)
table backup mark 0x02000000 table 7402
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.50.0.0/16 via 10.255.0.18 dev mw-t5 (t5)
`,
		},
		{
			name:   "missing health counts as unusable",
			health: map[string]Health{"t2": good},
			want: `choice voice b t2 meets
choice voice c -
choice voice h1+h2 -
choice backup b t2 meets
choice backup c -
choice backup h1+h2 -
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
table backup mark 0x02000000 table 7402
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
`,
		},
		{
			name: "unlisted transports after the listed, by transport name, then tunnel ID",
			edit: func(d *dataplane.Desired) {
				d.Paths.SLAs[0].Transports = []string{"lte"}
				d.Tunnels[0].LocalTransport = "mpls" // t1
				d.Tunnels[1].LocalTransport = "inet" // t2
				d.Paths.Classes = d.Paths.Classes[:1]
			},
			health: all,
			want: `choice voice b t2 meets
choice voice c t3 meets
choice voice h1+h2 t4 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
  10.3.0.0/16 via 10.255.0.10 dev mw-t3 (t3)
  10.50.0.0/16 via 10.255.0.14 dev mw-t4 (t4)
`,
		},
		{
			name: "two hubs: one decision per class for the group; t4 down goes to t5",
			edit: func(d *dataplane.Desired) { d.Paths.Classes = d.Paths.Classes[:1] },
			dests: []Dest{
				{Prefix: pfx("10.50.0.0/16"), Tunnels: []string{"t5", "t4"}},
				{Prefix: pfx("10.60.0.0/16"), Tunnels: []string{"t4", "t5"}},
			},
			health: with(all, "t4", Health{}),
			want: `choice voice h1+h2 t5 meets
table voice mark 0x01000000 table 7401
  10.50.0.0/16 via 10.255.0.18 dev mw-t5 (t5)
  10.60.0.0/16 via 10.255.0.18 dev mw-t5 (t5)
`,
		},
		{
			name: "a destination lacking the group's choice gets its own",
			edit: func(d *dataplane.Desired) { d.Paths.Classes = d.Paths.Classes[:1] },
			dests: []Dest{
				{Prefix: pfx("10.1.0.0/16"), Tunnels: []string{"t1", "t2"}},
				{Prefix: pfx("10.2.0.0/16"), Tunnels: []string{"t2"}},
			},
			health: all,
			want: `choice voice b t1 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.2 dev mw-t1 (t1)
  10.2.0.0/16 via 10.255.0.6 dev mw-t2 (t2)
`,
		},
		{
			name: "class destinations filter: only overlapping destinations",
			edit: func(d *dataplane.Desired) {
				d.Paths.Classes[0].Destinations = []netip.Prefix{pfx("10.1.2.0/24"), pfx("10.0.0.0/15")}
				d.Paths.Classes[1].Destinations = []netip.Prefix{pfx("192.168.0.0/16")}
			},
			health: all,
			want: `choice voice b t1 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.2 dev mw-t1 (t1)
table backup mark 0x02000000 table 7402
`,
		},
		{
			name: "unknown tunnels, IPv6 and duplicate prefixes in dests",
			edit: func(d *dataplane.Desired) { d.Paths.Classes = d.Paths.Classes[:1] },
			dests: []Dest{
				{Prefix: pfx("10.1.0.7/16"), Tunnels: []string{"t2"}},
				{Prefix: pfx("10.1.0.0/16"), Tunnels: []string{"t1", "nope"}},
				{Prefix: pfx("10.9.0.0/16"), Tunnels: []string{"nope"}},
				{Prefix: pfx("fd00::/64"), Tunnels: []string{"t1"}},
			},
			health: all,
			want: `choice voice b t1 meets
table voice mark 0x01000000 table 7401
  10.1.0.0/16 via 10.255.0.2 dev mw-t1 (t1)
`,
		},
		{
			name:   "steering disabled: empty plan",
			edit:   func(d *dataplane.Desired) { d.Paths.Disabled = true },
			health: all,
			want:   ``,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := world()
			if tc.edit != nil {
				tc.edit(&d)
			}
			dests := tc.dests
			if dests == nil {
				dests = DestsFromDesired(d)
			}
			got := planText(New().Decide(time.Unix(100, 0), d, dests, tc.health))
			if got != tc.want {
				t.Errorf("plan:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestExcess(t *testing.T) {
	sla := dataplane.SLA{MaxRTT: 100 * ms, MaxLossPct: 2, MaxJitter: 10 * ms}
	for _, tc := range []struct {
		h    Health
		want float64
	}{
		{Health{RTT: 100 * ms, LossPct: 2, Jitter: 10 * ms}, 0},
		{Health{RTT: 200 * ms}, 1},
		{Health{RTT: 150 * ms, LossPct: 3}, 1},
		{Health{LossPct: 4, Jitter: 15 * ms}, 1.5},
	} {
		if got := excess(tc.h, sla); got != tc.want {
			t.Errorf("excess(%+v) = %v, want %v", tc.h, got, tc.want)
		}
	}
	if got := excess(Health{RTT: time.Hour, LossPct: 100}, dataplane.SLA{}); got != 0 {
		t.Errorf("unbounded SLA: excess %v, want 0", got)
	}
}

// step is one Decide at second At with health; want is voice's tunnel
// towards site b.
type step struct {
	at     float64
	health map[string]Health
	want   string
}

func h(rtt time.Duration) Health { return Health{Usable: true, RTT: rtt} }

// TestDamping runs Decide sequences with a fake clock. Voice's SLA:
// RTT <= 100ms, damping 2s, prefers inet1 (t1) over inet2 (t2).
func TestDamping(t *testing.T) {
	both := func(t1, t2 Health) map[string]Health { return map[string]Health{"t1": t1, "t2": t2} }
	flap := func(from, to float64, every float64, a, b Health, other Health, want string) []step {
		var out []step
		i := 0
		for s := from; s < to; s += every {
			x := a
			if i%2 == 1 {
				x = b
			}
			out = append(out, step{s, both(x, other), want})
			i++
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a failing current is kept for Damping, then left", []step{
			{0, both(h(20*ms), h(30*ms)), "t1"},
			{1, both(h(150*ms), h(30*ms)), "t1"}, // failing since 1
			{2, both(h(150*ms), h(30*ms)), "t1"},
			{2.9, both(h(150*ms), h(30*ms)), "t1"},
			{3, both(h(150*ms), h(30*ms)), "t2"}, // failed for 2s
		}},
		{"a recovery inside the damping window resets it", []step{
			{0, both(h(20*ms), h(30*ms)), "t1"},
			{1, both(h(150*ms), h(30*ms)), "t1"},
			{2.5, both(h(50*ms), h(30*ms)), "t1"},
			{3, both(h(150*ms), h(30*ms)), "t1"}, // failing since 3 only
			{4.5, both(h(150*ms), h(30*ms)), "t1"},
			{5, both(h(150*ms), h(30*ms)), "t2"},
		}},
		{"flapping on the edge of the SLA does not move", append([]step{{0, both(h(99*ms), h(30*ms)), "t1"}},
			flap(0.5, 20, 0.5, h(101*ms), h(99*ms), h(30*ms), "t1")...)},
		{"an unusable current is left at once", []step{
			{0, both(h(20*ms), h(30*ms)), "t1"},
			{0.1, both(Health{}, h(30*ms)), "t2"},
		}},
		{"return to the preferred only after Damping inside the band", []step{
			{0, both(Health{}, h(30*ms)), "t2"},
			{10, both(h(50*ms), h(30*ms)), "t2"}, // qualifies since 10
			{11, both(h(50*ms), h(30*ms)), "t2"},
			{11.9, both(h(50*ms), h(30*ms)), "t2"},
			{12, both(h(50*ms), h(30*ms)), "t1"},
		}},
		{"the hysteresis band: at 95% of the bound the preferred does not win back", []step{
			{0, both(Health{}, h(30*ms)), "t2"},
			{1, both(h(95*ms), h(30*ms)), "t2"},
			{10, both(h(95*ms), h(30*ms)), "t2"},
			{100, both(h(95*ms), h(30*ms)), "t2"},
			{101, both(h(89*ms), h(30*ms)), "t2"},
			{103, both(h(89*ms), h(30*ms)), "t1"},
		}},
		{"a flapping preferred does not pull the class back", append([]step{{0, both(Health{}, h(30*ms)), "t2"}},
			flap(1, 30, 1.5, h(20*ms), h(300*ms), h(30*ms), "t2")...)},
		{"a preferred that recovers takes the class even while the current is failing", []step{
			{0, both(Health{}, h(30*ms)), "t2"},
			{1, both(h(20*ms), h(150*ms)), "t2"}, // t2 failing since 1 (damped); t1 qualifying since 1
			{3, both(h(20*ms), h(150*ms)), "t1"},
		}},
		{"nothing meets: best of the rest, at most one move per Damping", []step{
			{0, both(h(150*ms), h(300*ms)), "t1"},   // excess 0.5 vs 2
			{1, both(h(400*ms), h(300*ms)), "t1"},   // t1 worse now, but chosen only 1s ago
			{2, both(h(400*ms), h(300*ms)), "t2"},   // 2s on t1, failing all along: move to the better
			{2.5, both(h(150*ms), h(300*ms)), "t2"}, // t1 better again: not before 4
			{4, both(h(150*ms), h(300*ms)), "t1"},
			{5, both(h(150*ms), h(120*ms)), "t1"},  // t1 still worse, but 1s since the move
			{5.5, both(h(150*ms), h(50*ms)), "t2"}, // t2 meets, and t1 has failed for far more than Damping
		}},
		{"none usable, then one comes up: chosen at once; damping applies from then on", []step{
			{0, both(Health{}, Health{}), ""},
			{1, both(Health{}, h(300*ms)), "t2"},   // the only usable one, failing the SLA
			{1.1, both(h(20*ms), h(300*ms)), "t2"}, // t1 meets, but only since 1.1; t2 failing since 0 (unusable counts)
			{1.9, both(h(20*ms), h(300*ms)), "t2"},
			{2, both(h(20*ms), h(300*ms)), "t1"}, // t2 has failed for Damping: leave for t1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := world()
			d.Tunnels = d.Tunnels[:2]
			d.Paths.SLAs[0] = dataplane.SLA{Name: "realtime", MaxRTT: 100 * ms, Damping: 2 * time.Second, Transports: []string{"inet1", "inet2"}}
			d.Paths.Classes = d.Paths.Classes[:1]
			s := New()
			for _, st := range tc.steps {
				now := time.Unix(1000, 0).Add(time.Duration(st.at * float64(time.Second)))
				p := s.Decide(now, d, DestsFromDesired(d), st.health)
				got := p.Choices[0].TunnelID
				if got != st.want {
					t.Fatalf("at %vs (t1 %+v, t2 %+v): voice on %q, want %q", st.at, st.health["t1"], st.health["t2"], got, st.want)
				}
			}
		})
	}
}

// TestDampingDocExample is the timeline in docs/steering.md.
func TestDampingDocExample(t *testing.T) {
	d := world()
	d.Tunnels = d.Tunnels[:2]
	d.Paths.SLAs[0] = dataplane.SLA{Name: "realtime", MaxRTT: 150 * ms, Damping: 2 * time.Second, Transports: []string{"inet1", "inet2"}}
	d.Paths.Classes = d.Paths.Classes[:1]
	s := New()
	for _, st := range []step{
		{0, map[string]Health{"t1": h(40 * ms), "t2": h(60 * ms)}, "t1"},
		{1, map[string]Health{"t1": h(220 * ms), "t2": h(60 * ms)}, "t1"},
		{3, map[string]Health{"t1": h(220 * ms), "t2": h(60 * ms)}, "t2"},
		{4, map[string]Health{"t1": h(100 * ms), "t2": h(60 * ms)}, "t2"},
		{5, map[string]Health{"t1": h(149 * ms), "t2": h(60 * ms)}, "t2"},
		{6, map[string]Health{"t1": h(100 * ms), "t2": h(60 * ms)}, "t2"},
		{8, map[string]Health{"t1": h(100 * ms), "t2": h(60 * ms)}, "t1"},
		{8.1, map[string]Health{"t1": {}, "t2": h(60 * ms)}, "t2"},
	} {
		now := time.Unix(1000, 0).Add(time.Duration(st.at * float64(time.Second)))
		if got := s.Decide(now, d, DestsFromDesired(d), st.health).Choices[0].TunnelID; got != st.want {
			t.Fatalf("at %vs: voice on %q, want %q", st.at, got, st.want)
		}
	}
}

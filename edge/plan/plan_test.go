package plan

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/edge/bgp"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func tun(id, local, remote, lan string, metric uint32) dataplane.Tunnel {
	t := dataplane.Tunnel{ID: id, LinkName: "mw-" + id, LocalInner: pfx(local), RemoteInner: addr(remote),
		LocalUnderlay: addr("192.0.2.1"), RemoteUnderlay: addr("192.0.2." + fmt.Sprint(10+len(id)+int(id[len(id)-1]))),
		RouteMetric: metric, RemoteASN: 65002, PSK: []byte("0123456789abcdef0123456789abcdef"), MTU: 1400}
	if lan != "" {
		t.RemoteLANs = []netip.Prefix{pfx(lan)}
	}
	return t
}

// twoTransports: two parallel tunnels to site b (t1, t2) and one to c.
func twoTransports() dataplane.Desired {
	return dataplane.Desired{Site: "a", ASN: 65001, LANPrefixes: []netip.Prefix{pfx("10.1.0.0/16")}, Tunnels: []dataplane.Tunnel{
		tun("t1", "10.255.0.1/30", "10.255.0.2", "10.2.0.0/16", 0),
		tun("t2", "10.255.0.5/30", "10.255.0.6", "10.2.0.0/16", 0),
		tun("t3", "10.255.0.9/30", "10.255.0.10", "10.3.0.0/16", 0),
	}}
}

func keys(ts []dataplane.Tunnel) map[string]bool {
	out := map[string]bool{}
	for _, t := range ts {
		out[Key(t)] = true
	}
	return out
}

func routesText(rs []kernel.Route) string {
	var b []string
	for _, r := range rs {
		b = append(b, fmt.Sprintf("%v>%v/%d/%d", r.Dst, r.Via, r.Metric, r.Protocol))
	}
	return strings.Join(b, " ")
}

func TestStaticRoutes(t *testing.T) {
	d := twoTransports()
	for _, tc := range []struct {
		name     string
		usable   map[string]bool
		fallback map[string]int64
		want     string
	}{
		{"no verdicts: every tunnel, the second to b bumped to metric 1", nil, nil,
			"10.2.0.0/16>[10.255.0.2]/0/240 10.2.0.0/16>[10.255.0.6]/1/240 10.3.0.0/16>[10.255.0.10]/0/240"},
		{"all usable", map[string]bool{"t1": true, "t2": true, "t3": true}, nil,
			"10.2.0.0/16>[10.255.0.2]/0/240 10.2.0.0/16>[10.255.0.6]/1/240 10.3.0.0/16>[10.255.0.10]/0/240"},
		{"t1 down: t2 carries b alone, at its own metric", map[string]bool{"t2": true, "t3": true}, nil,
			"10.2.0.0/16>[10.255.0.6]/0/240 10.3.0.0/16>[10.255.0.10]/0/240"},
		{"none ever usable: fail-open keeps every route", map[string]bool{}, nil,
			"10.2.0.0/16>[10.255.0.2]/0/240 10.2.0.0/16>[10.255.0.6]/1/240 10.3.0.0/16>[10.255.0.10]/0/240"},
		{"both to b down: the one usable most recently keeps b", map[string]bool{"t3": true}, map[string]int64{"t1": 100, "t2": 200},
			"10.2.0.0/16>[10.255.0.6]/0/240 10.3.0.0/16>[10.255.0.10]/0/240"},
		{"both to b down, t1 in hold-down: t1 first", map[string]bool{"t3": true}, map[string]int64{"t1": math.MaxInt64, "t2": 200},
			"10.2.0.0/16>[10.255.0.2]/0/240 10.3.0.0/16>[10.255.0.10]/0/240"},
	} {
		got := routesText(StaticRoutes(d.Tunnels, PathView{Usable: tc.usable, Fallback: tc.fallback}))
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

// TestStaticRoutesMetricBump (the table of the old agent's route planner,
// moved here from the link package): equal metrics become primary/backup by tunnel id, a taken metric is bumped, a
// duplicate prefix of one tunnel gives one route.
func TestStaticRoutesMetricBump(t *testing.T) {
	a := tun("b.lte~a.inet", "10.255.0.1/30", "10.255.0.2", "10.1.0.0/16", 0)
	a.RemoteLANs = append(a.RemoteLANs, pfx("10.1.0.0/16"))
	b := tun("b.inet~a.inet", "10.255.0.5/30", "10.255.0.6", "10.1.0.0/16", 0)
	c := tun("t3", "10.255.0.9/30", "10.255.0.10", "10.1.0.0/16", 1)
	c.RemoteLANs = append(c.RemoteLANs, pfx("10.4.0.0/16"))
	got := routesText(StaticRoutes([]dataplane.Tunnel{a, b, c}, PathView{}))
	want := "10.1.0.0/16>[10.255.0.6]/0/240 10.1.0.0/16>[10.255.0.2]/1/240 10.1.0.0/16>[10.255.0.10]/2/240 10.4.0.0/16>[10.255.0.10]/1/240"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// path is a learned path over a tunnel's far end.
func path(nh string, pref uint32) bgp.Path {
	return bgp.Path{NextHop: addr(nh), LocalPref: pref, ASPathLen: 1}
}

func TestBGPRoutes(t *testing.T) {
	d := twoTransports()
	d.BGP = true
	rib := &bgp.RIB{Dests: map[netip.Prefix][]bgp.Path{
		pfx("10.2.0.0/16"): {path("10.255.0.2", 100), path("10.255.0.6", 100)},
		pfx("10.3.0.0/16"): {path("10.255.0.10", 100), path("10.255.0.2", 50)},
		pfx("10.1.0.0/16"): {{Local: true}},
		pfx("10.9.0.0/16"): {path("192.168.1.1", 100)}, // a LAN router: never excluded
	}}
	adopted := []kernel.Route{
		{Dst: pfx("10.2.0.0/16"), Via: []netip.Addr{addr("10.255.0.6")}, Metric: 20, Protocol: kernel.ProtoBGP},
		{Dst: pfx("10.7.0.0/16"), Via: []netip.Addr{addr("10.255.0.6")}, Metric: 20, Protocol: kernel.ProtoBGP},
	}
	for _, tc := range []struct {
		name     string
		usable   map[string]bool
		fallback map[string]int64
		rib      *bgp.RIB
		want     string
	}{
		{"no verdicts: ECMP over both to b", nil, nil, rib,
			"10.2.0.0/16>[10.255.0.2 10.255.0.6]/20/241 10.3.0.0/16>[10.255.0.10]/20/241 10.9.0.0/16>[192.168.1.1]/20/241"},
		{"t1 unusable: b over t2 only", map[string]bool{"t2": true, "t3": true}, nil, rib,
			"10.2.0.0/16>[10.255.0.6]/20/241 10.3.0.0/16>[10.255.0.10]/20/241 10.9.0.0/16>[192.168.1.1]/20/241"},
		{"t3 unusable: c falls to the worse path over t1", map[string]bool{"t1": true, "t2": true}, nil, rib,
			"10.2.0.0/16>[10.255.0.2 10.255.0.6]/20/241 10.3.0.0/16>[10.255.0.2]/20/241 10.9.0.0/16>[192.168.1.1]/20/241"},
		{"none ever usable: fail-open", map[string]bool{}, nil, rib,
			"10.2.0.0/16>[10.255.0.2 10.255.0.6]/20/241 10.3.0.0/16>[10.255.0.10]/20/241 10.9.0.0/16>[192.168.1.1]/20/241"},
		{"both to b down: the one usable most recently", map[string]bool{"t3": true}, map[string]int64{"t1": 100, "t2": 200}, rib,
			"10.2.0.0/16>[10.255.0.6]/20/241 10.3.0.0/16>[10.255.0.10]/20/241 10.9.0.0/16>[192.168.1.1]/20/241"},
		{"no RIB yet: the adopted routes", nil, nil, nil,
			"10.2.0.0/16>[10.255.0.6]/20/241 10.7.0.0/16>[10.255.0.6]/20/241"},
		{"holding: the RIB's choice wins, adopted fill the gaps", nil, nil, &bgp.RIB{Holding: true, Dests: map[netip.Prefix][]bgp.Path{pfx("10.2.0.0/16"): {path("10.255.0.2", 100)}}},
			"10.2.0.0/16>[10.255.0.2]/20/241 10.7.0.0/16>[10.255.0.6]/20/241"},
		{"hold over: the RIB alone", nil, nil, &bgp.RIB{Dests: map[netip.Prefix][]bgp.Path{pfx("10.2.0.0/16"): {path("10.255.0.2", 100)}}},
			"10.2.0.0/16>[10.255.0.2]/20/241"},
	} {
		got := routesText(BGPRoutes(d, PathView{Usable: tc.usable, Fallback: tc.fallback}, tc.rib, adopted))
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

// TestMakeOrdersLinksBeforeIPsec: a new tunnel reaches the IPsec worker
// only once its link is applied; static routes only over applied links.
func TestMakeOrdersLinksBeforeIPsec(t *testing.T) {
	d := twoTransports()
	p := Make(Inputs{Desired: d, LinksApplied: keys(d.Tunnels[:1])})
	if len(p.Links.Tunnels) != 3 {
		t.Fatalf("links = %d tunnels, want 3", len(p.Links.Tunnels))
	}
	if len(p.IPsec.Tunnels) != 1 || p.IPsec.Tunnels[0].ID != "t1" {
		t.Errorf("ipsec = %v, want t1 only", p.IPsec.Tunnels)
	}
	if got, want := routesText(p.Routes), "10.2.0.0/16>[10.255.0.2]/0/240"; got != want {
		t.Errorf("routes = %s, want %s", got, want)
	}
	if p.BGP != nil {
		t.Errorf("static mode: BGP = %+v, want nil", p.BGP)
	}
}

// TestMakeRetiresAfterIPsec: a removed tunnel keeps its link until the
// IPsec worker reports it gone, and never goes back to IPsec; a tunnel
// re-created on another underlay waits for its old link.
func TestMakeRetiresAfterIPsec(t *testing.T) {
	old := twoTransports()
	d := old
	d.Tunnels = slices.Clone(old.Tunnels[:2]) // t3 removed
	moved := d.Tunnels[1]
	moved.RemoteUnderlay = addr("203.0.113.9") // t2 re-created elsewhere
	d.Tunnels[1] = moved
	applied := keys(old.Tunnels)

	ids := func(ts []dataplane.Tunnel) string {
		var b []string
		for _, t := range ts {
			b = append(b, t.ID+"@"+t.RemoteUnderlay.String())
		}
		return strings.Join(b, " ")
	}
	p := Make(Inputs{Desired: d, Previous: old.Tunnels, LinksApplied: applied})
	if got, want := ids(p.Links.Tunnels), "t1@"+old.Tunnels[0].RemoteUnderlay.String()+" t2@"+old.Tunnels[1].RemoteUnderlay.String()+" t3@"+old.Tunnels[2].RemoteUnderlay.String(); got != want {
		t.Errorf("links before gone = %s, want %s", got, want)
	}
	if got := ids(p.IPsec.Tunnels); got != "t1@"+old.Tunnels[0].RemoteUnderlay.String() {
		t.Errorf("ipsec before gone = %s, want t1 only", got)
	}
	if err := p.Links.Validate(); err != nil {
		t.Errorf("links desired invalid: %v", err)
	}
	// The firewall keeps the retiring links' peers (GRE guard, permits)
	// until they are gone: their IPsec is already unloaded.
	if got, want := ids(p.Firewall.Tunnels), ids(p.Links.Tunnels); got != want {
		t.Errorf("firewall before gone = %s, want the links %s", got, want)
	}
	gone := keys(old.Tunnels[1:])
	p = Make(Inputs{Desired: d, Previous: p.Links.Tunnels, Gone: gone, LinksApplied: applied})
	if got, want := ids(p.Links.Tunnels), "t1@"+old.Tunnels[0].RemoteUnderlay.String()+" t2@203.0.113.9"; got != want {
		t.Errorf("links after gone = %s, want %s", got, want)
	}
	if got, want := ids(p.Firewall.Tunnels), ids(p.Links.Tunnels); got != want {
		t.Errorf("firewall after gone = %s, want %s", got, want)
	}
	if len(p.IPsec.Tunnels) != 1 {
		t.Errorf("the re-created t2 went to IPsec before its link was applied: %s", ids(p.IPsec.Tunnels))
	}
	applied[Key(moved)] = true
	p = Make(Inputs{Desired: d, Previous: p.Links.Tunnels, Gone: gone, LinksApplied: applied})
	if got := ids(p.IPsec.Tunnels); got != "t1@"+old.Tunnels[0].RemoteUnderlay.String()+" t2@203.0.113.9" {
		t.Errorf("ipsec after link = %s", got)
	}
}

func TestMakeBGPAndSteering(t *testing.T) {
	d := twoTransports()
	d.BGP = true
	d.Paths.Classes = []dataplane.TrafficClass{{Name: "voice"}}
	lan := []bgp.Neighbor{{Addr: addr("10.1.0.2"), ASN: 65010}}
	p := Make(Inputs{Desired: d, LANPeers: lan, LinksApplied: keys(d.Tunnels)})
	if p.BGP == nil || p.BGP.Err != nil {
		t.Fatalf("BGP = %+v", p.BGP)
	}
	if p.BGP.RouterID != addr("10.1.0.1") || len(p.BGP.Desired.Neighbors) != 4 || !p.BGP.Desired.Neighbors[3].LAN && !slices.ContainsFunc(p.BGP.Desired.Neighbors, func(n bgp.Neighbor) bool { return n.LAN }) {
		t.Errorf("BGP desired = %+v", p.BGP)
	}
	if len(p.Classes) != 1 {
		t.Errorf("classes = %v", p.Classes)
	}
	d.Paths.Disabled = true
	if p := Make(Inputs{Desired: d}); len(p.Classes) != 0 {
		t.Errorf("steering disabled but classes = %v", p.Classes)
	}
	d.Tunnels[0].RemoteASN = 0
	if p := Make(Inputs{Desired: d}); p.BGP == nil || !errors.Is(p.BGP.Err, bgp.ErrInvalid) {
		t.Errorf("tunnel without remote ASN: BGP = %+v", p.BGP)
	}
}

// referenceStatic is the obvious slow version of StaticRoutes' choice:
// for each prefix, the tunnels listing it, scored usable > fallback rank
// > never; keep the top score; then metrics assigned one by one in
// (metric, id) order, each at least one above the previous.
func referenceStatic(ts []dataplane.Tunnel, v PathView) map[netip.Prefix][]string {
	score := func(id string) int64 {
		if v.Usable == nil || v.Usable[id] {
			return math.MaxInt64
		}
		return min(v.Fallback[id], math.MaxInt64-1)
	}
	out := map[netip.Prefix][]string{}
	for _, p := range allPrefixes(ts) {
		var top int64 = -1
		for _, t := range ts {
			if slices.Contains(t.RemoteLANs, p) {
				top = max(top, score(t.ID))
			}
		}
		var ids []string
		for _, t := range ts {
			if slices.Contains(t.RemoteLANs, p) && score(t.ID) == top && !slices.Contains(ids, t.ID) {
				ids = append(ids, t.ID)
			}
		}
		metric := map[string]uint32{}
		for _, t := range ts {
			metric[t.ID] = t.RouteMetric
		}
		slices.SortFunc(ids, func(a, b string) int {
			if metric[a] != metric[b] {
				return int(metric[a]) - int(metric[b])
			}
			return strings.Compare(a, b)
		})
		last := -1
		var got []string
		for _, id := range ids {
			m := max(int(metric[id]), last+1)
			got = append(got, fmt.Sprintf("%s/%d", id, m))
			last = m
		}
		out[p] = got
	}
	return out
}

func allPrefixes(ts []dataplane.Tunnel) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range ts {
		for _, p := range t.RemoteLANs {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// TestStaticRoutesAgainstReference checks the route choice on random
// tunnel sets, verdicts and ranks against referenceStatic.
func TestStaticRoutesAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	lans := []netip.Prefix{pfx("10.2.0.0/16"), pfx("10.3.0.0/16"), pfx("10.4.0.0/24")}
	for i := range 2000 {
		var ts []dataplane.Tunnel
		v := PathView{Fallback: map[string]int64{}}
		if r.IntN(5) > 0 {
			v.Usable = map[string]bool{}
		}
		for j := range 1 + r.IntN(5) {
			id := fmt.Sprintf("t%d", j)
			tn := dataplane.Tunnel{ID: id, RemoteInner: netip.AddrFrom4([4]byte{10, 255, 0, byte(4*j + 2)}), RouteMetric: uint32(r.IntN(3))}
			for _, p := range lans {
				if r.IntN(2) == 0 {
					tn.RemoteLANs = append(tn.RemoteLANs, p)
				}
			}
			if v.Usable != nil && r.IntN(2) == 0 {
				v.Usable[id] = true
			}
			switch r.IntN(3) {
			case 0:
				v.Fallback[id] = int64(r.IntN(3))
			case 1:
				v.Fallback[id] = math.MaxInt64
			}
			ts = append(ts, tn)
		}
		byGw := map[netip.Addr]string{}
		for _, tn := range ts {
			byGw[tn.RemoteInner] = tn.ID
		}
		got := map[netip.Prefix][]string{}
		for _, rt := range StaticRoutes(ts, v) {
			got[rt.Dst] = append(got[rt.Dst], fmt.Sprintf("%s/%d", byGw[rt.Via[0]], rt.Metric))
		}
		want := referenceStatic(ts, v)
		for p := range want {
			if len(want[p]) == 0 {
				delete(want, p)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("case %d: tunnels %+v view %+v\n got %v\nwant %v", i, ts, v, got, want)
		}
	}
}

// TestBGPRoutesAgainstReference: on random RIBs and verdicts, every
// chosen next hop is a path's next hop of the best rank present for the
// prefix, and the set equals bgp.Choose over only those paths.
func TestBGPRoutesAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	d := twoTransports()
	d.BGP = true
	nhs := []string{"10.255.0.2", "10.255.0.6", "10.255.0.10", "192.168.1.1"}
	tunnelOf := map[string]string{"10.255.0.2": "t1", "10.255.0.6": "t2", "10.255.0.10": "t3"}
	for i := range 2000 {
		v := PathView{Usable: map[string]bool{}, Fallback: map[string]int64{}}
		for _, id := range []string{"t1", "t2", "t3"} {
			if r.IntN(2) == 0 {
				v.Usable[id] = true
			} else {
				v.Fallback[id] = int64(r.IntN(3))
			}
		}
		rib := &bgp.RIB{Dests: map[netip.Prefix][]bgp.Path{}}
		for _, p := range []netip.Prefix{pfx("10.2.0.0/16"), pfx("10.3.0.0/16")} {
			for _, nh := range nhs {
				if r.IntN(2) == 0 {
					rib.Dests[p] = append(rib.Dests[p], path(nh, uint32(50*(1+r.IntN(2)))))
				}
			}
			slices.SortStableFunc(rib.Dests[p], func(a, b bgp.Path) int { return int(b.LocalPref) - int(a.LocalPref) })
		}
		score := func(nh netip.Addr) int64 {
			id, ok := tunnelOf[nh.String()]
			if !ok || v.Usable[id] {
				return math.MaxInt64
			}
			return v.Fallback[id]
		}
		want := map[netip.Prefix]string{}
		for p, paths := range rib.Dests {
			var top int64 = -1
			for _, c := range paths {
				top = max(top, score(c.NextHop))
			}
			var keep []bgp.Path
			for _, c := range paths {
				if score(c.NextHop) == top {
					keep = append(keep, c)
				}
			}
			for _, rt := range bgp.Choose(bgp.RIB{Dests: map[netip.Prefix][]bgp.Path{p: keep}}, nil) {
				want[p] = fmt.Sprint(rt.Via)
			}
		}
		got := map[netip.Prefix]string{}
		for _, rt := range BGPRoutes(d, v, rib, nil) {
			got[rt.Dst] = fmt.Sprint(rt.Via)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("case %d: view %+v rib %+v\n got %v\nwant %v", i, v, rib.Dests, got, want)
		}
	}
}

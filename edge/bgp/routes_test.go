package bgp

import (
	"fmt"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestChooseRoute(t *testing.T) {
	ext := func(nh string, aspath int) Path {
		return Path{NextHop: ma(nh), LocalPref: 100, ASPathLen: aspath}
	}
	stale := func(c Path) Path { c.Stale = true; return c }
	dst := mp("10.3.0.0/16")
	for _, tc := range []struct {
		name  string
		paths []Path
		want  string // "" = no route
	}{
		{"no paths", nil, ""},
		{"one path", []Path{ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.1"},
		{"ours wins", []Path{{Local: true, LocalPref: 100}, ext("10.255.0.1", 1)}, ""},
		{"two hubs tie: ECMP", []Path{ext("10.255.0.5", 2), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.1,10.255.0.5"},
		{"direct beats via hub", []Path{ext("10.255.0.9", 1), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.9"},
		{"MED breaks the tie", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, MED: 10}}, "10.3.0.0/16 via 10.255.0.1"},
		{"origin breaks the tie", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, Origin: 2}}, "10.3.0.0/16 via 10.255.0.1"},
		{"local pref breaks the tie", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 90, ASPathLen: 2}}, "10.3.0.0/16 via 10.255.0.1"},
		{"ibgp does not tie with ebgp", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, IBGP: true}}, "10.3.0.0/16 via 10.255.0.1"},
		{"same next hop twice", []Path{ext("10.255.0.1", 2), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.1"},
		{"stale dropped when fresh ties", []Path{stale(ext("10.255.0.1", 2)), ext("10.255.0.5", 2)}, "10.3.0.0/16 via 10.255.0.5"},
		{"stale kept when alone", []Path{stale(ext("10.255.0.1", 2))}, "10.3.0.0/16 via 10.255.0.1"},
		{"all stale kept", []Path{stale(ext("10.255.0.1", 2)), stale(ext("10.255.0.5", 2))}, "10.3.0.0/16 via 10.255.0.1,10.255.0.5"},
		{"stale best with longer fresh: stale kept", []Path{stale(ext("10.255.0.9", 1)), ext("10.255.0.1", 2)}, "10.3.0.0/16 via 10.255.0.9"},
		{"invalid next hop skipped", []Path{ext("10.255.0.1", 2), {NextHop: ma("10.255.0.5"), LocalPref: 100, ASPathLen: 2, NHInvalid: true}}, "10.3.0.0/16 via 10.255.0.1"},
		{"best invalid: none", []Path{{NextHop: ma("10.255.0.5"), LocalPref: 100, NHInvalid: true}}, ""},
		{"no next hop: none", []Path{{LocalPref: 100, ASPathLen: 1}}, ""},
	} {
		r, ok := chooseRoute(dst, tc.paths)
		got := ""
		if ok {
			got = r.String()
		}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRIBFrom feeds API destinations shaped like GoBGP's ListPath output
// (best path first) through ribFrom and Choose: our own prefix gets no
// route, a stale lone path is kept, a tie is ECMP, and a destination that
// is not IPv4 is left out and reported.
func TestRIBFrom(t *testing.T) {
	dests := []*api.Destination{
		{Prefix: "10.3.0.0/16", Paths: []*api.Path{
			apiPath(t, "10.255.0.1", 4200000010, []uint32{4200000010, 4200000003}, "10.255.0.1", false),
			apiPath(t, "10.255.0.5", 4200000011, []uint32{4200000011, 4200000003}, "10.255.0.5", false),
		}},
		{Prefix: "10.2.0.0/16", Paths: []*api.Path{apiPath(t, "<nil>", 0, nil, "0.0.0.0", false)}},
		{Prefix: "10.1.0.0/16", Paths: []*api.Path{
			apiPath(t, "10.255.0.1", 4200000010, []uint32{4200000010}, "10.255.0.1", true),
		}},
		{Prefix: "2001:db8::/32"},
		{Prefix: "10.9.0.0/16", Paths: []*api.Path{
			apiPath(t, "10.255.0.1", 4200000010, []uint32{4200000010}, "10.255.0.1", false),
			{NeighborIp: "10.255.0.5", Pattrs: []*anypb.Any{{TypeUrl: "type.googleapis.com/nonsense"}}},
		}},
	}
	rib, errs := ribFrom(dests, 4200000002)
	if got, want := routesText(Choose(rib, nil)), "10.1.0.0/16 via 10.255.0.1\n10.3.0.0/16 via 10.255.0.1,10.255.0.5"; got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	if len(errs) != 2 {
		t.Errorf("errors = %v, want two (the IPv6 destination, the unparsable path)", errs)
	}
	if _, ok := rib.Dests[mp("10.9.0.0/16")]; ok {
		t.Errorf("a destination with an unparsable path is in the rib: %v", rib.Dests[mp("10.9.0.0/16")])
	}
	if p := rib.Dests[mp("10.2.0.0/16")]; len(p) != 1 || !p[0].Local {
		t.Errorf("our own prefix: %+v, want one local path", p)
	}
	if rib.Holding {
		t.Error("ribFrom set Holding")
	}
	c := rib.Dests[mp("10.3.0.0/16")][0]
	if fmt.Sprint(c.ASPath) != "[4200000010 4200000003]" || c.ASPathLen != 2 || c.FromPeer != ma("10.255.0.1") {
		t.Errorf("path = %+v", c)
	}
}

// routesText prints routes one a line.
func routesText(rs []Route) string {
	var lines []string
	for _, r := range rs {
		lines = append(lines, r.String())
	}
	return strings.Join(lines, "\n")
}

func apiPath(t *testing.T, neighbor string, srcAS uint32, aspath []uint32, nh string, stale bool) *api.Path {
	t.Helper()
	var attrs []*anypb.Any
	for _, m := range []proto.Message{
		&api.OriginAttribute{Origin: 0},
		&api.AsPathAttribute{Segments: []*api.AsSegment{{Type: api.AsSegment_AS_SEQUENCE, Numbers: aspath}}},
		&api.NextHopAttribute{NextHop: nh},
	} {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		attrs = append(attrs, a)
	}
	return &api.Path{Pattrs: attrs, NeighborIp: neighbor, SourceAsn: srcAS, Stale: stale, Family: familyIPv4}
}

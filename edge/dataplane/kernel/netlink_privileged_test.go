package kernel

// Privileged tests of the real NetlinkHandle against FakeNetlink: the same
// call sequence runs on both, and every step must give the same error and
// the same routes and rules. This is what keeps the one fake honest about
// the kernel's keys, replace semantics, ECMP, gateway checks and the
// routes a link down takes. A fresh namespace per run; bridges stand in
// for the tunnel links (no GRE needed). Skips without root.

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// conformanceState renders the routes of protocols 3-255 but the
// kernel's own (all tables) and every rule of protocol 242, as
// "route DST via A,B[ dead B] proto P metric M table T" and RuleText.
func conformanceState(t *testing.T, h Netlink) string {
	t.Helper()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range routes {
		if r.Protocol <= unix.RTPROT_BOOT || r.Protocol == unix.RTPROT_KERNEL || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		k, _ := RouteFromNetlink(r)
		var via, dead []string
		for _, a := range k.Via {
			via = append(via, a.String())
		}
		for _, nh := range r.MultiPath {
			if nh.Flags&unix.RTNH_F_DEAD != 0 {
				dead = append(dead, nh.Gw.String())
			}
		}
		s := fmt.Sprintf("route %v via %s proto %d metric %d table %d", k.Dst, strings.Join(via, ","), k.Protocol, k.Metric, r.Table)
		if len(dead) > 0 {
			s += " dead " + strings.Join(dead, ",")
		}
		lines = append(lines, s)
	}
	rules, err := h.RuleListFiltered(netlink.FAMILY_V4, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Protocol == ProtoSteer {
			lines = append(lines, "rule "+RuleText(r))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func gws(addrs ...string) []*netlink.NexthopInfo {
	var out []*netlink.NexthopInfo
	for _, a := range addrs {
		out = append(out, &netlink.NexthopInfo{Gw: net.ParseIP(a).To4()})
	}
	return out
}

// testHandle is Netlink plus RouteAdd, which both have: another
// program's `ip route add`.
type testHandle interface {
	Netlink
	RouteAdd(route *netlink.Route) error
}

type step struct {
	name string
	do   func(h testHandle) error
}

// conformanceSteps: two links br1 (10.255.0.1/30) and br2 (10.255.0.5/30),
// up; then route and rule calls meshwan makes, and the kernel's reactions
// to links going down and addresses going away.
func conformanceSteps() []step {
	br := func(name string) *netlink.Bridge {
		a := netlink.NewLinkAttrs()
		a.Name = name
		return &netlink.Bridge{LinkAttrs: a}
	}
	byName := func(h testHandle, name string) netlink.Link {
		ls, _ := h.LinkList()
		for _, l := range ls {
			if l.Attrs().Name == name {
				return l
			}
		}
		return br(name)
	}
	route := func(dst string, proto, metric, table int, via ...string) *netlink.Route {
		r := &netlink.Route{Dst: cidr(dst), Protocol: netlink.RouteProtocol(proto), Priority: metric, Table: table}
		if len(via) == 1 {
			r.Gw = net.ParseIP(via[0]).To4()
		} else {
			r.MultiPath = gws(via...)
		}
		return r
	}
	rule := func() *netlink.Rule {
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table, r.Mark, r.Protocol = netlink.FAMILY_V4, 7401, 7401, 0x01000000, ProtoSteer
		m := uint32(0x7f000000)
		r.Mask = &m
		return r
	}
	setup := func(name, addr string) step {
		return step{"setup " + name, func(h testHandle) error {
			l := br(name)
			return errors.Join(h.LinkAdd(l), h.AddrAdd(byName(h, name), &netlink.Addr{IPNet: cidr(addr)}), h.LinkSetUp(byName(h, name)))
		}}
	}
	return []step{
		setup("br1", "10.255.0.1/30"),
		setup("br2", "10.255.0.5/30"),
		{"replace installs", func(h testHandle) error { return h.RouteReplace(route("10.1.0.0/16", ProtoStatic, 0, 0, "10.255.0.2")) }},
		{"add on a taken key", func(h testHandle) error {
			return h.RouteAdd(route("10.1.0.0/16", unix.RTPROT_STATIC, 0, 0, "10.255.0.6"))
		}},
		{"add at another metric", func(h testHandle) error {
			return h.RouteAdd(route("10.1.0.0/16", unix.RTPROT_STATIC, 5, 0, "10.255.0.6"))
		}},
		{"ECMP replace over another protocol", func(h testHandle) error {
			return h.RouteReplace(route("10.1.0.0/16", ProtoBGP, 0, 0, "10.255.0.2", "10.255.0.6"))
		}},
		{"replace with an unreachable gateway", func(h testHandle) error { return h.RouteReplace(route("10.2.0.0/16", ProtoBGP, 0, 0, "10.9.9.9")) }},
		{"ECMP with an unreachable gateway", func(h testHandle) error {
			return h.RouteReplace(route("10.2.0.0/16", ProtoBGP, 0, 0, "10.255.0.2", "10.9.9.9"))
		}},
		{"delete with other gateways", func(h testHandle) error { return h.RouteDel(route("10.1.0.0/16", ProtoBGP, 0, 0, "10.255.0.2")) }},
		{"delete with another protocol", func(h testHandle) error {
			return h.RouteDel(route("10.1.0.0/16", ProtoStatic, 0, 0, "10.255.0.2", "10.255.0.6"))
		}},
		{"ECMP back to one gateway", func(h testHandle) error { return h.RouteReplace(route("10.1.0.0/16", ProtoBGP, 0, 0, "10.255.0.6")) }},
		{"ECMP again", func(h testHandle) error {
			return h.RouteReplace(route("10.1.0.0/16", ProtoBGP, 0, 0, "10.255.0.2", "10.255.0.6"))
		}},
		{"steering route by link in a class table", func(h testHandle) error {
			return h.RouteReplace(&netlink.Route{Dst: cidr("10.1.0.0/16"), LinkIndex: byName(h, "br1").Attrs().Index,
				Gw: net.ParseIP("10.255.0.2").To4(), Protocol: ProtoSteer, Table: 7401})
		}},
		{"gateway outside the named link", func(h testHandle) error {
			return h.RouteReplace(&netlink.Route{Dst: cidr("10.3.0.0/16"), LinkIndex: byName(h, "br1").Attrs().Index,
				Gw: net.ParseIP("10.255.0.6").To4(), Protocol: ProtoSteer, Table: 7401})
		}},
		{"single route on br2", func(h testHandle) error { return h.RouteReplace(route("10.4.0.0/16", ProtoStatic, 0, 0, "10.255.0.6")) }},
		{"br2 down", func(h testHandle) error { return h.LinkSetDown(byName(h, "br2")) }},
		{"replace over a down link", func(h testHandle) error { return h.RouteReplace(route("10.4.0.0/16", ProtoStatic, 0, 0, "10.255.0.6")) }},
		{"br2 up", func(h testHandle) error { return h.LinkSetUp(byName(h, "br2")) }},
		{"br1's address deleted", func(h testHandle) error {
			return h.AddrDel(byName(h, "br1"), &netlink.Addr{IPNet: cidr("10.255.0.1/30")})
		}},
		{"delete the ECMP route", func(h testHandle) error {
			return h.RouteDel(route("10.1.0.0/16", ProtoBGP, 0, 0, "10.255.0.2", "10.255.0.6"))
		}},
		{"delete it again", func(h testHandle) error {
			return h.RouteDel(route("10.1.0.0/16", ProtoBGP, 0, 0, "10.255.0.2", "10.255.0.6"))
		}},
		{"rule add", func(h testHandle) error { return h.RuleAdd(rule()) }},
		{"rule add again", func(h testHandle) error { return h.RuleAdd(rule()) }},
		{"rule delete", func(h testHandle) error { return h.RuleDel(rule()) }},
		{"rule delete again", func(h testHandle) error { return h.RuleDel(rule()) }},
		{"link delete takes its routes", func(h testHandle) error { return h.LinkDel(byName(h, "br2")) }},
	}
}

// TestPrivilegedFakeConformance runs conformanceSteps on the kernel and
// on FakeNetlink and compares each step's error and state.
func TestPrivilegedFakeConformance(t *testing.T) {
	netnstest.RequireRoot(t)
	real, err := NewNetlinkHandle(netnstest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(real.Close)
	fake := NewFakeNetlink()
	errno := func(err error) string {
		var e unix.Errno
		if errors.As(err, &e) {
			return e.Error()
		}
		if err != nil {
			return "error " + err.Error()
		}
		return "ok"
	}
	for _, s := range conformanceSteps() {
		rerr, ferr := s.do(real), s.do(fake)
		if errno(rerr) != errno(ferr) {
			t.Errorf("%s: kernel %s, fake %s", s.name, errno(rerr), errno(ferr))
		}
		if rs, fs := conformanceState(t, real), conformanceState(t, fake); rs != fs {
			t.Errorf("%s: kernel state\n%s\nfake state\n%s", s.name, rs, fs)
		}
		t.Logf("%s: %s", s.name, errno(rerr))
	}
}

// TestPrivilegedGRO: the ethtool ioctl reads and sets GRO on a link in
// the handle's namespace (a veth: GRO is a software feature every link
// has).
func TestPrivilegedGRO(t *testing.T) {
	netnstest.RequireRoot(t)
	h, err := NewNetlinkHandle(netnstest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	a := netlink.NewLinkAttrs()
	a.Name = "v0"
	v := &netlink.Veth{LinkAttrs: a, PeerName: "v1"}
	if err := h.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true, false} {
		if err := h.LinkSetGRO(v, on); err != nil {
			t.Fatal(err)
		}
		if got, err := h.LinkGRO(v); err != nil || got != on {
			t.Errorf("GRO = %v (%v), want %v", got, err, on)
		}
	}
}

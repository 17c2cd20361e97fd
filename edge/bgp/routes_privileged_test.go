package bgp

// Privileged tests: they need root and run in a fresh network namespace
// reached through netlink.NewHandleAt, so no thread ever switches
// namespace (edge/dataplane/netnstest). They skip cleanly without root.
// Dummy links stand in for the GRE tunnels (the build hosts have no GRE;
// the VM lab runs the compiled test binary on a kernel that has it).

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane/link"
	"github.com/meshwan/meshwan/edge/dataplane/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// countingRoutes records the write calls on a real handle.
type countingRoutes struct {
	RouteHandle
	mu     sync.Mutex
	writes []string
}

func (c *countingRoutes) RouteReplace(r *netlink.Route) error {
	c.note("RouteReplace " + r.Dst.String())
	return c.RouteHandle.RouteReplace(r)
}

func (c *countingRoutes) RouteDel(r *netlink.Route) error {
	c.note("RouteDel " + r.Dst.String())
	return c.RouteHandle.RouteDel(r)
}

func (c *countingRoutes) note(s string) { c.mu.Lock(); c.writes = append(c.writes, s); c.mu.Unlock() }

func (c *countingRoutes) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// tunnelNS returns a handle on a fresh namespace with two up veth links
// standing in for tunnels: mw-t1 10.255.0.1/30 (peer 10.255.0.2) and
// mw-t2 10.255.0.5/30 (peer 10.255.0.6). (veth, not dummy: the build
// hosts' kernel has no dummy driver; each veth's other end stays in the
// namespace, up, so the link has carrier.)
func tunnelNS(t *testing.T) *link.NetlinkHandle {
	t.Helper()
	ns := netnstest.New(t) // skips without root
	h, err := link.NewNetlinkHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	for name, addr := range map[string]string{"mw-t1": "10.255.0.1/30", "mw-t2": "10.255.0.5/30"} {
		la := netlink.NewLinkAttrs()
		la.Name = name
		v := &netlink.Veth{LinkAttrs: la, PeerName: name + "p"}
		if err := h.LinkAdd(v); err != nil {
			t.Skipf("cannot create a veth link: %v", err)
		}
		if err := h.AddrAdd(v, &netlink.Addr{IPNet: ipnet(addr)}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{name, name + "p"} {
			l, err := h.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	return h
}

// mainTableText prints the namespace's main IPv4 table, one sorted line
// per route: "<dst> via <gw,...|-> proto <n> metric <n>".
func mainTableText(t *testing.T, h RouteHandle) string {
	t.Helper()
	rs, err := listTable(h, mainTable)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range rs {
		via := "-"
		if len(r.Via) > 0 {
			s := make([]string, len(r.Via))
			for i, a := range r.Via {
				s[i] = a.String()
			}
			via = strings.Join(s, ",")
		}
		lines = append(lines, fmt.Sprintf("%v via %s proto %d metric %d", r.Dst, via, r.Protocol, r.Metric))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestPrivilegedRouteSync drives the route sync against a real kernel:
// ECMP as a multipath route, in-place change, no writes on a repeat, a
// foreign route in the same prefix left alone, a foreign route on our key
// reported and untouched, withdraw.
func TestPrivilegedRouteSync(t *testing.T) {
	h := tunnelNS(t)
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	idx := map[string]int{}
	for _, l := range links {
		idx[l.Attrs().Name] = l.Attrs().Index
	}
	// Someone else's routes: a static route in a prefix BGP will also
	// carry (other metric), and one on exactly our key.
	for _, r := range []*netlink.Route{
		{Dst: ipnet("10.9.0.0/24"), LinkIndex: idx["mw-t1"], Protocol: unix.RTPROT_STATIC},
		{Dst: ipnet("10.8.0.0/24"), Gw: ma("10.255.0.6").AsSlice(), Protocol: unix.RTPROT_STATIC, Priority: 20},
	} {
		if err := h.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	c := &countingRoutes{RouteHandle: h}
	k, adopted, err := newKernelSync(c, mainTable, 20, discard())
	if err != nil || adopted != 0 {
		t.Fatalf("newKernelSync: %d, %v", adopted, err)
	}
	check := func(step, want string) {
		t.Helper()
		if got := mainTableText(t, h); got != want {
			t.Errorf("%s:\n%s\nwant:\n%s", step, got, want)
		}
	}

	p, err := k.sync(rts("10.7.0.0/24 via 10.255.0.2", "10.8.0.0/24 via 10.255.0.2", "10.9.0.0/24 via 10.255.0.2,10.255.0.6"), false)
	if err != nil || fmt.Sprint(p.Conflicts) != "[10.8.0.0/24 via 10.255.0.2]" {
		t.Errorf("the conflict on 10.8.0.0/24 metric 20 must be reported: conflicts %v, err %v", p.Conflicts, err)
	}
	check("install", `10.255.0.0/30 via - proto 2 metric 0
10.255.0.4/30 via - proto 2 metric 0
10.7.0.0/24 via 10.255.0.2 proto 241 metric 20
10.8.0.0/24 via 10.255.0.6 proto 4 metric 20
10.9.0.0/24 via - proto 4 metric 0
10.9.0.0/24 via 10.255.0.2,10.255.0.6 proto 241 metric 20`)
	if w := c.take(); len(w) != 2 {
		t.Errorf("install writes %q, want two RouteReplace", w)
	}

	if _, err := k.sync(rts("10.7.0.0/24 via 10.255.0.2", "10.9.0.0/24 via 10.255.0.2,10.255.0.6"), false); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); len(w) != 0 {
		t.Errorf("a repeated sync wrote %q", w)
	}

	if _, err := k.sync(rts("10.7.0.0/24 via 10.255.0.6", "10.9.0.0/24 via 10.255.0.6"), false); err != nil {
		t.Fatal(err)
	}
	check("change in place", `10.255.0.0/30 via - proto 2 metric 0
10.255.0.4/30 via - proto 2 metric 0
10.7.0.0/24 via 10.255.0.6 proto 241 metric 20
10.8.0.0/24 via 10.255.0.6 proto 4 metric 20
10.9.0.0/24 via - proto 4 metric 0
10.9.0.0/24 via 10.255.0.6 proto 241 metric 20`)
	if w := c.take(); !slices.Equal(w, []string{"RouteReplace 10.7.0.0/24", "RouteReplace 10.9.0.0/24"}) {
		t.Errorf("change writes %q, want two in-place replaces and no delete", w)
	}

	if _, err := k.sync(nil, false); err != nil {
		t.Fatal(err)
	}
	check("withdraw", `10.255.0.0/30 via - proto 2 metric 0
10.255.0.4/30 via - proto 2 metric 0
10.8.0.0/24 via 10.255.0.6 proto 4 metric 20
10.9.0.0/24 via - proto 4 metric 0`)
}

// TestPrivilegedRouteAdoption: after an agent restart the routes of ours
// in the kernel are adopted, kept through the restart hold even though
// the RIB is still empty, and made equal to the RIB afterwards.
func TestPrivilegedRouteAdoption(t *testing.T) {
	h := tunnelNS(t)
	first, _, err := newKernelSync(h, mainTable, 20, discard())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.sync(rts("10.9.0.0/24 via 10.255.0.2,10.255.0.6", "10.7.0.0/24 via 10.255.0.2"), false); err != nil {
		t.Fatal(err)
	}
	// The agent restarts: a new sync on the same table.
	c := &countingRoutes{RouteHandle: h}
	k, adopted, err := newKernelSync(c, mainTable, 20, discard())
	if err != nil || adopted != 2 {
		t.Fatalf("adopted %d, %v; want 2", adopted, err)
	}
	if _, err := k.sync(nil, true); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); len(w) != 0 {
		t.Errorf("during the hold an empty RIB wrote %q", w)
	}
	if _, err := k.sync(rts("10.9.0.0/24 via 10.255.0.2,10.255.0.6"), false); err != nil {
		t.Fatal(err)
	}
	if w := c.take(); !slices.Equal(w, []string{"RouteDel 10.7.0.0/24"}) {
		t.Errorf("after the hold: writes %q, want only the delete of the route the RIB lacks", w)
	}
	want := `10.255.0.0/30 via - proto 2 metric 0
10.255.0.4/30 via - proto 2 metric 0
10.9.0.0/24 via 10.255.0.2,10.255.0.6 proto 241 metric 20`
	if got := mainTableText(t, h); got != want {
		t.Errorf("after the hold:\n%s\nwant:\n%s", got, want)
	}
	if err := FlushRoutes(h, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := mainTableText(t, h), "10.255.0.0/30 via - proto 2 metric 0\n10.255.0.4/30 via - proto 2 metric 0"; got != want {
		t.Errorf("after FlushRoutes:\n%s\nwant:\n%s", got, want)
	}
}

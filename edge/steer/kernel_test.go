package steer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
)

type fakeKernel struct {
	k   *Kernel
	nl  *kernel.FakeNetlink
	nft *kernel.FakeNFT
	log *kernel.CallLog // both fakes', so the order across them shows
}

// newFakeKernel is the kernel fakes with world()'s tunnel links mw-t1 ..
// mw-t5 (ifindex 1-5) up, each with the near end of its /30.
func newFakeKernel(t *testing.T) *fakeKernel {
	t.Helper()
	f := &fakeKernel{nl: kernel.NewFakeNetlink(), nft: kernel.NewFakeNFT()}
	f.log = f.nl.Log
	f.nft.Log = f.log
	for i := range 5 {
		l := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("mw-t%d", i+1)}}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 255, 0, byte(4*i+1)).To4(), Mask: net.CIDRMask(30, 32)}}
		if err := errors.Join(f.nl.LinkAdd(l), f.nl.AddrAdd(l, a), f.nl.LinkSetUp(l)); err != nil {
			t.Fatal(err)
		}
	}
	f.log.Reset()
	k, err := NewKernel(KernelOptions{Netlink: f.nl, NFT: f.nft.Dial})
	if err != nil {
		t.Fatal(err)
	}
	f.k = k
	return f
}

func (f *fakeKernel) apply(t *testing.T, d dataplane.Desired, p Plan) {
	t.Helper()
	if err := f.k.Apply(context.Background(), d.Paths.Classes, p); err != nil {
		t.Fatal(err)
	}
}

func decide(d dataplane.Desired, health map[string]Health) Plan {
	return New().Decide(time.Unix(1, 0), d, DestsFromDesired(d), health)
}

// TestKernelApply: from nothing, the whole state; then nothing on a
// second Apply; a failover is one route replace; order of operations.
func TestKernelApply(t *testing.T) {
	f := newFakeKernel(t)
	d := world()
	all := healthy("t1", "t2", "t3", "t4", "t5")
	f.apply(t, d, decide(d, all))
	wantNL := `route 10.1.0.0/16 via 10.255.0.2 dev mw-t1 proto 242 metric 0 table 7401
route 10.1.0.0/16 via 10.255.0.6 dev mw-t2 proto 242 metric 0 table 7402
route 10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 242 metric 0 table 7401
route 10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 242 metric 0 table 7402
route 10.50.0.0/16 via 10.255.0.14 dev mw-t4 proto 242 metric 0 table 7401
route 10.50.0.0/16 via 10.255.0.14 dev mw-t4 proto 242 metric 0 table 7402
rule pref 7401 fwmark 0x1000000/0x7f000000 lookup 7401 proto 242
rule pref 7402 fwmark 0x2000000/0x7f000000 lookup 7402 proto 242`
	if got := nlState(f.nl); got != wantNL {
		t.Errorf("netlink state:\n%s\nwant:\n%s", got, wantNL)
	}
	rs := BuildRuleset(d.Paths.Classes, DefaultNumbering())
	want := "table inet meshwan_steer\n" +
		"chain output type route hook 3 priority -150 policy 1\n  " + rs.Chains[1].Rules[0].Comment + "\n  " + rs.Chains[1].Rules[1].Comment + "\n" +
		"chain prerouting type filter hook 0 priority -150 policy 1\n  " + rs.Chains[0].Rules[0].Comment + "\n  " + rs.Chains[0].Rules[1].Comment + "\n"
	if got := f.nft.String(); got != want || got != wantNFT(d.Paths.Classes) {
		t.Errorf("nft state:\n%s\nwant:\n%s", got, want)
	}
	w := f.log.TakeWrites()
	// Additions: routes, then ip rules, then the marks (one batch).
	lastRoute, firstRule, lastRule, firstNFT := -1, -1, -1, -1
	for i, s := range w {
		switch {
		case strings.HasPrefix(s, "RouteReplace"):
			lastRoute = i
		case strings.HasPrefix(s, "RuleAdd"):
			if firstRule < 0 {
				firstRule = i
			}
			lastRule = i
		case firstNFT < 0:
			firstNFT = i
		}
	}
	if !(lastRoute < firstRule && lastRule < firstNFT) || count(w, "Flush") != 1 || w[len(w)-1] != "Flush" {
		t.Errorf("first apply writes out of order: %q", w)
	}

	handles := f.nft.RuleHandles(TableName, "")
	f.apply(t, d, decide(d, all))
	if w := f.log.TakeWrites(); len(w) != 0 {
		t.Errorf("second apply wrote %q", w)
	}

	f.apply(t, d, decide(d, with(all, "t1", Health{})))
	if w := f.log.TakeWrites(); !slices.Equal(w, []string{"RouteReplace 10.1.0.0/16 via 10.255.0.6 dev mw-t2 proto 242 metric 0 table 7401"}) {
		t.Errorf("failover wrote %q, want one route replace", w)
	}
	if !slices.Equal(f.nft.RuleHandles(TableName, ""), handles) {
		t.Error("failover touched nft rules")
	}
}

// TestKernelClassChanges: editing, inserting and removing classes changes
// only the affected nft rules (the others keep their handles), keeps the
// rule order of BuildRuleset, and removal goes marks, ip rules, routes.
func TestKernelClassChanges(t *testing.T) {
	f := newFakeKernel(t)
	d := world()
	all := healthy("t1", "t2", "t3", "t4", "t5")
	f.apply(t, d, decide(d, all))
	f.log.TakeWrites()
	// Edit class 1 (backup): one deletion and one addition per chain.
	voice := f.nft.RuleHandles(TableName, "steer:voice")
	d.Paths.Classes[1].Ports = nil
	d.Paths.Classes[1].Protocol = "icmp"
	f.apply(t, d, decide(d, all))
	w := f.log.TakeWrites()
	if count(w, "DelRule") != 2 || count(w, "AddRule")+count(w, "InsertRule") != 2 || count(w, "Flush") != 1 || len(w) != 5 {
		t.Errorf("edit wrote %q", w)
	}
	if got := f.nft.RuleHandles(TableName, "steer:voice"); len(voice) != 2 || !slices.Equal(got, voice) {
		t.Errorf("voice rules rewritten: %v -> %v", voice, got)
	}
	if got, want := f.nft.String(), wantNFT(d.Paths.Classes); got != want {
		t.Errorf("after edit:\n%s\nwant\n%s", got, want)
	}

	// Insert a class first: every mark shifts, so every rule is new; the
	// new class "video" takes table 7401 and voice moves to 7402.
	d.Paths.Classes = append([]dataplane.TrafficClass{{Name: "video", SLA: "realtime", Protocol: "tcp"}}, d.Paths.Classes...)
	f.apply(t, d, decide(d, all))
	w = f.log.TakeWrites()
	if count(w, "RuleAdd pref 7403") != 1 || count(w, "RuleAdd") != 1 || count(w, "RuleDel") != 0 {
		t.Errorf("insert: ip rule writes %q, want only the third class's added", w)
	}
	if got, want := f.nft.String(), wantNFT(d.Paths.Classes); got != want {
		t.Errorf("after insert:\n%s\nwant\n%s", got, want)
	}

	// Insert a class in the middle of the same-mark run: classes after it
	// change marks, classes before keep their rules.
	before := f.nft.RuleHandles(TableName, "")
	d.Paths.Classes = append(d.Paths.Classes[:1], append([]dataplane.TrafficClass{{Name: "dns", SLA: "bulk", Protocol: "udp",
		Ports: []dataplane.PortRange{{From: 53, To: 53}}}}, d.Paths.Classes[1:]...)...)
	f.apply(t, d, decide(d, all))
	f.log.TakeWrites()
	if got, want := f.nft.String(), wantNFT(d.Paths.Classes); got != want {
		t.Errorf("after a middle insert:\n%s\nwant\n%s", got, want)
	}
	kept := 0
	for _, h := range f.nft.RuleHandles(TableName, "") {
		if slices.Contains(before, h) {
			kept++
		}
	}
	if kept != 2 { // video's rule in each chain
		t.Errorf("%d rules kept across a middle insert, want 2 (the first class's)", kept)
	}

	// Remove all but one class: marks first, then ip rules, then routes.
	d.Paths.Classes = d.Paths.Classes[:1]
	f.apply(t, d, decide(d, all))
	w = f.log.TakeWrites()
	lastNFT, firstRuleDel, lastRuleDel, firstRouteDel := -1, -1, -1, -1
	for i, s := range w {
		switch {
		case strings.HasPrefix(s, "RuleDel"):
			if firstRuleDel < 0 {
				firstRuleDel = i
			}
			lastRuleDel = i
		case strings.HasPrefix(s, "RouteDel"):
			if firstRouteDel < 0 {
				firstRouteDel = i
			}
		case strings.HasPrefix(s, "RouteReplace"), strings.HasPrefix(s, "RuleAdd"):
		default:
			lastNFT = i
		}
	}
	if !(lastNFT < firstRuleDel && lastRuleDel < firstRouteDel) || count(w, "RuleDel") != 3 {
		t.Errorf("removal writes out of order: %q", w)
	}
	want := `route 10.1.0.0/16 via 10.255.0.2 dev mw-t1 proto 242 metric 0 table 7401
route 10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 242 metric 0 table 7401
route 10.50.0.0/16 via 10.255.0.14 dev mw-t4 proto 242 metric 0 table 7401
rule pref 7401 fwmark 0x1000000/0x7f000000 lookup 7401 proto 242`
	if got := nlState(f.nl); got != want {
		t.Errorf("after removal:\n%s\nwant:\n%s", got, want)
	}
}

// nlState is the fake's routes and ip rules (not its links).
func nlState(f *kernel.FakeNetlink) string {
	var out []string
	for _, l := range strings.Split(f.String(), "\n") {
		if strings.HasPrefix(l, "route ") || strings.HasPrefix(l, "rule ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// foreignRoute is a route another program made.
func foreignRoute(table int, dst, gw string, link int, proto int) netlink.Route {
	p := netip.MustParsePrefix(dst)
	return netlink.Route{Table: table, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		Gw: net.ParseIP(gw).To4(), LinkIndex: link, Protocol: netlink.RouteProtocol(proto)}
}

// count counts entries equal to s or starting with s + " ".
func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s || strings.HasPrefix(x, s+" ") {
			n++
		}
	}
	return n
}

func appendComment(c string) []byte { return userdata.AppendString(nil, userdata.TypeComment, c) }

// wantNFT is what the fake prints for BuildRuleset(cs): chains by name,
// rule comments in order.
func wantNFT(cs []dataplane.TrafficClass) string {
	rs := BuildRuleset(cs, DefaultNumbering())
	chains := slices.Clone(rs.Chains)
	slices.SortFunc(chains, func(a, b Chain) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	b.WriteString("table inet meshwan_steer\n")
	for _, c := range chains {
		b.WriteString("chain " + c.Name + " " + wantShape(c) + "\n")
		for _, r := range c.Rules {
			b.WriteString("  " + r.Comment + "\n")
		}
	}
	return b.String()
}

// TestKernelRepairsTampering: rules someone added to our chains, chains
// and named sets someone added to our table, a chain with the wrong
// priority, a deleted ip rule and a changed route are all put right.
func TestKernelRepairsTampering(t *testing.T) {
	f := newFakeKernel(t)
	d := world()
	all := healthy("t1", "t2", "t3", "t4", "t5")
	p := decide(d, all)
	f.apply(t, d, p)
	good := f.nft.String()
	goodNL := nlState(f.nl)

	c, _ := f.nft.Dial()
	tbl := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Name: ChainPrerouting}, UserData: appendComment("operator")})
	prio := nftables.ChainPriority(0)
	c.AddChain(&nftables.Chain{Name: "extra", Table: tbl, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: &prio})
	c.AddSet(&nftables.Set{Name: "named", Table: tbl, KeyType: nftables.TypeIPAddr}, nil)
	out := &nftables.Chain{Name: ChainOutput, Table: tbl}
	c.FlushChain(out)
	c.DelChain(out)
	hook := *nftables.ChainHookOutput
	c.AddChain(&nftables.Chain{Name: ChainOutput, Table: tbl, Type: nftables.ChainTypeRoute, Hooknum: &hook, Priority: &prio})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	rule := netlink.NewRule()
	rule.Priority = 7401
	if err := f.nl.RuleDel(rule); err != nil {
		t.Fatal(err)
	}
	moved := foreignRoute(7401, "10.1.0.0/16", "10.255.0.18", 5, kernel.ProtoSteer) // over mw-t5
	if err := f.nl.RouteReplace(&moved); err != nil {
		t.Fatal(err)
	}
	f.log.TakeWrites()

	f.apply(t, d, p)
	w := f.log.TakeWrites()
	if count(w, "Flush") != 1 || count(w, "RuleAdd") != 1 || count(w, "RouteReplace") != 1 {
		t.Errorf("repair writes %q", w)
	}
	if got := f.nft.String(); got != good {
		t.Errorf("nft after repair:\n%s\nwant:\n%s", got, good)
	}
	if got := nlState(f.nl); got != goodNL {
		t.Errorf("netlink after repair:\n%s\nwant:\n%s", got, goodNL)
	}
	f.apply(t, d, p)
	if w := f.log.TakeWrites(); len(w) != 0 {
		t.Errorf("apply after repair wrote %q", w)
	}
}

// TestKernelErrors: failures are reported and the rest converges; plans
// from another numbering and invalid classes are refused before any
// write; foreign routes are never overwritten.
func TestKernelErrors(t *testing.T) {
	ctx := context.Background()
	d := world()
	all := healthy("t1", "t2", "t3", "t4", "t5")

	t.Run("a failing route does not stop the others; the next Apply converges", func(t *testing.T) {
		f := newFakeKernel(t)
		f.nl.FailOnce("RouteReplace", "10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 242 metric 0 table 7401", syscall.ENETUNREACH)
		err := f.k.Apply(ctx, d.Paths.Classes, decide(d, all))
		if !errors.Is(err, syscall.ENETUNREACH) {
			t.Fatalf("Apply = %v", err)
		}
		if n := count(strings.Split(nlState(f.nl), "\n"), "route"); n != 5 {
			t.Errorf("%d routes installed, want the other 5", n)
		}
		f.log.TakeWrites()
		f.apply(t, d, decide(d, all))
		if w := f.log.TakeWrites(); !slices.Equal(w, []string{"RouteReplace 10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 242 metric 0 table 7401"}) {
			t.Errorf("retry wrote %q", w)
		}
	})
	t.Run("a failed nft commit is reported and retried", func(t *testing.T) {
		f := newFakeKernel(t)
		f.nft.FailOnce("Flush", "", syscall.ENOMEM)
		if err := f.k.Apply(ctx, d.Paths.Classes, decide(d, all)); !errors.Is(err, syscall.ENOMEM) {
			t.Fatalf("Apply = %v", err)
		}
		if f.nft.String() != "" {
			t.Errorf("a failed batch left state:\n%s", f.nft.String())
		}
		f.apply(t, d, decide(d, all))
		if !strings.Contains(f.nft.String(), "chain prerouting") {
			t.Error("retry did not install the rules")
		}
	})
	t.Run("plan from another numbering", func(t *testing.T) {
		f := newFakeKernel(t)
		s, err := NewWithNumbering(Numbering{MarkMask: 0xff00})
		if err != nil {
			t.Fatal(err)
		}
		err = f.k.Apply(ctx, d.Paths.Classes, s.Decide(time.Unix(1, 0), d, DestsFromDesired(d), all))
		if !errors.Is(err, ErrNumbering) {
			t.Errorf("Apply = %v, want ErrNumbering", err)
		}
		if w := f.log.TakeWrites(); len(w) != 0 {
			t.Errorf("refused plan wrote %q", w)
		}
	})
	t.Run("invalid classes and plans", func(t *testing.T) {
		f := newFakeKernel(t)
		for _, tc := range []struct {
			classes []dataplane.TrafficClass
			p       Plan
		}{
			{[]dataplane.TrafficClass{{Name: "a", DSCP: []uint8{64}}}, Plan{}},
			{[]dataplane.TrafficClass{{Name: "a", Ports: []dataplane.PortRange{{From: 1, To: 1}}}}, Plan{}},
			{[]dataplane.TrafficClass{{Name: "a", Protocol: "sctp"}}, Plan{}},
			{[]dataplane.TrafficClass{{Name: "a"}, {Name: "a"}}, Plan{}},
			{make([]dataplane.TrafficClass, dataplane.MaxClasses+1), Plan{}},
			{[]dataplane.TrafficClass{{Name: "a"}}, Plan{Tables: []ClassTable{{Class: "b", Mark: 0x01000000, Table: 7401}}}},
			{[]dataplane.TrafficClass{{Name: "a"}}, Plan{Tables: []ClassTable{{Class: "a", Mark: 0x01000000, Table: 7401}, {Class: "a", Mark: 0x01000000, Table: 7401}}}},
		} {
			if err := f.k.Apply(ctx, tc.classes, tc.p); err == nil {
				t.Errorf("Apply(%+v, %+v) accepted", tc.classes, tc.p)
			}
		}
		if w := f.log.TakeWrites(); len(w) != 0 {
			t.Errorf("refused input wrote %q", w)
		}
	})
	t.Run("foreign route in a class table", func(t *testing.T) {
		f := newFakeKernel(t)
		f.nl.InjectRoute(foreignRoute(7402, "10.1.0.0/16", "10.255.0.2", 1, 3))
		f.nl.InjectRoute(foreignRoute(7402, "10.9.0.0/16", "10.255.0.2", 1, 3))
		err := f.k.Apply(ctx, d.Paths.Classes, decide(d, all))
		if err == nil || !strings.Contains(err.Error(), "protocol 3") {
			t.Fatalf("Apply = %v, want a conflict", err)
		}
		if !strings.Contains(nlState(f.nl), "route 10.1.0.0/16 via 10.255.0.2 dev mw-t1 proto 3 metric 0 table 7402") {
			t.Errorf("foreign route overwritten:\n%s", nlState(f.nl))
		}
		if err := f.k.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		if got := nlState(f.nl); got != "route 10.1.0.0/16 via 10.255.0.2 dev mw-t1 proto 3 metric 0 table 7402\nroute 10.9.0.0/16 via 10.255.0.2 dev mw-t1 proto 3 metric 0 table 7402" {
			t.Errorf("after cleanup:\n%s", got)
		}
	})
	t.Run("missing link", func(t *testing.T) {
		f := newFakeKernel(t)
		d := world()
		d.Tunnels[2].LinkName = "mw-gone"
		err := f.k.Apply(ctx, d.Paths.Classes, decide(d, all))
		if err == nil || !strings.Contains(err.Error(), "link mw-gone does not exist") {
			t.Fatalf("Apply = %v", err)
		}
		if n := count(strings.Split(nlState(f.nl), "\n"), "route"); n != 4 {
			t.Errorf("%d routes, want the 4 not over mw-gone", n)
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		f := newFakeKernel(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := f.k.Apply(cctx, d.Paths.Classes, decide(d, all)); !errors.Is(err, context.Canceled) {
			t.Errorf("Apply = %v", err)
		}
		if err := f.k.Cleanup(cctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Cleanup = %v", err)
		}
		if w := f.log.TakeWrites(); len(w) != 0 {
			t.Errorf("canceled calls wrote %q", w)
		}
	})
	t.Run("NewKernel", func(t *testing.T) {
		if _, err := NewKernel(KernelOptions{}); err == nil {
			t.Error("NewKernel without handles accepted")
		}
		f := newFakeKernel(t)
		if _, err := NewKernel(KernelOptions{Netlink: f.nl, NFT: f.nft.Dial, MarkMask: 0x3}); !errors.Is(err, ErrNumbering) {
			t.Errorf("NewKernel with a 3-class mask: %v", err)
		}
	})
}

// TestKernelCleanup removes our table, rules and routes, leaves the rest,
// and a second Cleanup writes nothing.
func TestKernelCleanup(t *testing.T) {
	f := newFakeKernel(t)
	d := world()
	f.apply(t, d, decide(d, healthy("t1", "t2", "t3", "t4", "t5")))
	f.nl.InjectRoute(foreignRoute(254, "10.1.0.0/16", "10.255.0.2", 1, 240))
	f.nl.InjectRule(netlink.Rule{Priority: 100, Table: 100, Family: netlink.FAMILY_V4})
	if err := f.k.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := nlState(f.nl), "route 10.1.0.0/16 via 10.255.0.2 dev mw-t1 proto 240 metric 0 table 254\nrule pref 100 fwmark 0x0/0xffffffff lookup 100 proto 0"; got != want {
		t.Errorf("after cleanup:\n%s\nwant:\n%s", got, want)
	}
	if got := f.nft.String(); got != "" {
		t.Errorf("nft after cleanup:\n%s", got)
	}
	f.log.TakeWrites()
	if err := f.k.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := f.log.TakeWrites(); len(w) != 0 {
		t.Errorf("second cleanup wrote %q", w)
	}
}

// TestKernelEmptyPlan: classes without any usable tunnel keep their marks
// and ip rules (so a later failover writes only routes) and have empty
// tables.
func TestKernelEmptyPlan(t *testing.T) {
	f := newFakeKernel(t)
	d := world()
	f.apply(t, d, decide(d, nil))
	want := "rule pref 7401 fwmark 0x1000000/0x7f000000 lookup 7401 proto 242\nrule pref 7402 fwmark 0x2000000/0x7f000000 lookup 7402 proto 242"
	if got := nlState(f.nl); got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	f.log.TakeWrites()
	f.apply(t, d, decide(d, healthy("t3")))
	if w := f.log.TakeWrites(); len(w) != 2 || count(w, "RouteReplace") != 2 {
		t.Errorf("first usable tunnel wrote %q, want two routes", w)
	}
	// Steering turned off: Decide gives an empty plan, and Apply with it
	// (the classes still listed) removes everything but an empty table.
	d.Paths.Disabled = true
	f.apply(t, d, decide(d, healthy("t3")))
	if got := nlState(f.nl); got != "" {
		t.Errorf("disabled: netlink state\n%s", got)
	}
	if got := f.nft.String(); !strings.Contains(got, "chain prerouting") || strings.Contains(got, "steer:") {
		t.Errorf("disabled: nft state\n%s", got)
	}
	// A plan with a table for backup only programs backup, with the
	// number of its position.
	d.Paths.Disabled = false
	p := decide(d, healthy("t3"))
	p.Tables = p.Tables[1:]
	f.apply(t, d, p)
	want = `route 10.3.0.0/16 via 10.255.0.10 dev mw-t3 proto 242 metric 0 table 7402
rule pref 7402 fwmark 0x2000000/0x7f000000 lookup 7402 proto 242`
	if got := nlState(f.nl); got != want {
		t.Errorf("partial plan:\n%s\nwant:\n%s", got, want)
	}
	if got := f.nft.String(); strings.Count(got, "steer:backup") != 2 || strings.Contains(got, "steer:voice") {
		t.Errorf("partial plan: nft state\n%s", got)
	}
}

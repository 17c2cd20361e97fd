package kernel

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestFakeNetlinkState pins String's format and the call log; the
// kernel's semantics are pinned by TestPrivilegedFakeConformance.
func TestFakeNetlinkState(t *testing.T) {
	f := NewFakeNetlink()
	for _, s := range conformanceSteps()[:2] {
		if err := s.do(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.RouteReplace(&netlink.Route{Dst: cidr("10.1.0.0/16"), MultiPath: gws("10.255.0.6", "10.255.0.2"), Protocol: ProtoBGP, Priority: 20}); err != nil {
		t.Fatal(err)
	}
	r := netlink.NewRule()
	r.Priority, r.Table, r.Mark, r.Protocol = 7401, 7401, 0x01000000, ProtoSteer
	mask := uint32(0x7f000000)
	r.Mask = &mask
	if err := f.RuleAdd(r); err != nil {
		t.Fatal(err)
	}
	want := `addr br1 10.255.0.1/30
addr br1 fe80::1/64
addr br2 10.255.0.5/30
addr br2 fe80::2/64
link br1 bridge mtu 1500 up
link br2 bridge mtu 1500 up
route 10.1.0.0/16 nexthop via 10.255.0.6 dev br2 nexthop via 10.255.0.2 dev br1 proto 241 metric 20 table 254
rule pref 7401 fwmark 0x1000000/0x7f000000 lookup 7401 proto 242`
	if got := f.String(); got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	wantW := []string{
		"LinkAdd br1 bridge", "AddrAdd br1 10.255.0.1/30", "LinkSetUp br1",
		"LinkAdd br2 bridge", "AddrAdd br2 10.255.0.5/30", "LinkSetUp br2",
		"RouteReplace 10.1.0.0/16 nexthop via 10.255.0.6 nexthop via 10.255.0.2 proto 241 metric 20 table 254",
		"RuleAdd pref 7401 fwmark 0x1000000/0x7f000000 lookup 7401 proto 242",
	}
	if got := f.Writes(); !slices.Equal(got, wantW) {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantW, "\n"))
	}
	if n := len(f.Calls()) - len(f.Writes()); n != 4 { // conformanceSteps' LinkList lookups
		t.Errorf("%d reads: %q", n, f.Calls())
	}
}

// TestFakeNetlinkFail: Fail fails every matching call until cleared,
// FailOnce the next one; a failed call changes nothing; RetryDump
// re-reads an interrupted dump a bounded number of times.
func TestFakeNetlinkFail(t *testing.T) {
	f := NewFakeNetlink()
	for _, s := range conformanceSteps()[:2] {
		if err := s.do(f); err != nil {
			t.Fatal(err)
		}
	}
	before := f.String()
	boom := errors.New("boom")
	f.Fail("RouteReplace", "10.1.0.0/16", boom)
	f.FailOnce("RouteReplace", "10.2.0.0/16", unix.ENOBUFS)
	route := func(dst string) error {
		return f.RouteReplace(&netlink.Route{Dst: cidr(dst), Gw: net.ParseIP("10.255.0.2").To4(), Protocol: ProtoStatic})
	}
	for i, tc := range []struct {
		dst  string
		want error
	}{{"10.1.0.0/16", boom}, {"10.1.0.0/16", boom}, {"10.2.0.0/16", unix.ENOBUFS}} {
		if err := route(tc.dst); !errors.Is(err, tc.want) {
			t.Errorf("call %d: %v, want %v", i, err, tc.want)
		}
	}
	if f.String() != before {
		t.Errorf("failed calls changed the state:\n%s", f.String())
	}
	if err := route("10.2.0.0/16"); err != nil {
		t.Errorf("after FailOnce: %v", err)
	}
	f.Fail("RouteReplace", "10.1.0.0/16", nil)
	if err := route("10.1.0.0/16"); err != nil {
		t.Errorf("after clearing: %v", err)
	}

	f.ResetCalls()
	f.Fail("LinkList", "", netlink.ErrDumpInterrupted)
	if _, err := RetryDump(f.LinkList); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("RetryDump = %v", err)
	}
	if n := len(f.Calls()); n != dumpRetries {
		t.Errorf("%d dumps, want %d", n, dumpRetries)
	}
	f.Fail("LinkList", "", nil)
	f.FailOnce("LinkList", "", netlink.ErrDumpInterrupted)
	if ls, err := RetryDump(f.LinkList); err != nil || len(ls) != 2 {
		t.Errorf("RetryDump after one interruption = %d links, %v", len(ls), err)
	}
}

func comment(c string) []byte { return userdata.AppendString(nil, userdata.TypeComment, c) }

// TestFakeNFT: a batch applies all or nothing; anonymous sets live and
// die with their rule; a looked-up set and a chain with rules cannot be
// deleted; Position inserts before (InsertRule) and after (AddRule).
func TestFakeNFT(t *testing.T) {
	f := NewFakeNFT()
	tbl := &nftables.Table{Name: "t", Family: nftables.TableFamilyINet}
	hook, prio := nftables.ChainHookInput, nftables.ChainPriorityFilter
	ch := &nftables.Chain{Name: "in", Table: tbl, Type: nftables.ChainTypeFilter, Hooknum: hook, Priority: prio}
	c, _ := f.Dial()
	c.AddTable(tbl)
	c.AddChain(ch)
	if err := c.AddSet(&nftables.Set{Table: tbl, Name: "peers", KeyType: nftables.TypeIPAddr}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.AddSet(&nftables.Set{Table: tbl, Name: "__set%d", ID: 7, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}, nil); err != nil {
		t.Fatal(err)
	}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("b"), Exprs: []expr.Any{&expr.Lookup{SetName: "peers"}}})
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("d"), Exprs: []expr.Any{&expr.Lookup{SetName: "__set%d", SetID: 7}}})
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("x"), Exprs: []expr.Any{&expr.Lookup{SetName: "missing"}}})
	if err := c.Flush(); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("batch with a lookup of a missing set: %v", err)
	}
	if f.String() != "" {
		t.Fatalf("a refused batch left state:\n%s", f.String())
	}
	c.AddTable(tbl)
	c.AddChain(ch)
	_ = c.AddSet(&nftables.Set{Table: tbl, Name: "peers", KeyType: nftables.TypeIPAddr}, []nftables.SetElement{{Key: []byte{10, 0, 0, 1}}})
	_ = c.AddSet(&nftables.Set{Table: tbl, Name: "__set%d", ID: 7, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}, nil)
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("b"), Exprs: []expr.Any{&expr.Lookup{SetName: "peers"}}})
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("d"), Exprs: []expr.Any{&expr.Lookup{SetName: "__set%d", SetID: 7}}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	rules, _ := c.GetRules(tbl, ch)
	sets, _ := c.GetSets(tbl)
	if len(rules) != 2 || len(sets) != 2 || sets[1].Name != "__set0" {
		t.Fatalf("rules %d sets %+v", len(rules), sets)
	}
	c.InsertRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("a")})
	c.InsertRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("c"), Position: rules[1].Handle})
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: comment("e"), Position: rules[1].Handle})
	_ = c.DelRule(rules[1]) // "d": its anonymous set goes with it
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "table inet t\nchain in type filter hook 1 priority 0\n  a\n  b\n  c\n  e\nset peers type ipv4_addr interval false elements 1\n"
	if got := f.String(); got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if sets, _ := c.GetSets(tbl); len(sets) != 1 {
		t.Errorf("anonymous set outlived its rule: %+v", sets)
	}
	c.DelSet(&nftables.Set{Table: tbl, Name: "peers"})
	if err := c.Flush(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("deleting a looked-up set: %v", err)
	}
	c.DelChain(ch)
	if err := c.Flush(); !errors.Is(err, unix.EBUSY) {
		t.Errorf("deleting a chain with rules: %v", err)
	}
	c.FlushChain(ch)
	c.DelChain(ch)
	c.DelSet(&nftables.Set{Table: tbl, Name: "peers"})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "table inet t\n" {
		t.Errorf("state:\n%s", got)
	}
	f.ResetCalls()
	f.FailOnce("Dial", "", unix.EPERM)
	if _, err := f.Dial(); !errors.Is(err, unix.EPERM) {
		t.Errorf("Dial = %v", err)
	}
}

package firewall

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"golang.org/x/sys/unix"
)

// TestApplyOnFake runs the engine on kernel.FakeNFT (the privileged test
// proves the same on the kernel): one batch from nothing, no write at all
// when nothing changed (rule handles, and so counters, kept), a change as
// one batch that keeps the base chains registered, tampering repaired,
// a foreign table never touched, Cleanup removing only our table.
func TestApplyOnFake(t *testing.T) {
	ctx := context.Background()
	f := kernel.NewFakeNFT()
	par := Params{Mark: 0x100000}
	m := NewManager(f.Dial, Options{PermitMark: par.Mark})

	c, _ := f.Dial()
	ft := c.AddTable(&nftables.Table{Name: "operator", Family: nftables.TableFamilyINet})
	fc := c.AddChain(&nftables.Chain{Name: "in", Table: ft, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: ft, Chain: fc, Exprs: []expr.Any{&expr.Counter{}}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	operator := f.String()
	f.ResetCalls()

	shape := func() string {
		t.Helper()
		c, _ := f.Dial()
		o, err := observe(c)
		if err != nil {
			t.Fatal(err)
		}
		return o.shape
	}
	d := labDesired()
	if err := m.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); count(w, "Flush") != 1 || count(w, "AddTable") != 1 {
		t.Errorf("first apply writes %q", w)
	}
	if got, want := shape(), shapeOf(Build(d, par)); got != want {
		t.Fatalf("shape:\n%s\nwant:\n%s", got, want)
	}
	handles := f.RuleHandles(TableName, "")
	f.ResetCalls()
	if err := m.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); len(w) != 0 {
		t.Errorf("second apply wrote %q", w)
	}
	if got := f.RuleHandles(TableName, ""); !slices.Equal(got, handles) {
		t.Errorf("rule handles changed without a change")
	}

	d2 := labDesired()
	t2 := d2.Tunnels[0]
	t2.ID, t2.LinkName, t2.RemoteUnderlay = "t2", "mw-lab2", netip.MustParseAddr("198.51.100.7")
	t2.LocalInner, t2.RemoteInner = netip.MustParsePrefix("10.255.0.5/30"), netip.MustParseAddr("10.255.0.6")
	d2.Tunnels = append(d2.Tunnels, t2)
	f.ResetCalls()
	if err := m.Apply(ctx, d2); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); count(w, "Flush") != 1 || count(w, "AddChain") != 0 || count(w, "DelChain") != 0 || count(w, "AddTable") != 0 {
		t.Errorf("change writes %q: want one batch, base chains kept", w)
	}
	if got, want := shape(), shapeOf(Build(d2, par)); got != want {
		t.Errorf("after change:\n%s\nwant:\n%s", got, want)
	}

	// Tampering inside our table: a rule in forward, a chain and a named
	// set of someone else's, our mss chain gone.
	tc, _ := f.Dial()
	tc.AddRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: ChainForward, Table: table},
		Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
	tc.AddChain(&nftables.Chain{Name: "extra", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	if err := tc.AddSet(&nftables.Set{Name: "theirs", Table: table, KeyType: nftables.TypeIPAddr}, nil); err != nil {
		t.Fatal(err)
	}
	mss := &nftables.Chain{Name: ChainMSS, Table: table}
	tc.FlushChain(mss)
	tc.DelChain(mss)
	if err := tc.Flush(); err != nil {
		t.Fatal(err)
	}
	f.ResetCalls()
	if err := m.Apply(ctx, d2); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); count(w, "Flush") != 1 || count(w, "DelChain") != 1 || count(w, "AddChain") != 1 || count(w, "DelSet") != 1 {
		t.Errorf("repair writes %q", w)
	}
	if got, want := shape(), shapeOf(Build(d2, par)); got != want {
		t.Errorf("after repair:\n%s\nwant:\n%s", got, want)
	}

	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != operator {
		t.Errorf("after cleanup:\n%s\nwant only the operator's table:\n%s", got, operator)
	}
	f.ResetCalls()
	if err := m.Cleanup(ctx); err != nil || len(f.Writes()) != 0 {
		t.Errorf("second cleanup: %v, writes %q", err, f.Writes())
	}
}

// TestApplyFailures: a refused batch (at commit, or one operation in
// it) changes nothing and the next Apply converges; a failing read or
// dial writes nothing.
func TestApplyFailures(t *testing.T) {
	ctx := context.Background()
	changed := labDesired()
	changed.LANPrefixes = append(changed.LANPrefixes, netip.MustParsePrefix("10.2.2.0/24"))
	for _, fail := range []struct {
		call, match string
		existing    bool // our table exists before the failing Apply
	}{
		{"Flush", "", false}, {"AddRule", "postrouting", false}, {"AddSet", "", false}, {"SetAddElements", "", true},
		{"GetRules", "", true}, {"ListTablesOfFamily", "", false}, {"Dial", "", true},
	} {
		t.Run(fail.call, func(t *testing.T) {
			f := kernel.NewFakeNFT()
			m := NewManager(f.Dial, Options{})
			if fail.existing {
				if err := m.Apply(ctx, labDesired()); err != nil {
					t.Fatal(err)
				}
			}
			before := f.String()
			f.FailOnce(fail.call, fail.match, unix.ENOMEM)
			if err := m.Apply(ctx, changed); !errors.Is(err, unix.ENOMEM) {
				t.Fatalf("Apply = %v", err)
			}
			if got := f.String(); got != before {
				t.Errorf("a failed apply changed the state:\n%s\nwas:\n%s", got, before)
			}
			if err := m.Apply(ctx, changed); err != nil {
				t.Fatal(err)
			}
			c, _ := f.Dial()
			if o, err := observe(c); err != nil || o.shape != shapeOf(Build(changed, Params{})) {
				t.Errorf("the retry did not converge (%v):\n%s", err, o.shape)
			}
		})
	}
}

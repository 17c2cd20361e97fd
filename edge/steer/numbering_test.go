package steer

import (
	"errors"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane"
)

func TestNumbering(t *testing.T) {
	n := DefaultNumbering()
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int][3]int{0: {0x01000000, 7401, 7401}, 1: {0x02000000, 7402, 7402}, 63: {0x40000000, 7464, 7464}} {
		if got := [3]int{int(n.Mark(i)), n.Table(i), n.Priority(i)}; got != want {
			t.Errorf("class %d: mark, table, priority = %#x %d %d, want %#x %d %d", i, got[0], got[1], got[2], want[0], want[1], want[2])
		}
	}
	// Every class mark stays inside the mask, so the firewall's permit
	// mark bit (0x00100000) and every other bit are never set by us.
	for i := range dataplane.MaxClasses {
		if m := n.Mark(i); m&^n.MarkMask != 0 || m == 0 {
			t.Errorf("class %d mark %#x outside mask %#x", i, m, n.MarkMask)
		}
	}
	for _, tc := range []struct {
		name string
		n    Numbering
		ok   bool
	}{
		{"low bits", Numbering{MarkMask: 0x7f, TableBase: 100, RulePriorityBase: 100}, true},
		{"whole word", Numbering{MarkMask: 0xffffffff, TableBase: 1000, RulePriorityBase: 1}, true},
		{"zero mask", Numbering{TableBase: 7400, RulePriorityBase: 7400}, false},
		{"holes in the mask", Numbering{MarkMask: 0x7e010000, TableBase: 7400, RulePriorityBase: 7400}, false},
		{"too few classes in the mask", Numbering{MarkMask: 0x3f000000, TableBase: 7400, RulePriorityBase: 7400}, false},
		{"tables over main", Numbering{MarkMask: 0x7f000000, TableBase: 200, RulePriorityBase: 7400}, false},
		{"table 0", Numbering{MarkMask: 0x7f000000, TableBase: -1, RulePriorityBase: 7400}, false},
		{"tables below 253", Numbering{MarkMask: 0x7f000000, TableBase: 188, RulePriorityBase: 7400}, true},
		{"priorities past main", Numbering{MarkMask: 0x7f000000, TableBase: 7400, RulePriorityBase: 32710}, false},
		{"priority 0", Numbering{MarkMask: 0x7f000000, TableBase: 7400, RulePriorityBase: -1}, false},
	} {
		err := tc.n.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNumbering) {
			t.Errorf("%s: %v does not wrap ErrNumbering", tc.name, err)
		}
	}
	if _, err := NewWithNumbering(Numbering{MarkMask: 0x3}); err == nil {
		t.Error("NewWithNumbering accepted a mask for 3 classes")
	}
	s, err := NewWithNumbering(Numbering{MarkMask: 0xff, TableBase: 100})
	if err != nil {
		t.Fatal(err)
	}
	p := s.Decide(timeZero, world(), DestsFromDesired(world()), healthy("t1"))
	if p.Tables[1].Mark != 2 || p.Tables[1].Table != 102 {
		t.Errorf("custom numbering: %+v", p.Tables[1])
	}
}

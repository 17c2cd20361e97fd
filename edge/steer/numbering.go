package steer

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
)

// Numbering maps a traffic class's position i in PathPolicy.Classes to its
// packet mark, routing table and ip rule priority:
//
//	mark     = (i+1) << trailing zeros of MarkMask   (0x01000000, 0x02000000, ...)
//	table    = TableBase + i + 1                     (7401, 7402, ...)
//	priority = RulePriorityBase + i + 1              (7401, 7402, ...)
//
// Everything is derived from the position, so the ip rules depend only on
// the number of classes and survive every change of the chosen tunnels.
// The mark bits outside MarkMask are never read or written, so other
// users of the packet mark (the firewall's permit mark 0x00100000, for
// instance) keep theirs.
type Numbering struct {
	// MarkMask is the contiguous run of mark bits reserved for steering.
	// It must hold at least dataplane.MaxClasses values besides 0.
	MarkMask uint32
	// TableBase+1 .. TableBase+MaxClasses are the class routing tables;
	// they must avoid 0 and the reserved tables 253-255.
	TableBase int
	// RulePriorityBase+1 .. RulePriorityBase+MaxClasses are the ip rule
	// priorities; they must lie strictly between 0 (the local table) and
	// 32766 (the main table).
	RulePriorityBase int
}

// DefaultNumbering is kernel's: mask 0x7f000000, tables and priorities
// from 7401.
func DefaultNumbering() Numbering {
	return Numbering{MarkMask: kernel.SteerMarkMask, TableBase: kernel.SteerTableBase, RulePriorityBase: kernel.SteerRulePriorityBase}
}

// withDefaults fills zero fields.
func (n Numbering) withDefaults() Numbering {
	if n.MarkMask == 0 {
		n.MarkMask = kernel.SteerMarkMask
	}
	if n.TableBase == 0 {
		n.TableBase = kernel.SteerTableBase
	}
	if n.RulePriorityBase == 0 {
		n.RulePriorityBase = kernel.SteerRulePriorityBase
	}
	return n
}

// ErrNumbering is wrapped by every error about marks, tables or priorities.
var ErrNumbering = errors.New("steering numbering")

// Validate checks the ranges described on Numbering.
func (n Numbering) Validate() error {
	var errs []error
	values := n.MarkMask >> bits.TrailingZeros32(n.MarkMask) // the mask shifted down to bit 0
	switch {
	case n.MarkMask == 0:
		errs = append(errs, errors.New("mark mask is 0"))
	case values&(values+1) != 0:
		errs = append(errs, fmt.Errorf("mark mask %#08x is not one contiguous run of bits", n.MarkMask))
	case values < dataplane.MaxClasses:
		errs = append(errs, fmt.Errorf("mark mask %#08x holds %d classes, need %d", n.MarkMask, values, dataplane.MaxClasses))
	}
	lo, hi := n.TableBase+1, n.TableBase+dataplane.MaxClasses
	if lo < 1 || (lo <= 255 && hi >= 253) || hi > 1<<31-1 {
		errs = append(errs, fmt.Errorf("tables %d-%d overlap 0 or the reserved tables 253-255", lo, hi))
	}
	if p, q := n.RulePriorityBase+1, n.RulePriorityBase+dataplane.MaxClasses; p < 1 || q >= 32766 {
		errs = append(errs, fmt.Errorf("rule priorities %d-%d not strictly between 0 and 32766", p, q))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrNumbering, errors.Join(errs...))
	}
	return nil
}

// Mark is the packet mark of class i (0-based).
func (n Numbering) Mark(i int) uint32 {
	return uint32(i+1) << bits.TrailingZeros32(n.MarkMask)
}

// Table is the routing table of class i.
func (n Numbering) Table(i int) int { return n.TableBase + i + 1 }

// Priority is the ip rule priority of class i.
func (n Numbering) Priority(i int) int { return n.RulePriorityBase + i + 1 }

// ownsTable reports whether t is one of the class tables.
func (n Numbering) ownsTable(t int) bool {
	return t > n.TableBase && t <= n.TableBase+dataplane.MaxClasses
}

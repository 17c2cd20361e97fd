package steer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
)

// KernelOptions configure a Kernel. Netlink and NFT decide which network
// namespace is programmed: the agent passes handles on its own namespace,
// privileged tests handles on a test namespace.
type KernelOptions struct {
	// Logger gets one line per change; nil discards.
	Logger *slog.Logger
	// Netlink reaches links, ip rules and routes. Required.
	Netlink kernel.Netlink
	// NFT opens a fresh nftables connection, e.g.
	// func() (kernel.NFT, error) { return kernel.NewNFT(nsFD) }. Required.
	NFT func() (kernel.NFT, error)
	// TableBase, RulePriorityBase and MarkMask are the Numbering (zero:
	// kernel.SteerTableBase, SteerRulePriorityBase, SteerMarkMask). Plans must come from a Steerer
	// with the same numbering (NewWithNumbering(opts.Numbering())).
	TableBase, RulePriorityBase int
	MarkMask                    uint32
}

// Numbering returns the numbering the options describe, defaults filled.
func (o KernelOptions) Numbering() Numbering {
	return Numbering{MarkMask: o.MarkMask, TableBase: o.TableBase, RulePriorityBase: o.RulePriorityBase}.withDefaults()
}

// Kernel programs Plans: nftables rules mark each class's packets, one ip
// rule per class sends a mark to the class's table, and the class tables
// hold the routes of the plan. Its methods are serialized.
type Kernel struct {
	nl   kernel.Netlink
	dial func() (kernel.NFT, error)
	log  *slog.Logger
	num  Numbering
	mu   sync.Mutex
}

// NewKernel checks opts and returns a Kernel. It touches nothing.
func NewKernel(opts KernelOptions) (*Kernel, error) {
	if opts.Netlink == nil || opts.NFT == nil {
		return nil, errors.New("steer: KernelOptions need Netlink and NFT")
	}
	num := opts.Numbering()
	if err := num.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Kernel{nl: opts.Netlink, dial: opts.NFT, log: log, num: num}, nil
}

// Apply makes the kernel hold exactly what classes and p ask for. The
// classes programmed are those p has a ClassTable for (Decide gives one to
// every class, even without routes, and none when steering is disabled);
// classes gives their match criteria and, by position, their numbers:
//   - table inet meshwan_steer with the BuildRuleset rules of those classes;
//   - one ip rule per such class: fwmark Mark/MarkMask lookup Table,
//     priority Numbering.Priority(i), protocol 242;
//   - in each class table exactly p's routes (protocol 242).
//
// So Apply(ctx, classes, Plan{}) removes all steering but an empty table.
//
// It reads everything back on every call (a full resync) and writes only
// the difference: a second Apply with the same arguments writes nothing.
// Additions go in the order routes, rules, marks and removals in the
// reverse order, so a packet is never marked for a table that is not
// ready yet. One failing route does not stop the others; all errors are
// returned joined. A plan whose tables do not match the Kernel's numbering
// (a Steerer with another Numbering) is refused with ErrNumbering before
// anything is written.
func (k *Kernel) Apply(ctx context.Context, classes []dataplane.TrafficClass, p Plan) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.check(classes, p); err != nil {
		return fmt.Errorf("steering apply: %w", err)
	}
	routes, err := k.listRoutes()
	if err != nil {
		return fmt.Errorf("steering apply: %w", err)
	}
	rules, err := k.listRules()
	if err != nil {
		return fmt.Errorf("steering apply: %w", err)
	}
	index, err := k.linkIndex()
	if err != nil {
		return fmt.Errorf("steering apply: %w", err)
	}
	active := make([]bool, len(classes))
	for _, t := range p.Tables {
		active[slices.IndexFunc(classes, func(c dataplane.TrafficClass) bool { return c.Name == t.Class })] = true // check made sure it is there
	}
	wantRoutes, errs := k.wantRoutes(p, index)
	wantRules := k.wantRules(active)

	errs = append(errs, k.addRoutes(routes, wantRoutes)...)
	errs = append(errs, k.addRules(rules, wantRules)...)
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := k.applyNFT(buildRuleset(classes, k.num, func(i int) bool { return active[i] })); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, k.delRules(rules, wantRules)...)
	errs = append(errs, k.delRoutes(routes, wantRoutes)...)
	if len(errs) > 0 {
		return fmt.Errorf("steering apply: %w", errors.Join(errs...))
	}
	return nil
}

// Cleanup removes table inet meshwan_steer, every ip rule and every route
// with protocol 242, in that order. Running it again does nothing.
func (k *Kernel) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var errs []error
	if err := k.deleteNFT(); err != nil {
		errs = append(errs, err)
	}
	if rules, err := k.listRules(); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, k.delRules(rules, nil)...)
	}
	if routes, err := k.listRoutes(); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, k.delRoutes(routes, nil)...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("steering cleanup: %w", errors.Join(errs...))
	}
	return nil
}

// check refuses classes the ruleset cannot express and plans that do not
// match the numbering.
func (k *Kernel) check(classes []dataplane.TrafficClass, p Plan) error {
	if len(classes) > dataplane.MaxClasses {
		return fmt.Errorf("%d traffic classes, at most %d", len(classes), dataplane.MaxClasses)
	}
	index := map[string]int{}
	var errs []error
	for i, c := range classes {
		if _, dup := index[c.Name]; dup {
			errs = append(errs, fmt.Errorf("class %q twice", c.Name))
		}
		index[c.Name] = i
		if slices.ContainsFunc(c.DSCP, func(d uint8) bool { return d > 63 }) {
			errs = append(errs, fmt.Errorf("class %q: DSCP above 63", c.Name))
		}
		switch c.Protocol {
		case "", "icmp":
			if len(c.Ports) > 0 {
				errs = append(errs, fmt.Errorf("class %q: ports need protocol tcp or udp", c.Name))
			}
		case "tcp", "udp":
		default:
			errs = append(errs, fmt.Errorf("class %q: protocol %q", c.Name, c.Protocol))
		}
	}
	seen := map[string]bool{}
	for _, t := range p.Tables {
		i, ok := index[t.Class]
		switch {
		case seen[t.Class]:
			errs = append(errs, fmt.Errorf("plan has two tables for class %q", t.Class))
		case !ok:
			errs = append(errs, fmt.Errorf("plan has a table for class %q, which is not among the classes", t.Class))
		case t.Mark != k.num.Mark(i) || t.Table != k.num.Table(i):
			errs = append(errs, fmt.Errorf("%w: class %q is number %d: mark %#08x table %d, the plan says mark %#08x table %d",
				ErrNumbering, t.Class, i, k.num.Mark(i), k.num.Table(i), t.Mark, t.Table))
		}
		seen[t.Class] = true
	}
	return errors.Join(errs...)
}

package lab

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
)

// Direction selects which way a netem qdisc acts on a transport.
type Direction int

const (
	// Both directions: the egress of the site's veth (site -> WAN) and of
	// the WAN router's veth (WAN -> site). A delay then applies once each
	// way (round trip +2x), a loss rate once each way.
	Both Direction = iota
	// Up is site -> WAN only (the egress of the site's veth).
	Up
	// Down is WAN -> site only (the egress of the router's veth).
	Down
)

func (d Direction) String() string {
	return [...]string{"both ways", "up (site -> WAN)", "down (WAN -> site)"}[d]
}

// netemLimit is the queue length given to every netem qdisc unless the
// spec says otherwise: the default (1000 packets) overflows at 200 ms of
// delay and a few thousand packets per second.
const netemLimit = "100000"

// qdiscTargets returns the (namespace, device) pairs of a transport in a
// direction.
func (l *Lab) qdiscTargets(site, transport string, dir Direction) ([][2]string, error) {
	t, err := l.transport(site, transport)
	if err != nil {
		return nil, err
	}
	up := [2]string{l.Sites[site].NS, t.Dev}
	down := [2]string{wanNS, t.RouterDev}
	switch dir {
	case Up:
		return [][2]string{up}, nil
	case Down:
		return [][2]string{down}, nil
	default:
		return [][2]string{up, down}, nil
	}
}

// parallel runs f for every target at once (the two ends of a cut should
// change as close together as possible) and joins the errors.
func parallel(targets [][2]string, f func(ns, dev string) error) error {
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { errs[i] = f(t[0], t[1]) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Netem sets a netem qdisc with spec (tc syntax: "loss 100%", "delay
// 200ms", "delay 50ms 5ms loss 1%") on both directions of a site's
// transport, replacing any earlier one. Loss 100% cuts the transport;
// "delay D" adds D each way.
func (l *Lab) Netem(ctx context.Context, site, transport, spec string) error {
	return l.NetemDir(ctx, site, transport, Both, spec)
}

// NetemDir is Netem in one direction (or Both).
func (l *Lab) NetemDir(ctx context.Context, site, transport string, dir Direction, spec string) error {
	targets, err := l.qdiscTargets(site, transport, dir)
	if err != nil {
		return err
	}
	args := strings.Fields(spec)
	if !strings.Contains(" "+spec+" ", " limit ") {
		args = append([]string{"limit", netemLimit}, args...)
	}
	return parallel(targets, func(ns, dev string) error {
		_, err := Run(ctx, "tc", append([]string{"-n", ns, "qdisc", "replace", "dev", dev, "root", "netem"}, args...)...)
		return err
	})
}

// ClearNetem removes the netem qdiscs of a site's transport (both
// directions; none there is fine).
func (l *Lab) ClearNetem(ctx context.Context, site, transport string) error {
	targets, err := l.qdiscTargets(site, transport, Both)
	if err != nil {
		return err
	}
	return parallel(targets, func(ns, dev string) error {
		out, err := Run(ctx, "tc", "-n", ns, "qdisc", "del", "dev", dev, "root")
		if err != nil && (strings.Contains(out, "handle of zero") || strings.Contains(out, "No such file")) {
			return nil
		}
		return err
	})
}

// Qdiscs describes the root qdiscs of a site's transport, for logs.
func (l *Lab) Qdiscs(ctx context.Context, site, transport string) (string, error) {
	targets, err := l.qdiscTargets(site, transport, Both)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, t := range targets {
		out, err := Run(ctx, "tc", "-n", t[0], "qdisc", "show", "dev", t[1], "root")
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %s: %s\n", t[0], t[1], strings.TrimSpace(out))
	}
	return b.String(), nil
}

// cutTable is the WAN router's nftables table for Cut: one set of cut
// router-side devices, and a forward chain that drops everything coming
// from or going to a device in it.
const cutTable = "mwcut"

// Cut drops every packet crossing a site's transport, both ways, in ONE
// step: it adds the transport's router-side device to a set that two
// rules in the WAN router's forward chain match (iifname and oifname),
// in one `nft -f` transaction. The kernel commits an nftables transaction
// at once, and both directions are decided by the same set element, so
// there is no moment when one direction is cut and the other is not
// (unlike two tc commands in two namespaces, which landed 0.2-1.4 s apart
// in the VM). The netem qdiscs (a marker delay) are left alone. Uncut
// restores.
func (l *Lab) Cut(ctx context.Context, site, transport string) error {
	t, err := l.transport(site, transport)
	if err != nil {
		return err
	}
	// The table, set, chain and rules are (re)declared in the same
	// transaction: "add" of an existing table/set/chain is a no-op, and
	// the chain is flushed before its two rules are added again.
	script := fmt.Sprintf(`add table ip %[1]s
add set ip %[1]s devs { type ifname; }
add chain ip %[1]s cut { type filter hook forward priority -10; policy accept; }
flush chain ip %[1]s cut
add rule ip %[1]s cut iifname @devs counter drop
add rule ip %[1]s cut oifname @devs counter drop
add element ip %[1]s devs { "%[2]s" }
`, cutTable, t.RouterDev)
	return nftScript(ctx, script)
}

// Uncut removes a transport from the cut set (Cut), in one step.
func (l *Lab) Uncut(ctx context.Context, site, transport string) error {
	t, err := l.transport(site, transport)
	if err != nil {
		return err
	}
	return nftScript(ctx, fmt.Sprintf("delete element ip %s devs { \"%s\" }\n", cutTable, t.RouterDev))
}

// CutDevices lists the router-side devices Cut currently holds cut.
func (l *Lab) CutDevices(ctx context.Context) ([]string, error) {
	out, err := Run(ctx, "ip", "netns", "exec", wanNS, "nft", "list", "set", "ip", cutTable, "devs")
	if err != nil {
		if strings.Contains(out, "No such file") {
			return nil, nil
		}
		return nil, err
	}
	_, elems, ok := strings.Cut(out, "elements = {")
	if !ok {
		return nil, nil
	}
	elems, _, _ = strings.Cut(elems, "}")
	var devs []string
	for _, f := range strings.Split(elems, ",") {
		if d := strings.Trim(strings.TrimSpace(f), `"`); d != "" {
			devs = append(devs, d)
		}
	}
	return devs, nil
}

// nftScript runs an nft script in the WAN router as one transaction.
func nftScript(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", wanNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %w: %s\n%s", wanNS, err, strings.TrimSpace(string(out)), script)
	}
	return nil
}

package link

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// rename gives cur, the link of t's tunnel under another name (see
// resolve), the name t.LinkName in place: same ifindex, addresses,
// alias and IPsec, so nothing the agent or the peer sees is torn down.
// It updates cur's attributes (Name, and Flags when it leaves the link
// down after a failure).
//
// The live rename is tried first (Linux 6.2+: no gap at all). A kernel
// that refuses it for an up link (EBUSY) gets, in this order: addrgenmode
// none (the up below must not grow an IPv6 link-local), down, rename, up,
// and the link's IPv4 routes put back, because the down flushed them (see
// the package comment). The link carries no traffic from the down until
// the up, and the routes through it are missing until they are back: that
// is the one-time cost of an upgrade on such kernels, logged as down_for.
func (m *Manager) rename(cur netlink.Link, t dataplane.Tunnel) error {
	a := cur.Attrs()
	old := a.Name
	err := m.h.LinkSetName(cur, t.LinkName)
	if err == nil {
		a.Name = t.LinkName
		m.log.Info("link renamed", "link", t.LinkName, "was", old, "tunnel_id", t.ID, "live", true)
		return nil
	}
	if !errors.Is(err, unix.EBUSY) || a.Flags&net.FlagUp == 0 {
		return fmt.Errorf("rename from %s: %w", old, err)
	}

	routes, err := kernel.RetryDump(func() ([]netlink.Route, error) {
		return m.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: a.Index, Table: unix.RT_TABLE_UNSPEC},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("rename from %s: list routes: %w", old, err)
	}
	if err := m.setAddrGenModeNone(cur); err != nil {
		return fmt.Errorf("rename from %s: %w", old, err)
	}
	start := time.Now()
	if err := m.h.LinkSetDown(cur); err != nil {
		return fmt.Errorf("rename from %s: set down: %w", old, err)
	}
	var errs []error
	if err := m.h.LinkSetName(cur, t.LinkName); err != nil {
		errs = append(errs, fmt.Errorf("rename from %s: %w", old, err))
	} else {
		a.Name = t.LinkName
	}
	if err := m.h.LinkSetUp(cur); err != nil {
		// Left down: ensureTunnel's caller reports the error, and the
		// next Apply brings the link up and its routes back.
		a.Flags &^= net.FlagUp
		return errors.Join(append(errs, fmt.Errorf("set up after rename: %w", err))...)
	}
	restored := 0
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Table == unix.RT_TABLE_LOCAL {
			continue // the kernel puts these back with the address on up
		}
		if err := m.h.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("route %v back after rename: %w", r.Dst, err))
			continue
		}
		restored++
	}
	m.log.Info("link renamed", "link", a.Name, "was", old, "tunnel_id", t.ID, "live", false,
		"down_for", time.Since(start), "routes_restored", restored)
	return errors.Join(errs...)
}

// ensureAltName gives l the readable altname of t (dataplane.LinkAltName)
// unless it has it, another link holds that name, or the kernel refused
// it before. It never fails: an altname is for people reading `ip link`,
// and the alias names the tunnel anyway.
func (m *Manager) ensureAltName(t dataplane.Tunnel, l netlink.Link, names nameTable) {
	want := dataplane.LinkAltName(t.RemoteSite, t.LocalTransport, t.RemoteTransport)
	a := l.Attrs()
	if want == "" || want == a.Name {
		return
	}
	for _, n := range a.AltNames {
		if n == want {
			return
		}
	}
	if owner, taken := names[want]; taken {
		m.log.Debug("link altname held by another link", "link", a.Name, "altname", want, "holder_ifindex", owner)
		return
	}
	key := altKey{a.Index, want}
	if m.altFailed[key] {
		return
	}
	if err := m.h.LinkAddAltName(l, want); err != nil {
		m.altFailed[key] = true
		m.log.Warn("link altname not set (not retried for this link)", "link", a.Name, "altname", want, "err", err)
		return
	}
	a.AltNames = append(a.AltNames, want)
	names[want] = a.Index
	m.log.Info("link altname added", "link", a.Name, "altname", want)
}

// nameTable maps every name and altname in the namespace to its link's
// ifindex, as the kernel holds them (they share one namespace).
type nameTable map[string]int

func newNameTable(links []netlink.Link) nameTable {
	n := nameTable{}
	for _, l := range links {
		n.add(l.Attrs())
	}
	return n
}

func (n nameTable) add(a *netlink.LinkAttrs) {
	n[a.Name] = a.Index
	for _, alt := range a.AltNames {
		n[alt] = a.Index
	}
}

func (n nameTable) drop(a *netlink.LinkAttrs) {
	for _, name := range append([]string{a.Name}, a.AltNames...) {
		if n[name] == a.Index {
			delete(n, name)
		}
	}
}

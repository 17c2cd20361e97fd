// Package link owns the kernel side of meshwan tunnels that netlink
// reaches: one IPv4 GRE link per tunnel with its /30 inner address
// (Apply), and the edge's routes in the main table, static and BGP alike
// (ApplyRoutes), all through the one shim kernel.Netlink.
//
// Apply and ApplyRoutes are declarative and idempotent: they read the
// kernel back on every call (there is no cached state to go stale, so
// every call is a full resync), change only the difference, and a second
// call with the same input makes no netlink write at all.
//
// What is ours, and how we avoid touching anything else:
//   - links: names start with dataplane.LinkPrefix ("mw-") and carry the
//     alias "meshwan:<tunnel id>" (IFLA_IFALIAS, visible in `ip link`). A
//     link named in Desired is managed whatever it carries (the prefix is
//     reserved for meshwan); a link is deleted only if it has both the
//     prefix and our alias, so a hand-made "mw-test" survives.
//   - routes: ours carry protocol kernel.ProtoStatic (240) or
//     kernel.ProtoBGP (241) in the main table, and only those are ever
//     replaced or deleted. A wanted route whose (prefix, metric) is taken
//     by someone else's route is reported as a conflict, never
//     overwritten (RouteReplace would replace it whatever its protocol).
//   - addresses: every address on our own links is ours.
//
// Problems met and handled here:
//   - A GRE link gets an IPv6 link-local address when it comes up unless its
//     addrgenmode is none; packets from it trigger IKE early and create a
//     duplicate SA. The mode cannot be read back through netlink v1.3.1, so
//     it is set right before every LinkSetUp, and a link-local address seen
//     on one of our links is treated as drift (mode set, address removed).
//   - Outer TTL is fixed to 64: with the kernel default (inherit), eBGP
//     packets (TTL 1) would give GRE packets TTL 1 that die at the first
//     underlay hop.
//   - netlink.LinkAttrs{} has TxQLen 0, which LinkAdd sends as a zero
//     queue length; links are built from netlink.NewLinkAttrs().
//   - The kernel ignores an alias in the link-create request: it is set
//     with a separate LinkSetAlias. An agent killed between the two leaves
//     a "mw-" link without alias; it is adopted if still desired, and
//     otherwise left for an operator (it cannot be told from a hand-made
//     one).
//   - Interrupted dumps (netlink.ErrDumpInterrupted) are re-read, see
//     kernel.RetryDump.
//   - Receive offload (GRO) is on on our links, the kernel's default for a
//     new GRE link (Options.NoGRO turns it off), and set before they come
//     up. Decrypted transport-mode ESP reaches a GRE link from the
//     kernel's xfrm_trans_reinject work and, with GRO on, goes through
//     the link's GRO cells: TCP through the tunnel is aggregated on
//     receive (off costs about x0.8 of the throughput, docs/benchmarks.md).
//     GRO was off by default from commit 96ab2ba until 2026-12-03
//     because the lab's emulated guest froze in that path; the freeze was
//     not seen again once the lab stopped re-patching a jump label in it
//     (31 of 31 runs of the old repro with GRO on; e2e/vm/README.md).
//   - The GRE link's local/remote cannot be changed in place: a changed
//     underlay (or TTL/PMTU discovery) deletes and re-creates the link;
//     MTU and alias are fixed in place. The old link goes first: the
//     kernel refuses a second GRE link with the same endpoints and key.
//
// Names, and renaming in place. A tunnel's link name comes from its /30
// (dataplane.LinkName); an edge upgraded from the older site-based names
// owns links whose names no tunnel asks for any more. A link whose name
// no tunnel wants but whose alias names a desired tunnel (and whose GRE
// parameters fit) is that tunnel's link: Apply renames it (rename)
// instead of deleting and re-creating it, and Retiring reports it as
// kept, so the agent leaves its IPsec up. The same holds whenever a
// tunnel's /30 changes. Problems met:
//   - kernels before 6.2 refuse to rename an up link (EBUSY); 6.2 allowed
//     live renames (the build hosts' 6.18 does it, the lab's Debian 6.1
//     does not). rename tries the live rename first and falls back to
//     down, rename, up.
//   - taking an IPv4 link down flushes every IPv4 route through it, in
//     every table and of every protocol (seen on the host kernel), while
//     its addresses stay and the connected route returns on up. The
//     fallback therefore lists the link's routes first and puts them back
//     right after the up: the only place this package writes routes of
//     another protocol, and only ones its own down removed.
//   - names and altnames share one namespace: the readable altname
//     (dataplane.LinkAltName) is added after stale links are gone (a
//     re-created link's altname is its predecessor's old name), only if
//     no other link holds it, and a failure (a kernel without altnames)
//     is logged, remembered and never fails Apply.
package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// AliasPrefix starts the alias of every link we create: "meshwan:<id>".
const AliasPrefix = "meshwan:"

// greTTL is the fixed outer TTL (see the package comment).
const greTTL = 64

// Options configure a Manager.
type Options struct {
	// Logger receives one line per change; nil discards.
	Logger *slog.Logger
	// NoGRO turns generic receive offload off on the GRE links (on, the
	// kernel's default, otherwise; see the package comment). Apply
	// repairs the setting either way.
	NoGRO bool
}

// Manager applies the link part of a Desired and the main-table routes
// through a kernel.Netlink. Its methods are safe for concurrent use; they
// are serialized.
type Manager struct {
	h   kernel.Netlink
	log *slog.Logger
	gro bool

	mu   sync.Mutex
	last []dataplane.Tunnel // tunnels of the last Apply, for Status
	// altFailed: altnames the kernel refused, by (ifindex, altname); not
	// tried again by this Manager, so a kernel without altnames costs
	// one failed call per link, not one per Apply.
	altFailed map[altKey]bool
	// conflicts: the last route conflicts logged, so each set is logged
	// once.
	conflicts string
}

type altKey struct {
	index int
	name  string
}

// NewManager returns a Manager driving h.
func NewManager(h kernel.Netlink, opts Options) *Manager {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// MESHWAN_LINK_GRO=off|on overrides: the switch the data-plane
	// benchmark sets in an edge's environment.
	gro := !opts.NoGRO
	switch os.Getenv("MESHWAN_LINK_GRO") {
	case "off":
		gro = false
	case "on":
		gro = true
	}
	return &Manager{h: h, log: log, gro: gro, altFailed: map[altKey]bool{}}
}

// Apply makes the kernel match d's links: GRE links, addresses, GRO; it
// writes no route (ApplyRoutes does; only a rename on an old kernel puts
// back the routes its down flushed). It validates d first and changes
// nothing if d is invalid. It carries on past a failing tunnel and
// returns all failures joined, so one bad peer does not block the others;
// the next Apply retries whatever failed.
func (m *Manager) Apply(ctx context.Context, d dataplane.Desired) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("link apply: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = slices.Clone(d.Tunnels)

	links, byName, err := m.listLinks()
	if err != nil {
		return fmt.Errorf("link apply: %w", err)
	}

	var errs []error
	tunnels := slices.Clone(d.Tunnels)
	slices.SortFunc(tunnels, func(a, b dataplane.Tunnel) int { return strings.Compare(a.LinkName, b.LinkName) })
	cur, claimed := resolve(links, byName, tunnels)
	names := newNameTable(links) // names and altnames, kept current below
	final := map[string]netlink.Link{}
	for _, t := range tunnels {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		l, err := m.ensureTunnel(t, cur[t.LinkName], names)
		if err != nil {
			errs = append(errs, fmt.Errorf("tunnel %s link %s: %w", t.ID, t.LinkName, err))
			continue
		}
		final[t.LinkName] = l
	}

	// Links we created for tunnels no longer desired.
	for _, l := range links {
		a := l.Attrs()
		if claimed[a.Index] || !owned(a) {
			continue
		}
		if err := m.h.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete stale link %s: %w", a.Name, err))
			continue
		}
		names.drop(a)
		m.log.Info("link deleted", "link", a.Name, "alias", a.Alias)
	}

	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, t := range tunnels {
		if l := final[t.LinkName]; l != nil {
			m.ensureAltName(t, l, names)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("link apply: %w", err)
	}
	return nil
}

// Retiring is a link the next Apply deletes.
type Retiring struct {
	Link string
	// TunnelID is from the link's alias.
	TunnelID string
	// Local and Remote are the GRE endpoints (the underlay pair whose ESP
	// SAs carry the link's packets); invalid when the link is not GRE.
	Local, Remote netip.Addr
	// Recreated: a tunnel of the Desired still wants the link, with other
	// GRE parameters (Apply deletes and re-creates it).
	Recreated bool
}

// Retiring lists the links Apply(d) would delete: our links no tunnel of
// d wants, and links of d's tunnels that cannot be kept as they are. From
// the same dump, present names the links of d's tunnels that Apply keeps
// (by the tunnel's link name), including a link Apply renames in place
// to that name: a rename is not a deletion. It writes nothing. The owner
// keeps a retiring link in its plan until the IPsec worker has taken the
// link's connection down, so no link is deleted while ESP for it is
// still being decrypted (agent.Owner, plan.Plan.Retiring); after a
// failed Apply, present tells it which links routes may use.
func (m *Manager) Retiring(d dataplane.Desired) (retiring []Retiring, present map[string]bool, err error) {
	links, byName, err := m.listLinks()
	if err != nil {
		return nil, nil, err
	}
	cur, claimed := resolve(links, byName, d.Tunnels)
	present = map[string]bool{}
	kept := map[int]bool{} // ifindex of links Apply keeps (renamed or not)
	for _, t := range d.Tunnels {
		if l := cur[t.LinkName]; l != nil && sameGRE(l, t) {
			present[t.LinkName] = true
			kept[l.Attrs().Index] = true
		}
	}
	for _, l := range links {
		a := l.Attrs()
		wanted := claimed[a.Index]
		if kept[a.Index] || (!wanted && !owned(a)) {
			continue
		}
		r := Retiring{Link: a.Name, TunnelID: strings.TrimPrefix(a.Alias, AliasPrefix), Recreated: wanted}
		if g, ok := l.(*netlink.Gretun); ok {
			r.Local, _ = netip.AddrFromSlice(g.Local.To4())
			r.Remote, _ = netip.AddrFromSlice(g.Remote.To4())
		}
		retiring = append(retiring, r)
	}
	slices.SortFunc(retiring, func(a, b Retiring) int { return strings.Compare(a.Link, b.Link) })
	return retiring, present, nil
}

// listLinks dumps every link, also indexed by name.
func (m *Manager) listLinks() ([]netlink.Link, map[string]netlink.Link, error) {
	links, err := kernel.RetryDump(m.h.LinkList)
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	return links, byName, nil
}

// resolve finds, for each tunnel, the existing link that is its link
// (by the tunnel's LinkName): the link of that name, else an owned link
// whose alias names the tunnel and whose name no tunnel wants (one named
// by an older scheme, or before the tunnel's /30 changed). Apply renames
// the latter if its GRE parameters fit, else deletes it before creating
// the new one (the kernel refuses two GRE links with the same endpoints).
// claimed holds the ifindex of every link resolved. Retiring and Apply
// share it, so Retiring predicts exactly what Apply keeps.
func resolve(links []netlink.Link, byName map[string]netlink.Link, tunnels []dataplane.Tunnel) (cur map[string]netlink.Link, claimed map[int]bool) {
	cur = map[string]netlink.Link{}
	claimed = map[int]bool{}
	wanted := map[string]bool{}
	for _, t := range tunnels {
		wanted[t.LinkName] = true
		if l := byName[t.LinkName]; l != nil {
			cur[t.LinkName] = l
			claimed[l.Attrs().Index] = true
		}
	}
	byAlias := map[string]netlink.Link{} // links are in ifindex order: the oldest wins
	for _, l := range links {
		a := l.Attrs()
		if owned(a) && !wanted[a.Name] && byAlias[a.Alias] == nil {
			byAlias[a.Alias] = l
		}
	}
	for _, t := range tunnels {
		if cur[t.LinkName] != nil {
			continue
		}
		if l := byAlias[AliasPrefix+t.ID]; l != nil && !claimed[l.Attrs().Index] {
			cur[t.LinkName] = l
			claimed[l.Attrs().Index] = true
		}
	}
	return cur, claimed
}

// owned reports whether a link was created by meshwan.
func owned(a *netlink.LinkAttrs) bool {
	return strings.HasPrefix(a.Name, dataplane.LinkPrefix) && strings.HasPrefix(a.Alias, AliasPrefix)
}

// ensureTunnel makes one GRE link match t and returns it. cur is the link
// resolve found for t (nil: none), possibly under another name.
func (m *Manager) ensureTunnel(t dataplane.Tunnel, cur netlink.Link, names nameTable) (netlink.Link, error) {
	alias := AliasPrefix + t.ID
	mtu := t.EffectiveMTU()
	if cur != nil && !sameGRE(cur, t) {
		if err := m.h.LinkDel(cur); err != nil {
			return nil, fmt.Errorf("delete to re-create: %w", err)
		}
		names.drop(cur.Attrs())
		m.log.Info("link deleted to re-create", "link", t.LinkName, "deleted", cur.Attrs().Name, "tunnel_id", t.ID, "reason", describe(cur))
		cur = nil
	}
	if cur == nil {
		g := newGRE(t)
		if err := m.h.LinkAdd(g); err != nil {
			return nil, fmt.Errorf("add: %w", err)
		}
		m.log.Info("link created", "link", t.LinkName, "tunnel_id", t.ID,
			"local", t.LocalUnderlay.String(), "remote", t.RemoteUnderlay.String(), "mtu", mtu)
		cur = g
		names.add(g.Attrs())
	} else if old := cur.Attrs(); old.Name != t.LinkName {
		// No link has the name (resolve would have picked it), but one
		// may hold it as an altname: fail before any down.
		if holder, taken := names[t.LinkName]; taken && holder != old.Index {
			return nil, fmt.Errorf("rename from %s: ifindex %d holds %s as an altname", old.Name, holder, t.LinkName)
		}
		names.drop(old)
		err := m.rename(cur, t)
		names.add(cur.Attrs()) // renamed or not
		if err != nil {
			return nil, err
		}
	}
	a := cur.Attrs()
	if a.Alias != alias {
		if err := m.h.LinkSetAlias(cur, alias); err != nil {
			return nil, fmt.Errorf("set alias: %w", err)
		}
		m.log.Info("link alias set", "link", t.LinkName, "alias", alias)
	}
	if a.MTU != mtu {
		if err := m.h.LinkSetMTU(cur, mtu); err != nil {
			return nil, fmt.Errorf("set mtu %d: %w", mtu, err)
		}
		m.log.Info("link mtu set", "link", t.LinkName, "mtu", mtu, "was", a.MTU)
	}

	// GRO set before the link is up: turned off, no decrypted packet
	// reaches its GRO cells (see the package comment).
	gro, err := m.h.LinkGRO(cur)
	if err != nil {
		return nil, err
	}
	if gro != m.gro {
		if err := m.h.LinkSetGRO(cur, m.gro); err != nil {
			return nil, err
		}
		m.log.Info("link gro set", "link", t.LinkName, "gro", m.gro)
	}

	addrs, err := kernel.RetryDump(func() ([]netlink.Addr, error) { return m.h.AddrList(cur, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	up := a.Flags&net.FlagUp != 0
	if !up || slices.ContainsFunc(addrs, isV6LinkLocal) {
		if err := m.setAddrGenModeNone(cur); err != nil {
			return nil, err
		}
	}
	if !up {
		if err := m.h.LinkSetUp(cur); err != nil {
			return nil, fmt.Errorf("set up: %w", err)
		}
		m.log.Info("link up", "link", t.LinkName)
	}
	return cur, m.applyAddrs(cur, t, addrs)
}

func (m *Manager) setAddrGenModeNone(l netlink.Link) error {
	err := m.h.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EAFNOSUPPORT):
		// IPv6 is disabled in this kernel: no link-local will appear.
		m.log.Debug("ipv6 unavailable, addrgenmode not set", "link", l.Attrs().Name)
		return nil
	default:
		return fmt.Errorf("set addrgenmode none: %w", err)
	}
}

// applyAddrs leaves exactly t.LocalInner on the link. cur must be the
// link's addresses as listed before any change.
func (m *Manager) applyAddrs(l netlink.Link, t dataplane.Tunnel, cur []netlink.Addr) error {
	want := t.LocalInner
	have := false
	for _, a := range cur {
		if p, ok := addrPrefix(a); ok && p == want {
			have = true
			continue
		}
		a := a
		if err := m.h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("delete address %v: %w", a.IPNet, err)
		}
		m.log.Info("address deleted", "link", t.LinkName, "addr", a.IPNet.String())
	}
	if have {
		return nil
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}}
	if err := m.h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add address %v: %w", want, err)
	}
	m.log.Info("address added", "link", t.LinkName, "addr", want.String())
	return nil
}

// newGRE builds the link LinkAdd creates for t.
func newGRE(t dataplane.Tunnel) *netlink.Gretun {
	attrs := netlink.NewLinkAttrs() // TxQLen -1: see the package comment
	attrs.Name = t.LinkName
	attrs.MTU = t.EffectiveMTU()
	// No Alias here: the kernel ignores IFLA_IFALIAS in a create request
	// (found on the real kernel), so ensureTunnel sets it right after.
	return &netlink.Gretun{
		LinkAttrs: attrs,
		Local:     t.LocalUnderlay.AsSlice(),
		Remote:    t.RemoteUnderlay.AsSlice(),
		Ttl:       greTTL,
		PMtuDisc:  1,
	}
}

// sameGRE reports whether l is an IPv4 GRE link with t's endpoints and our
// fixed parameters, i.e. whether it can be kept.
func sameGRE(l netlink.Link, t dataplane.Tunnel) bool {
	g, ok := l.(*netlink.Gretun)
	if !ok || g.Type() != "gre" || g.FlowBased {
		return false
	}
	return ipIs(g.Local, t.LocalUnderlay) && ipIs(g.Remote, t.RemoteUnderlay) &&
		g.Ttl == greTTL && g.PMtuDisc == 1 && g.IKey == 0 && g.OKey == 0
}

func describe(l netlink.Link) string {
	if g, ok := l.(*netlink.Gretun); ok {
		return fmt.Sprintf("gre local %v remote %v ttl %d pmtudisc %d", g.Local, g.Remote, g.Ttl, g.PMtuDisc)
	}
	return "type " + l.Type()
}

func ipIs(ip net.IP, a netip.Addr) bool {
	b, ok := netip.AddrFromSlice(ip)
	return ok && b.Unmap() == a
}

func addrPrefix(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func isV6LinkLocal(a netlink.Addr) bool {
	return a.IPNet != nil && a.IP.To4() == nil && a.IP.IsLinkLocalUnicast()
}

// Cleanup deletes every link meshwan created (prefix and alias) and every
// route of ours (ProtoStatic and ProtoBGP) left in the main table. Routes
// through a deleted link vanish with it; the second pass catches any left
// behind (e.g. BGP routes via a LAN router).
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = nil
	links, err := kernel.RetryDump(m.h.LinkList)
	if err != nil {
		return fmt.Errorf("link cleanup: list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if !owned(l.Attrs()) {
			continue
		}
		if err := m.h.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", l.Attrs().Name, err))
			continue
		}
		m.log.Info("link deleted", "link", l.Attrs().Name)
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	table, err := m.listMain()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := m.writeRoutes(ctx, nil, table, isOurs); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("link cleanup: %w", err)
	}
	return nil
}

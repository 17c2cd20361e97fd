package link

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrRouteConflict is wrapped by the error of a route apply that left a
// wanted route out because a foreign route holds its key: retrying
// cannot fix it, an operator must remove the other route.
var ErrRouteConflict = errors.New("a route of another protocol holds the key")

// ApplyRoutes makes the main table's routes with protocol ProtoStatic or
// ProtoBGP (ours) equal to rs, the whole edge's routes. It reads the
// table once and writes only the difference: one RouteReplace per new or
// changed (Dst, Metric), so a route switch costs one netlink write; a
// RouteDel per route of ours not wanted and per extra copy of one. It
// never touches a foreign route: a wanted route whose (Dst, Metric) a
// foreign route holds is left out and reported (the error wraps
// ErrRouteConflict; the log has it once per change of the conflict set).
// Invalid routes (checkRoutes) are refused, the others applied. A route
// write that fails (a gateway whose link is gone: ENETUNREACH) does not
// stop the others; every failure is returned joined.
func (m *Manager) ApplyRoutes(ctx context.Context, rs []kernel.Route) error {
	want, err := checkRoutes(rs)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	table, lerr := m.listMain()
	if lerr != nil {
		return fmt.Errorf("routes: %w", lerr)
	}
	if err := errors.Join(err, m.writeRoutes(ctx, want, table, isOurs)); err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	return nil
}

// Routes returns our routes in the main table (protocols ProtoStatic and
// ProtoBGP), sorted, e.g. for the owner to adopt BGP routes at start.
func (m *Manager) Routes(ctx context.Context) ([]kernel.Route, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	table, err := m.listMain()
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	table = slices.DeleteFunc(table, func(r kernel.Route) bool { return !isOurs(r.Protocol) })
	slices.SortFunc(table, compareRoute)
	return table, nil
}

func isOurs(protocol int) bool { return protocol == kernel.ProtoStatic || protocol == kernel.ProtoBGP }

// listMain reads the IPv4 routes of the main table (one dump).
func (m *Manager) listMain() ([]kernel.Route, error) {
	all, err := kernel.RetryDump(func() ([]netlink.Route, error) {
		return m.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: kernel.MainTable}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := make([]kernel.Route, 0, len(all))
	for _, r := range all {
		if k, ok := kernel.RouteFromNetlink(r); ok {
			out = append(out, k)
		}
	}
	return out, nil
}

// writeRoutes carries out planRoutes(want, table, owned). Callers hold
// m.mu.
func (m *Manager) writeRoutes(ctx context.Context, want, table []kernel.Route, owned func(int) bool) error {
	p := planRoutes(want, table, owned)
	var errs []error
	for _, r := range p.Dedup {
		if err := m.h.RouteDel(r.NetlinkRoute(kernel.MainTable)); err != nil {
			errs = append(errs, fmt.Errorf("delete duplicate route %v: %w", r, err))
			continue
		}
		m.log.Info("duplicate route deleted", "route", r.String())
	}
	for _, r := range p.Replace {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := m.h.RouteReplace(r.NetlinkRoute(kernel.MainTable)); err != nil {
			errs = append(errs, fmt.Errorf("install route %v: %w", r, err))
			continue
		}
		m.log.Info("route installed", "route", r.String())
	}
	for _, r := range p.Delete {
		if err := m.h.RouteDel(r.NetlinkRoute(kernel.MainTable)); err != nil {
			errs = append(errs, fmt.Errorf("delete route %v: %w", r, err))
			continue
		}
		m.log.Info("route deleted", "route", r.String())
	}
	conflicts := make([]string, len(p.Conflicts))
	for i, r := range p.Conflicts {
		conflicts[i] = r.String()
	}
	if c := strings.Join(conflicts, "; "); c != m.conflicts {
		m.conflicts = c
		if c != "" {
			m.log.Warn("routes not installed: the main table has a route of another protocol with the same prefix and metric", "routes", c)
		}
	}
	if len(conflicts) > 0 {
		errs = append(errs, fmt.Errorf("%w, not touching it: %s", ErrRouteConflict, m.conflicts))
	}
	return errors.Join(errs...)
}

// Status is the observed state of one tunnel's link.
type Status struct {
	TunnelID  string
	Link      string
	Present   bool   // the link exists
	Up        bool   // administratively up (IFF_UP)
	LowerUp   bool   // IFF_LOWER_UP; a GRE link has it whenever it is up
	OperState string // kernel operstate; "unknown" is normal for GRE
	MTU       int
	RxBytes   uint64
	TxBytes   uint64
	RxPackets uint64
	TxPackets uint64
	RxErrors  uint64
	TxErrors  uint64
	RxDropped uint64
	TxDropped uint64
}

// Status reports the links of the tunnels of the last Apply, sorted by
// link name, from one link dump. A tunnel whose link is missing has
// Present false. It makes no change.
func (m *Manager) Status(ctx context.Context) ([]Status, error) {
	m.mu.Lock()
	tunnels := slices.Clone(m.last)
	m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	links, err := kernel.RetryDump(m.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("link status: list links: %w", err)
	}
	byName := map[string]netlink.Link{}
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	out := make([]Status, 0, len(tunnels))
	for _, t := range tunnels {
		s := Status{TunnelID: t.ID, Link: t.LinkName}
		if l, ok := byName[t.LinkName]; ok {
			a := l.Attrs()
			s.Present = true
			s.Up = a.Flags&net.FlagUp != 0
			s.LowerUp = a.RawFlags&unix.IFF_LOWER_UP != 0
			s.OperState = a.OperState.String()
			s.MTU = a.MTU
			if st := a.Statistics; st != nil {
				s.RxBytes, s.TxBytes = st.RxBytes, st.TxBytes
				s.RxPackets, s.TxPackets = st.RxPackets, st.TxPackets
				s.RxErrors, s.TxErrors = st.RxErrors, st.TxErrors
				s.RxDropped, s.TxDropped = st.RxDropped, st.TxDropped
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Link, b.Link) })
	return out, nil
}

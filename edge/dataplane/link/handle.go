package link

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Handle lists exactly the netlink calls this package makes. *netlink.Handle
// implements it (see NewNetlinkHandle); Fake implements it in memory for
// unit tests. Keep it narrow: a call added here must be added to Fake.
type Handle interface {
	LinkList() ([]netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetAlias(link netlink.Link, alias string) error
	// LinkSetIP6AddrGenMode with nl.IN6_ADDR_GEN_MODE_NONE is
	// `ip link set DEV addrgenmode none`. netlink v1.3.1 has it as a
	// method (IFLA_AF_SPEC/AF_INET6/IFLA_INET6_ADDR_GEN_MODE), which is
	// namespace-safe, unlike writing /proc/sys/net/ipv6/conf/DEV/
	// addr_gen_mode, which would act on the namespace of the calling
	// thread rather than the handle's.
	LinkSetIP6AddrGenMode(link netlink.Link, mode int) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ Handle = (*netlink.Handle)(nil)

// NewNetlinkHandle returns a real Handle acting in network namespace ns, or
// in the caller's namespace when ns is not open (netns.None()). The handle
// keeps its own sockets in ns: nothing switches the calling thread's
// namespace afterwards. Close it with Close (it is a *netlink.Handle).
func NewNetlinkHandle(ns netns.NsHandle) (*netlink.Handle, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	return h, nil
}

// dumpRetries bounds re-reads of a dump the kernel flagged as interrupted.
const dumpRetries = 5

// RetryDump re-runs a list call while it fails with
// netlink.ErrDumpInterrupted; every netlink dump of the edge goes through
// it (the steer package's too). Pitfall: since netlink v1.3 a dump that
// raced with a change returns ErrDumpInterrupted, and RouteListFiltered
// then returns no routes at all; treating that as "nothing there" would
// make Apply re-add (or Cleanup miss) everything.
func RetryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

package kernel

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink lists exactly the netlink (and ethtool) calls meshwan makes:
// the link package's links, addresses, GRO and main-table routes, the
// steer package's ip rules and class-table routes. NetlinkHandle
// implements it on the kernel (NewNetlinkHandle); FakeNetlink models it in
// memory for unit tests. Keep it narrow: a call added here must be added
// to FakeNetlink, with the kernel's semantics.
type Netlink interface {
	LinkList() ([]netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	// LinkSetDown takes a link down. Pitfall: the kernel then flushes
	// every IPv4 route through it, in every table and of every protocol.
	LinkSetDown(link netlink.Link) error
	// LinkSetName renames a link in place (`ip link set DEV name NEW`);
	// ifindex, addresses and routes stay. Kernels before 6.2 refuse it
	// with EBUSY while the link is up (6.2 allowed live renames).
	LinkSetName(link netlink.Link, name string) error
	// LinkAddAltName adds an alternative name (IFLA_ALT_IFNAME, Linux
	// 5.5+; `ip link property add DEV altname NAME`). Names and altnames
	// share one namespace.
	LinkAddAltName(link netlink.Link, name string) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetAlias(link netlink.Link, alias string) error
	// LinkSetIP6AddrGenMode with nl.IN6_ADDR_GEN_MODE_NONE is
	// `ip link set DEV addrgenmode none`. netlink v1.3.1 has it as a
	// method (IFLA_AF_SPEC/AF_INET6/IFLA_INET6_ADDR_GEN_MODE), which is
	// namespace-safe, unlike writing /proc/sys/net/ipv6/conf/DEV/
	// addr_gen_mode, which would act on the namespace of the calling
	// thread rather than the handle's.
	LinkSetIP6AddrGenMode(link netlink.Link, mode int) error
	// LinkGRO and LinkSetGRO read and set generic receive offload
	// (`ethtool -k/-K DEV gro`). Not netlink: the ethtool ioctl, on a
	// socket in the handle's namespace.
	LinkGRO(link netlink.Link) (bool, error)
	LinkSetGRO(link netlink.Link, on bool) error

	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error

	// RouteListFiltered honours RT_FILTER_TABLE (table 0: every table;
	// without the flag: the main table), RT_FILTER_PROTOCOL and
	// RT_FILTER_OIF. Dumps go through RetryDump.
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	// RouteReplace installs a route or replaces the one with its key
	// (table, dst, tos, metric) whatever that one's protocol: callers
	// check ownership first. Gateways only (no LinkIndex) let the kernel
	// find the link of each gateway; MultiPath makes an ECMP route.
	RouteReplace(route *netlink.Route) error
	// RouteDel deletes the first route with the request's key whose
	// protocol and gateways match those the request names (ESRCH: none).
	RouteDel(route *netlink.Route) error

	RuleListFiltered(family int, filter *netlink.Rule, filterMask uint64) ([]netlink.Rule, error)
	// RuleAdd fails with EEXIST for a rule equal to an existing one.
	RuleAdd(rule *netlink.Rule) error
	RuleDel(rule *netlink.Rule) error
}

// NetlinkHandle is the real Netlink: a netlink handle and an ethtool ioctl
// socket, both in one network namespace.
type NetlinkHandle struct {
	*netlink.Handle
	ethtoolFD int // AF_INET datagram socket in the handle's namespace
}

var _ Netlink = (*NetlinkHandle)(nil)

// NewNetlinkHandle returns a real Netlink acting in network namespace ns, or
// in the caller's namespace when ns is not open (netns.None()). The handle
// keeps its own sockets in ns: nothing switches the calling thread's
// namespace afterwards. Close it with Close.
func NewNetlinkHandle(ns netns.NsHandle) (*NetlinkHandle, error) {
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
	fd, err := socketAt(ns)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open ethtool socket: %w", err)
	}
	return &NetlinkHandle{Handle: h, ethtoolFD: fd}, nil
}

// Close closes both sockets.
func (h *NetlinkHandle) Close() {
	h.Handle.Close()
	_ = unix.Close(h.ethtoolFD)
}

// socketAt opens an AF_INET datagram socket in ns (the caller's namespace
// when ns is not open); a socket stays in the namespace it was created in.
func socketAt(ns netns.NsHandle) (int, error) {
	open := func() (int, error) {
		return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	}
	if !ns.IsOpen() {
		return open()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	fd, err := open()
	if rerr := netns.Set(orig); rerr != nil {
		// The thread stays locked, so the runtime discards it with this
		// goroutine rather than reuse it in the wrong namespace.
		if err == nil {
			_ = unix.Close(fd)
		}
		return -1, fmt.Errorf("restore namespace: %w", rerr)
	}
	runtime.UnlockOSThread()
	return fd, err
}

// The legacy ethtool GRO get/set commands (linux/ethtool.h); the kernel
// maps them onto the NETIF_F_GRO feature.
const (
	ethtoolGGRO = 0x0000002b
	ethtoolSGRO = 0x0000002c
)

type ethtoolValue struct{ cmd, data uint32 }

// ifreqData is struct ifreq with ifr_data set (40 bytes on 64-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

func (h *NetlinkHandle) ethtool(name string, v *ethtoolValue) error {
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], name)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(h.ethtoolFD), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return errno
	}
	return nil
}

// LinkGRO implements Netlink.
func (h *NetlinkHandle) LinkGRO(link netlink.Link) (bool, error) {
	v := &ethtoolValue{cmd: ethtoolGGRO}
	if err := h.ethtool(link.Attrs().Name, v); err != nil {
		return false, fmt.Errorf("ethtool get gro %s: %w", link.Attrs().Name, err)
	}
	return v.data != 0, nil
}

// LinkSetGRO implements Netlink.
func (h *NetlinkHandle) LinkSetGRO(link netlink.Link, on bool) error {
	v := &ethtoolValue{cmd: ethtoolSGRO}
	if on {
		v.data = 1
	}
	if err := h.ethtool(link.Attrs().Name, v); err != nil {
		return fmt.Errorf("ethtool set gro %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// dumpRetries bounds re-reads of a dump the kernel flagged as interrupted.
const dumpRetries = 5

// RetryDump re-runs a list call while it fails with
// netlink.ErrDumpInterrupted; every netlink dump of the edge goes through
// it. Pitfall: since netlink v1.3 a dump that
// raced with a change returns ErrDumpInterrupted, and RouteListFiltered
// then returns no routes at all; treating that as "nothing there" would
// make an Apply re-add (or a Cleanup miss) everything.
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

// Package kernel owns meshwan's contract with the Linux kernel: the one
// table of numbers meshwan claims (route protocols, routing tables, ip rule
// priorities, packet marks), the one netlink shim and the one nftables
// shim every data-plane backend goes through, and one in-memory fake of
// each that models the kernel's behaviour (keys, replace semantics, ECMP)
// and can be told to fail chosen calls. The fakes are for unit tests of
// the backends' logic; the VM lab proves the real kernel.
//
// Invariant: a number meshwan claims is defined here and nowhere else, so
// "which routes, rules and marks are ours" has one answer.
package kernel

import "net/netip"

// Route protocols (rtm_protocol / FRA_PROTOCOL) meshwan stamps on what it
// installs; only routes and rules carrying one of them are ever replaced or
// deleted. 240-242 are unassigned in the kernel's rtnetlink.h, iproute2's
// rt_protos and FRR's range (186-197); `ip route show proto 240` etc.
// list exactly one owner's state.
const (
	// ProtoStatic marks the static routes over tunnels (routing "static").
	ProtoStatic = 240
	// ProtoBGP marks the routes learned over BGP.
	ProtoBGP = 241
	// ProtoSteer marks the steering tables' routes and ip rules.
	ProtoSteer = 242
)

// MainTable is the kernel's main routing table (RT_TABLE_MAIN), where the
// static and BGP routes go.
const MainTable = 254

// Steering numbers: traffic class i (0-based) gets mark (i+1) << 24 within
// SteerMarkMask, routing table SteerTableBase+i+1 and an ip rule at
// priority SteerRulePriorityBase+i+1 (steer.Numbering derives them).
const (
	SteerMarkMask         uint32 = 0x7f000000
	SteerTableBase               = 7400
	SteerRulePriorityBase        = 7400
)

// Route is one route meshwan owns in the main table: Dst via the
// gateways in Via (several make an ECMP route), at Metric, stamped with
// Protocol (ProtoStatic or ProtoBGP). Via is sorted and without
// duplicates; the kernel finds the link from the gateway (each is the far
// end of a tunnel /30). The kernel keys a route by (table, Dst, Metric):
// no two routes of one plan may share that key.
type Route struct {
	Dst      netip.Prefix
	Via      []netip.Addr
	Metric   int
	Protocol int
}

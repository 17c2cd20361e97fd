package ipsec

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// KernelSAs returns the (source, destination) address pairs of the ESP
// SAs installed in the kernel (the current network namespace). The agent
// probes a tunnel only while its outbound SA (local -> remote underlay)
// exists: earlier, a probe would hit the trap policy and start an IKE
// negotiation of its own.
func KernelSAs() (map[[2]netip.Addr]bool, error) {
	states, err := netlink.XfrmStateList(netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list xfrm states: %w", err)
	}
	out := make(map[[2]netip.Addr]bool, len(states))
	for _, s := range states {
		if s.Proto != netlink.XFRM_PROTO_ESP {
			continue
		}
		src, ok1 := netip.AddrFromSlice(s.Src)
		dst, ok2 := netip.AddrFromSlice(s.Dst)
		if ok1 && ok2 {
			out[[2]netip.Addr{src.Unmap(), dst.Unmap()}] = true
		}
	}
	return out, nil
}

package steer

import (
	"net/netip"

	"github.com/meshwan/meshwan/edge/dataplane"
)

// DestsFromDesired gives the destinations of static routing: each tunnel's
// RemoteLANs, one Dest per prefix; a prefix listed by several tunnels (one
// site over two transports, or two hubs) gets all of them. Prefixes are
// masked, non-IPv4 ones dropped, tunnel IDs sorted, Dests sorted by prefix.
// It does not look at d.BGP: with BGP use DestsFromNextHops.
func DestsFromDesired(d dataplane.Desired) []Dest {
	tunnels := make(map[string]dataplane.Tunnel, len(d.Tunnels))
	var dests []Dest
	for _, t := range d.Tunnels {
		tunnels[t.ID] = t
		for _, p := range t.RemoteLANs {
			dests = append(dests, Dest{Prefix: p, Tunnels: []string{t.ID}})
		}
	}
	return normalize(dests, tunnels)
}

// DestsFromNextHops gives the destinations of BGP routing from the next
// hops each prefix is learned with (bgp.Speaker.Candidates): a next hop is
// the RemoteInner of the tunnel it was learned over. Next hops that are no
// tunnel's RemoteInner are ignored, and so are prefixes left with none.
func DestsFromNextHops(d dataplane.Desired, nextHops map[netip.Prefix][]netip.Addr) []Dest {
	tunnels := make(map[string]dataplane.Tunnel, len(d.Tunnels))
	byInner := map[netip.Addr][]string{}
	for _, t := range d.Tunnels {
		tunnels[t.ID] = t
		byInner[t.RemoteInner] = append(byInner[t.RemoteInner], t.ID)
	}
	var dests []Dest
	for p, nhs := range nextHops {
		var ids []string
		for _, nh := range nhs {
			ids = append(ids, byInner[nh.Unmap()]...)
		}
		dests = append(dests, Dest{Prefix: p, Tunnels: ids})
	}
	return normalize(dests, tunnels)
}

package dataplane

import (
	"net/netip"
	"slices"
)

// Localize adapts d to a site behind NAT. The controller sends each
// tunnel's ends as the peers reach them: behind NAT, LocalUnderlay is the
// NAT's public address, which is on no interface of this host, so the
// kernel could not send GRE from it and charon could not bind to it.
// iface maps transport names to their interface addresses (the edge's
// --transport flag). A tunnel whose transport's interface address differs
// from the address the controller sent gets LocalUnderlay = the
// interface's address (GRE local, IKE local_addrs, the SAs' source: what
// the kernel sees) and PublicUnderlay = the address sent (the IKE
// identity the peer expects, see ipsec.ConnMessage). A tunnel whose
// transport is not in iface, or whose interface holds the sent address,
// is left as sent. A tunnel behind NAT initiates IKE (Passive false),
// whatever the controller chose: the peer cannot reach this end before it
// opens the NAT mapping, and the mapping lives only while this end keeps
// it alive (charon's NAT-T keepalives).
//
// Localize is idempotent and may run again on its own output with new
// interface addresses (a DHCP renumbering behind the NAT): the public
// address is PublicUnderlay when set. It never modifies d's slices.
func Localize(d Desired, iface map[string]netip.Addr) Desired {
	if len(iface) == 0 {
		return d
	}
	d.Tunnels = slices.Clone(d.Tunnels)
	for i := range d.Tunnels {
		t := &d.Tunnels[i]
		public := t.LocalUnderlay
		if t.PublicUnderlay.IsValid() {
			public = t.PublicUnderlay
		}
		local, ok := iface[t.LocalTransport]
		if !ok || !local.IsValid() || local == public {
			t.LocalUnderlay, t.PublicUnderlay = public, netip.Addr{}
			continue
		}
		t.LocalUnderlay, t.PublicUnderlay = local, public
		t.Passive = false
	}
	return d
}

// LocalIdentity is the address this end identifies itself by in IKE: the
// public one the peer knows (PublicUnderlay behind NAT, else
// LocalUnderlay).
func (t Tunnel) LocalIdentity() netip.Addr {
	if t.PublicUnderlay.IsValid() {
		return t.PublicUnderlay
	}
	return t.LocalUnderlay
}

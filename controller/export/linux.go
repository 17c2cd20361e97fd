package export

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/edge/dataplane"
)

// Linux file names.
const (
	FileSwanctl = "swanctl.conf"
	FileGRE     = "meshwan-gre.sh"
	FileNFT     = "meshwan.nft"
	FileFRR     = "frr.conf"
)

// FirstRouteMetric is the kernel metric of the first tunnel's static route
// to a prefix; each further tunnel carrying the same prefix (another WAN
// transport) gets the next one, so it is the backup.
const FirstRouteMetric = 100

func renderLinux(in Input) ([]File, error) {
	files := []File{
		{FileSwanctl, swanctl(in)},
		{FileGRE, greScript(in)},
		{FileNFT, nftRules(in)},
	}
	if in.Topology.Routing == intent.RoutingBGP {
		files = append(files, File{FileFRR, frrConf(in)})
	}
	return files, nil
}

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }

// SwanctlConnName is the tunnel's connection name in the exported
// swanctl.conf: the managed end's name (ipsec.ConnName, "mw-<id>") with
// every '.' of the id made '_', since swanctl.conf reads a '.' in a
// section name as a key path separator (found loading an export). Names
// are local to each end: nothing depends on the two being equal.
func SwanctlConnName(id string) string { return "mw-" + strings.ReplaceAll(id, ".", "_") }

// linkName is the GRE link's name, the same as on the managed end
// (dataplane.LinkName: from the /30, unique per tunnel).
func linkName(t Tunnel) string { return dataplane.LinkName(t.LocalInner) }

// swanctl renders the connections as a meshwan edge loads them over VICI
// (ipsec.ConnMessage): IKEv2, PSK with the underlay addresses as
// identities, the topology's proposals and lifetimes with 10% over/rand
// time, transport-mode ESP for GRE only (dynamic[gre]); the initiating end
// starts at once and restarts on DPD, the other installs trap policies
// only. The secret is the key's bytes in hex (swanctl's 0x form), since a
// meshwan key is 32 random bytes.
func swanctl(in Input) string {
	p := in.Topology.IPsec
	var b strings.Builder
	b.WriteString(header("#", in, "strongSwan swanctl.conf (swanctl --load-all; strongSwan >= 5.9.6)", true))
	b.WriteString("# One IKEv2 connection per tunnel; ESP in transport mode protects only the GRE\n# packets between the two WAN addresses.\n")
	b.WriteString("connections {\n")
	for _, t := range in.Tunnels {
		local, remote := t.LocalUnderlay.String(), t.RemoteUnderlay.String()
		start, dpd := "trap", "trap"
		if t.Initiates {
			start, dpd = "trap|start", "restart"
		}
		fmt.Fprintf(&b, "  # to site %s (%s -> %s)\n", t.RemoteSite, t.LocalTransport, t.RemoteTransport)
		fmt.Fprintf(&b, "  %s {\n", SwanctlConnName(t.ID))
		for _, kv := range [][2]string{
			{"version", "2"}, {"local_addrs", local}, {"remote_addrs", remote},
			{"proposals", p.IKEProposal},
			{"rekey_time", secs(p.IKELifetime)}, {"over_time", secs(p.IKELifetime / 10)}, {"rand_time", secs(p.IKELifetime / 10)},
			{"dpd_delay", secs(p.DPD)}, {"keyingtries", "0"}, {"mobike", "no"}, {"encap", "no"}, {"send_certreq", "no"},
		} {
			fmt.Fprintf(&b, "    %s = %s\n", kv[0], kv[1])
		}
		fmt.Fprintf(&b, "    local {\n      auth = psk\n      id = %s\n    }\n", local)
		fmt.Fprintf(&b, "    remote {\n      auth = psk\n      id = %s\n    }\n", remote)
		b.WriteString("    children {\n      gre {\n")
		for _, kv := range [][2]string{
			{"mode", "transport"}, {"local_ts", "dynamic[gre]"}, {"remote_ts", "dynamic[gre]"},
			{"esp_proposals", p.ESPProposal},
			{"rekey_time", secs(p.ESPLifetime)}, {"life_time", secs(p.ESPLifetime + p.ESPLifetime/10)}, {"rand_time", secs(p.ESPLifetime / 10)},
			{"start_action", start}, {"dpd_action", dpd}, {"close_action", "trap"},
		} {
			fmt.Fprintf(&b, "        %s = %s\n", kv[0], kv[1])
		}
		b.WriteString("      }\n    }\n  }\n")
	}
	b.WriteString("}\n\nsecrets {\n")
	for i, t := range in.Tunnels {
		fmt.Fprintf(&b, "  ike-%d {\n    id-local = %s\n    id-remote = %s\n    secret = 0x%s\n  }\n", i, t.LocalUnderlay, t.RemoteUnderlay, hex.EncodeToString(t.PSK))
	}
	b.WriteString("}\n")
	return b.String()
}

// routes lists the static routes of the site: every RemoteLAN of every
// tunnel via the tunnel's far end, the first tunnel (in id order) to a
// prefix at FirstRouteMetric, the next one above it.
type route struct {
	prefix netip.Prefix
	via    netip.Addr
	link   string
	metric int
}

func routes(in Input) []route {
	seen := map[netip.Prefix]int{}
	var out []route
	for _, t := range in.Tunnels {
		for _, p := range t.RemoteLANs {
			out = append(out, route{prefix: p, via: t.RemoteInner, link: linkName(t), metric: FirstRouteMetric + seen[p]})
			seen[p]++
		}
	}
	return out
}

// greScript renders the iproute2 commands. Re-running it replaces the
// links (so a re-export applies cleanly); IPv6 address generation is off
// on each link because a link-local address's packets would trigger IKE
// before the addresses are set (the VM lab met duplicate SAs that way).
func greScript(in Input) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString(header("#", in, "iproute2 GRE links", false))
	b.WriteString("# Run as root once the WAN is up, before swanctl --load-all.\nset -e\n")
	b.WriteString("sysctl -qw net.ipv4.ip_forward=1\n")
	for _, t := range in.Tunnels {
		l := linkName(t)
		fmt.Fprintf(&b, "\n# %s: to site %s (%s -> %s)\n", t.ID, t.RemoteSite, t.LocalTransport, t.RemoteTransport)
		fmt.Fprintf(&b, "if ip link show dev %s >/dev/null 2>&1; then ip link del dev %s; fi\n", l, l)
		fmt.Fprintf(&b, "ip tunnel add %s mode gre local %s remote %s ttl 64\n", l, t.LocalUnderlay, t.RemoteUnderlay)
		fmt.Fprintf(&b, "ip link set dev %s mtu %d addrgenmode none\n", l, in.Topology.MTU)
		fmt.Fprintf(&b, "ip address add %s dev %s\n", t.LocalInner, l)
		fmt.Fprintf(&b, "ip link set dev %s up\n", l)
	}
	if in.Topology.Routing == intent.RoutingStatic {
		b.WriteString("\n# Static routes to the other sites' LANs (routing: static).\n")
		for _, r := range routes(in) {
			fmt.Fprintf(&b, "ip route replace %s via %s dev %s metric %d\n", r.prefix, r.via, r.link, r.metric)
		}
	} else {
		b.WriteString("\n# Routing is BGP: FRR (frr.conf) learns and installs the other sites' LANs.\n")
	}
	return b.String()
}

func elements(ps []netip.Prefix) string {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	ps = slices.Compact(ps)
	s := make([]string, len(ps))
	for i, p := range ps {
		if p.IsSingleIP() {
			s[i] = p.Addr().String()
		} else {
			s[i] = p.String()
		}
	}
	return strings.Join(s, ", ")
}

// nftRules renders the rules of a meshwan edge's table (firewall.Build) in
// nft syntax, in one table "inet meshwan" replaced atomically by nft -f:
// the SNAT exemption (an identity SNAT binding, so a later masquerade
// skips the connection), permits for IKE, NAT-T, ESP and GRE from the
// peers and for the tunnel links (accepts only: they cannot weaken the
// host's own chains, and the host's drops still apply), an MSS clamp on
// the links, and the fail-closed guard: GRE to a peer leaves only inside
// IPsec.
func nftRules(in Input) string {
	var peers, nets, remote []netip.Prefix
	for _, t := range in.Tunnels {
		peers = append(peers, netip.PrefixFrom(t.RemoteUnderlay, 32))
		nets = append(nets, t.LocalInner.Masked())
		remote = append(remote, t.RemoteLANs...)
	}
	set := func(name string, ps []netip.Prefix) string {
		if len(ps) == 0 {
			return fmt.Sprintf("  set %s { type ipv4_addr; flags interval; }\n", name)
		}
		return fmt.Sprintf("  set %s { type ipv4_addr; flags interval; elements = { %s } }\n", name, elements(ps))
	}
	mss := in.Topology.MTU - 40
	var b strings.Builder
	b.WriteString("#!/usr/sbin/nft -f\n")
	b.WriteString(header("#", in, "nftables rules (nft -f)", false))
	b.WriteString("# The table is replaced as a whole; no other table is touched.\n")
	b.WriteString("table inet meshwan\ndelete table inet meshwan\n\ntable inet meshwan {\n")
	b.WriteString(set("peers", peers))
	b.WriteString(set("tunnel_nets", nets))
	b.WriteString(set("local_lans", in.Site.LANPrefixes))
	b.WriteString(set("remote_lans", remote))
	b.WriteString(`
  # Accepts only (policy accept): if your own chains drop by default, copy
  # these permits there.
  chain input {
    type filter hook input priority -10; policy accept;
    meta nfproto ipv4 ip saddr @peers udp dport { 500, 4500 } counter accept comment "ike"
    meta nfproto ipv4 ip saddr @peers meta l4proto esp counter accept comment "esp"
    meta nfproto ipv4 ip saddr @peers meta l4proto gre counter accept comment "gre"
    iifname "mw-*" meta nfproto ipv4 ip saddr @tunnel_nets counter accept comment "tunnel-peer (BGP, ping)"
  }

  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname "mw-*" meta nfproto ipv4 ip daddr @local_lans counter accept comment "lan-from-tunnel"
    oifname "mw-*" meta nfproto ipv4 ip saddr @local_lans counter accept comment "lan-to-tunnel"
    iifname "mw-*" oifname "mw-*" counter accept comment "tunnel-transit"
  }

  chain mss {
    type filter hook forward priority -150; policy accept;
`)
	fmt.Fprintf(&b, "    oifname \"mw-*\" tcp flags syn tcp option maxseg size set %d comment \"mss-out\"\n", mss)
	fmt.Fprintf(&b, "    iifname \"mw-*\" tcp flags syn tcp option maxseg size set %d comment \"mss-in\"\n", mss)
	b.WriteString(`  }

  # SNAT exemption: an identity SNAT binding, not an accept (an accept here
  # would not stop a masquerade in a later nat chain).
  chain postrouting {
    type nat hook postrouting priority 90; policy accept;
    oifname "mw-*" meta nfproto ipv4 counter snat ip to ip saddr comment "keep-src-tunnel-out"
    meta nfproto ipv4 ip saddr @local_lans ip daddr @remote_lans counter snat ip to ip saddr comment "keep-src-lan-to-remote"
    meta nfproto ipv4 ip saddr @tunnel_nets counter snat ip to ip saddr comment "keep-src-tunnel-net"
    meta nfproto ipv4 ip daddr @peers meta l4proto { esp, gre } counter snat ip to ip saddr comment "keep-src-esp-gre"
    meta nfproto ipv4 ip daddr @peers udp dport { 500, 4500 } counter snat ip to ip saddr comment "keep-src-ike"
  }

  # Fail closed: GRE to a peer never leaves without IPsec.
  chain gre_guard {
    type filter hook output priority -10; policy accept;
    meta nfproto ipv4 ip daddr @peers meta l4proto gre rt ipsec missing counter drop comment "gre-needs-ipsec"
  }
}
`)
	return b.String()
}

// frrConf renders an FRR bgpd configuration: the site's ASN, one eBGP
// neighbor per tunnel on its far /30 address with the far site's ASN and
// the managed edge's timers (keepalive 3 s, hold 9 s, edge/bgp), and the
// site's LANs as network statements. zebra must run too (it installs the
// learned routes).
func frrConf(in Input) string {
	var b strings.Builder
	b.WriteString(header("!", in, "FRR frr.conf (bgpd + zebra)", false))
	b.WriteString("frr defaults traditional\n")
	fmt.Fprintf(&b, "hostname %s\n!\n", in.Site.Name)
	fmt.Fprintf(&b, "router bgp %d\n", in.Site.ASN)
	if len(in.Tunnels) > 0 {
		fmt.Fprintf(&b, " bgp router-id %s\n", in.Tunnels[0].LocalInner.Addr())
	}
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp network import-check\n")
	for _, t := range in.Tunnels {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", t.RemoteInner, t.RemoteASN)
		fmt.Fprintf(&b, " neighbor %s description %s\n", t.RemoteInner, t.ID)
		fmt.Fprintf(&b, " neighbor %s update-source %s\n", t.RemoteInner, t.LocalInner.Addr())
		fmt.Fprintf(&b, " neighbor %s timers 3 9\n", t.RemoteInner)
	}
	b.WriteString(" !\n address-family ipv4 unicast\n")
	for _, p := range in.Site.LANPrefixes {
		fmt.Fprintf(&b, "  network %s\n", p)
	}
	b.WriteString(" exit-address-family\nexit\n!\n")
	return b.String()
}

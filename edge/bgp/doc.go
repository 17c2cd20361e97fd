// Package bgp owns the edge's BGP: an embedded GoBGP v3 speaker (no
// separate gobgpd) with the site's ASN, one eBGP session per tunnel over
// the tunnel's /30 (optionally one to a LAN router), announcing the
// site's LAN prefixes, and the kernel route sync that writes the best
// paths (ECMP where several tunnels tie) into a kernel routing table with
// protocol RouteProtocol (241).
//
// The pieces and where they live:
//   - config.go: Config, Desired, Neighbor (domain types, netip) and
//     FromDataplane, the mapping from the data plane's tunnels;
//   - gobgpconf.go: the pure mapping to GoBGP's API structs (peers,
//     announcements, the LAN-peer policy);
//   - speaker.go: Start, Apply (idempotent diff against what GoBGP was
//     given), Stop;
//   - routes.go: route choice from the RIB (chooseRoute) and the kernel
//     diff (planRoutes), both pure; sync.go runs them; handle.go and
//     fake.go are the narrow netlink shim and its in-memory fake;
//   - status.go: per-session status; gobgplog.go: GoBGP's logger on slog.
//
// README.md describes the ASN plan, how routes are marked in the kernel,
// what happens on an agent restart (graceful restart) and how to peer a
// LAN router.
package bgp

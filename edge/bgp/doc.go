// Package bgp owns the edge's BGP: an embedded GoBGP v3 speaker (no
// separate gobgpd) with the site's ASN, one eBGP session per tunnel over
// the tunnel's /30 (optionally one to a LAN router), announcing the
// site's LAN prefixes, and publishing its RIB (Config.OnRIB). It never
// writes kernel state: the edge's owner turns the RIB into routes with
// Choose (ECMP where several tunnels tie) and writes them itself, so a
// failover never waits for a GoBGP call.
//
// The pieces and where they live:
//   - config.go: Config, Desired, Neighbor (domain types, netip) and
//     FromDataplane, the mapping from the data plane's tunnels;
//   - gobgpconf.go: the pure mapping to GoBGP's API structs (peers,
//     announcements, the LAN-peer policy);
//   - speaker.go: Start, Apply (idempotent diff against what GoBGP was
//     given), Stop;
//   - publish.go: the publish loop (RIB snapshots, the restart hold);
//   - rib.go, routes.go: the RIB, route choice (Choose, chooseRoute) and
//     the reduction of GoBGP's paths (candidateFrom), all pure;
//   - status.go: per-session status; gobgplog.go: GoBGP's logger on slog.
//
// README.md describes the ASN plan, route choice, what happens on an
// agent restart (graceful restart) and how to peer a LAN router.
package bgp

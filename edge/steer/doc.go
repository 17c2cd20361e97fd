// Package steer owns SLA steering on an edge: choosing, per traffic class
// and remote site, the tunnel the class uses (pure, with damping memory),
// and programming that choice into the kernel with packet marks, ip rules
// and one routing table per class.
//
// # Choosing (Steerer.Decide)
//
// Inputs are the desired state (tunnels, SLAs, traffic classes), the
// overlay destinations with the tunnels that reach each (DestsFromDesired
// for static routing, DestsFromNextHops for BGP) and each tunnel's Health
// from probing. For each class, destinations are grouped by the remote
// site(s) their tunnels lead to; per group the class's tunnel is the most
// preferred one meeting the class's SLA, else the usable one that misses
// it least, else none. Damping keeps a class on its tunnel while that
// tunnel is briefly outside the SLA and keeps it from returning to a
// preferred tunnel that is not yet stably good; an unusable tunnel is left
// at once. Decide documents the exact rules.
//
// # Programming (Kernel.Apply)
//
// Class i (its position in PathPolicy.Classes) gets mark (i+1)<<24 inside
// MarkMask 0x7f000000, routing table 7400+i+1 and an ip rule
// `fwmark MARK/0x7f000000 lookup TABLE` at priority 7400+i+1 (see
// Numbering). nftables table "inet meshwan_steer" marks packets in
// prerouting (forwarded) and output (local) at mangle priority; rules go
// in class order and skip packets that already carry a class mark, so the
// first matching class wins; other mark bits are kept. Class tables hold
// only overlay destinations: a marked packet to anything else finds no
// route there and the kernel continues with the next rule, the main table.
// The same holds for a class whose tunnels are all unusable: its table is
// empty and its packets follow the ordinary routes.
//
// Ownership: the nft table is ours entirely; ip rules and routes are ours
// when they carry protocol kernel.ProtoSteer (242), and only those are ever
// replaced or deleted. A route of another protocol in a class table at a
// destination we need is reported, not overwritten.
//
// Apply is declarative: it reads back nftables, ip rules and routes on
// every call, writes only the difference, and a second Apply with the same
// arguments writes nothing (rule handles and counters stay). nftables
// changes are one atomic batch.
//
// Problems met and handled here:
//   - google/nftables allocates set IDs from a package-global counter; the
//     anonymous sets of our rules get IDs from a per-batch counter instead.
//   - A DSCP set lookup needs a right shift google/nftables v0.3.0 cannot
//     express, so a class with several DSCP values gets one rule per value.
//   - Interval sets refuse overlapping or adjacent elements: destination
//     prefixes and port ranges are merged first.
//   - netlink dumps interrupted by a concurrent change are re-read.
//
// docs/steering.md explains the design to operators: how to inspect the
// state, why per-class tables rather than per-path tables, rp_filter on
// the far end, and the limits.
package steer

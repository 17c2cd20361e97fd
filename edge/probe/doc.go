// Package probe owns per-tunnel path health probing on the edge: a small
// UDP echo protocol of our own (wire.go), the statistics and liveness state
// machine fed by it (stats.go, pure: no I/O, no clock reads), and the I/O
// around them: a Prober that sends a request every interval over each
// tunnel's /30 and matches the replies (prober.go), and a Reflector that
// answers requests (reflector.go).
//
// Both Prober and Reflector meet the network only through PacketConn, a
// subset of net.PacketConn; FakeNet is a channel-backed implementation so
// the same tests run over fakes (deterministically, in a synctest bubble)
// and over real UDP sockets on loopback.
//
// Ports: the Reflector listens on DefaultPort (7402). The Prober sends from
// an ephemeral port bound to the tunnel's local address, not from 7402,
// because the edge runs a Reflector on 0.0.0.0:7402 at the same time and Go
// does not set SO_REUSEADDR on UDP sockets, so a second bind would fail.
//
// Exposure: a Reflector answers any valid request, from any source, with a
// reply of the same size, so it cannot amplify; still, bind it to the
// tunnel addresses or let the firewall admit the port only on tunnel
// interfaces. Jitter is the RFC 3550 estimator applied to round-trip
// times (the reflector's holding time removed), not to one-way transit.
package probe

package health

// Fingerprint is the state of a report: the agent and applied version,
// each tunnel's state, probe state, usability, link, IKE and child SA
// states, loaded key serial, each BGP session's state, and the tunnel each class path uses.
// Figures that move all the time (RTT, jitter, loss, counters, the detail
// text, whether a class meets its SLA right now) are not part of it. The
// order of the lists does not matter, so an edge that reorders them
// changes nothing.
//
// It is a 64-bit hash, computed without allocating because it runs on
// every report of every edge (every second): each list element is hashed
// on its own and the element hashes are added, which makes the sum
// independent of the order without sorting copies of the lists. Two
// different states share a fingerprint with a chance of about 2^-64; the
// cost of that would be a state change reaching etcd only with the next
// summary.
func Fingerprint(r Report) uint64 {
	h := newHash(0)
	h.str(r.AgentVersion)
	h.u64(uint64(r.AppliedVersion))
	sum := mix(uint64(h))
	for i := range r.Tunnels {
		t := &r.Tunnels[i]
		e := newHash(1)
		e.str(t.TunnelID)
		e.str(t.State)
		e.flag(t.Probed)
		e.str(t.ProbeState)
		e.flag(t.Usable)
		e.flag(t.LinkUp)
		e.str(t.IKEState)
		e.str(t.ChildState)
		e.u64(t.PSKSerial) // a key rotation waits for it in every replica
		sum += mix(uint64(e))
	}
	for i := range r.BGPPeers {
		p := &r.BGPPeers[i]
		e := newHash(2)
		e.str(p.Neighbor)
		e.u64(uint64(p.ASN))
		e.str(p.TunnelID)
		e.str(p.State)
		sum += mix(uint64(e))
	}
	for i := range r.ClassPaths {
		c := &r.ClassPaths[i]
		e := newHash(3)
		e.str(c.TrafficClass)
		e.str(c.RemoteSite)
		e.str(c.TunnelID)
		sum += mix(uint64(e))
	}
	return mix(sum)
}

// hash is 64-bit FNV-1a. Strings are length-prefixed so that field
// boundaries count ("ab","c" differs from "a","bc").
type hash uint64

func newHash(kind byte) hash {
	h := hash(14695981039346656037)
	h.byte(kind)
	return h
}

func (h *hash) byte(b byte) { *h = (*h ^ hash(b)) * 1099511628211 }

func (h *hash) u64(v uint64) {
	for i := range 8 {
		h.byte(byte(v >> (8 * i)))
	}
}

func (h *hash) str(s string) {
	h.u64(uint64(len(s)))
	for i := range len(s) {
		h.byte(s[i])
	}
}

func (h *hash) flag(b bool) {
	if b {
		h.byte(1)
	} else {
		h.byte(0)
	}
}

// mix is the splitmix64 finaliser: it spreads FNV's weak high bits before
// the element hashes are added, so that sums of similar elements do not
// cancel out into the same value.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

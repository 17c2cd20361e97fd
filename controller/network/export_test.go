package network

import "time"

// SetNow replaces the clock (tests of the rotation schedule and stalls).
func SetNow(n *Network, now func() time.Time) { n.now = now }

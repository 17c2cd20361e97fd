package dataplane

import (
	"bytes"
	"fmt"
)

// MaxAcceptPSKs bounds the accept-only keys of a tunnel: a rotation needs
// one (the new key while staged, the old one once committed).
const MaxAcceptPSKs = 2

// checkAcceptKeys checks a tunnel's accept-only keys: at most
// MaxAcceptPSKs, each at least MinPSKLen bytes, none equal to the PSK or
// to another (charon would hold one secret twice). Errors give lengths and
// positions only, never a key.
func checkAcceptKeys(t Tunnel, field func(string) string, bad func(string, string, ...any)) {
	if len(t.AcceptPSKs) > MaxAcceptPSKs {
		bad(field("AcceptPSKs"), "%d keys, at most %d", len(t.AcceptPSKs), MaxAcceptPSKs)
		return
	}
	for j, k := range t.AcceptPSKs {
		f := field(fmt.Sprintf("AcceptPSKs[%d]", j))
		switch {
		case len(k) < MinPSKLen:
			bad(f, "%d bytes, want at least %d", len(k), MinPSKLen)
		case bytes.Equal(k, t.PSK):
			bad(f, "equals the PSK")
		default:
			for i := range j {
				if bytes.Equal(k, t.AcceptPSKs[i]) {
					bad(f, "equals AcceptPSKs[%d]", i)
				}
			}
		}
	}
}

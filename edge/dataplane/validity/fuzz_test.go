package validity

import (
	"strings"
	"testing"
)

// FuzzProposal: the proposal parser never panics, its errors stay short
// whatever it is given, and what it accepts is plain strongSwan syntax
// (lowercase keywords, '-' and ','), the only characters the edge passes
// on to charon.
func FuzzProposal(f *testing.F) {
	for _, s := range []string{"aes256-sha256-modp2048", "aes256gcm16", "aes256gcm16-modp2048,aes128gcm16-ecp256",
		"chacha20poly1305-prfsha256-curve25519", "aes128-sha1-modp1024", "zzz-yyy", "banana", "", ",", "aes256--sha256",
		"AES256-SHA256-MODP2048", "aes256-sha256-modp2048-esn", strings.Repeat("aes256-", 1000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range []Kind{IKE, ESP} {
			err := Proposal(k, s)
			if err != nil {
				if n := len(err.Error()); n > 512 {
					t.Fatalf("kind %v: %d-byte error for a %d-byte proposal", k, n, len(s))
				}
				continue
			}
			for _, c := range s {
				if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == ',') {
					t.Fatalf("kind %v: accepted %q holding %q", k, s, c)
				}
			}
		}
	})
}

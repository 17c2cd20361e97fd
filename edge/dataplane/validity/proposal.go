package validity

import (
	"errors"
	"fmt"
	"strings"
)

// Kind says which proposal a string is: they have different rules.
type Kind int

const (
	IKE Kind = iota
	ESP
)

func (k Kind) String() string {
	if k == ESP {
		return "ESP"
	}
	return "IKE"
}

// algClass is the transform type of a strongSwan keyword.
type algClass int

const (
	encr  algClass = iota // classic (non-AEAD) encryption
	aead                  // combined mode: encryption and integrity
	integ                 // integrity
	prf                   // pseudo-random function (IKE only)
	dh                    // key exchange (DH group)
	esn                   // extended sequence numbers (ESP only)
	nopfs                 // "none": explicitly no DH group (ESP only)
)

// Limits of a proposal list: strongSwan has none, but a desired state is
// sent to every edge; these are far above anything meaningful.
const (
	MaxProposalLen    = 1024
	MaxProposals      = 16
	MaxProposalTokens = 32
)

// keywords are the strongSwan 5.9 proposal keywords meshwan accepts
// (src/libstrongswan/crypto/proposal/proposal_keywords_static.txt), by
// class. Aliases strongSwan defines are included (aes = aes128,
// aes128gcm = aes128gcm16 = aes128gcm128, sha = sha1, x25519 = curve25519).
var keywords, weak = keywordTables()

// weak (the second table) are keywords strongSwan knows that meshwan
// refuses, with the reason given to the operator. The choice: no 64-bit block ciphers (sweet32), no
// MD5, no DH group under 2048 bits or from RFC 5114, no 64-bit AEAD ICVs,
// no null or authentication-only "encryption", no experimental
// post-quantum groups removed from later strongSwan releases, and no
// ciphers the edge's kernel and strongSwan build may not have.
func keywordTables() (map[string]algClass, map[string]string) {
	keywords, weak := map[string]algClass{}, map[string]string{}
	add := func(c algClass, names ...string) {
		for _, n := range names {
			keywords[n] = c
		}
	}
	refuse := func(why string, names ...string) {
		for _, n := range names {
			weak[n] = why
		}
	}
	add(encr, "aes", "aes128", "aes192", "aes256", "aes128ctr", "aes192ctr", "aes256ctr",
		"camellia", "camellia128", "camellia192", "camellia256", "camellia128ctr", "camellia192ctr", "camellia256ctr")
	for _, size := range []string{"128", "192", "256"} {
		for _, mode := range []string{"gcm", "ccm"} {
			add(aead, "aes"+size+mode, "aes"+size+mode+"12", "aes"+size+mode+"96", "aes"+size+mode+"16", "aes"+size+mode+"128")
			refuse("its 64-bit integrity check value is too short; use the 16-byte ICV variant (e.g. aes256gcm16)",
				"aes"+size+mode+"8", "aes"+size+mode+"64")
		}
		add(aead, "camellia"+size+"ccm12", "camellia"+size+"ccm96", "camellia"+size+"ccm16", "camellia"+size+"ccm128")
		refuse("its 64-bit integrity check value is too short; use camellia"+size+"ccm16",
			"camellia"+size+"ccm8", "camellia"+size+"ccm64")
		refuse("AES-GMAC authenticates but does not encrypt; use aes"+size+"gcm16", "aes"+size+"gmac")
	}
	add(aead, "chacha20poly1305")
	add(integ, "sha", "sha1", "sha1_160", "sha256", "sha2_256", "sha256_96", "sha2_256_96", "sha384", "sha2_384",
		"sha512", "sha2_512", "aesxcbc", "aescmac", "camelliaxcbc")
	add(prf, "prfsha1", "prfsha256", "prfsha384", "prfsha512", "prfaesxcbc", "prfaescmac", "prfcamelliaxcbc")
	add(dh, "modp2048", "modp3072", "modp4096", "modp6144", "modp8192", "ecp256", "ecp384", "ecp521",
		"ecp256bp", "ecp384bp", "ecp512bp", "curve25519", "x25519", "curve448", "x448")
	add(esn, "esn", "noesn")
	add(nopfs, "none", "modpnone")

	refuse("null encryption protects nothing", "null")
	refuse("a 64-bit block cipher (sweet32) and deprecated; use aes256 or aes256gcm16",
		"des", "3des", "blowfish", "blowfish128", "blowfish192", "blowfish256", "cast128")
	refuse("not available in every strongSwan build and kernel meshwan supports; use AES, Camellia or ChaCha20-Poly1305",
		"serpent", "serpent128", "serpent192", "serpent256", "twofish", "twofish128", "twofish192", "twofish256",
		"otpcbc", "chacha20poly1305compat")
	refuse("MD5 is broken; use sha256", "md5", "md5_128", "prfmd5")
	refuse("DH groups under 2048 bits are weak; use modp3072, ecp256 or curve25519 or stronger",
		"modp768", "modp1024", "modp1536", "ecp192", "ecp224", "ecp224bp")
	refuse("RFC 5114 groups have primes of questionable origin; use modp2048 or stronger",
		"modp1024s160", "modp2048s224", "modp2048s256")
	refuse("the null DH group is for testing only", "modpnull")
	refuse("experimental post-quantum groups were removed from strongSwan; use a classic group",
		"ntru112", "ntru128", "ntru192", "ntru256", "newhope128")
	return keywords, weak
}

// Proposal checks a comma-separated list of strongSwan proposals of kind k
// (e.g. "aes256-sha256-modp2048,aes256gcm16-prfsha256-ecp256" for IKE,
// "aes256gcm16" or "aes256-sha256-ecp256-esn" for ESP). Each proposal is
// dash-separated keywords; the rules per proposal, as strongSwan's
// proposal parser enforces them (and slightly stricter where strongSwan
// would silently drop a keyword):
//
//   - at least one encryption algorithm; classic and AEAD ones not mixed;
//   - classic encryption needs an integrity algorithm (strongSwan requires
//     it for IKE; meshwan also for ESP: unauthenticated ESP is refused);
//   - AEAD takes no integrity algorithm (strongSwan would drop it);
//   - IKE: a PRF (explicit, or derived from the integrity algorithm: with
//     AEAD it must be explicit) and a DH group; no esn/noesn, no "none";
//   - ESP: no PRF; DH group optional (PFS), esn/noesn optional.
func Proposal(k Kind, s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxProposalLen {
		return fmt.Errorf("%d bytes, at most %d", len(s), MaxProposalLen)
	}
	list := strings.Split(s, ",")
	if len(list) > MaxProposals {
		return fmt.Errorf("%d proposals, at most %d", len(list), MaxProposals)
	}
	for i, p := range list {
		if err := proposal(k, p); err != nil {
			if len(list) == 1 {
				return err
			}
			return fmt.Errorf("proposal %d of %d: %w", i+1, len(list), err)
		}
	}
	return nil
}

func proposal(k Kind, p string) error {
	if p == "" {
		return errors.New("empty proposal (stray comma?)")
	}
	toks := strings.Split(p, "-")
	if len(toks) > MaxProposalTokens {
		return fmt.Errorf("%d algorithms, at most %d", len(toks), MaxProposalTokens)
	}
	var n [nopfs + 1]int
	for _, t := range toks {
		if t == "" {
			return fmt.Errorf("%s has an empty algorithm (stray '-')", Quote(p))
		}
		if why, ok := weak[t]; ok {
			return fmt.Errorf("%s is refused: %s", Quote(t), why)
		}
		c, ok := keywords[t]
		if !ok {
			return fmt.Errorf("%s is not a strongSwan algorithm keyword (like aes256, aes256gcm16, sha256, prfsha256, modp3072, ecp256, curve25519)", Quote(t))
		}
		n[c]++
	}
	switch {
	case n[encr]+n[aead] == 0:
		return fmt.Errorf("%s has no encryption algorithm (like aes256 or aes256gcm16)", Quote(p))
	case n[encr] > 0 && n[aead] > 0:
		return fmt.Errorf("%s mixes classic and AEAD encryption; use two proposals separated by ','", Quote(p))
	case n[encr] > 0 && n[integ] == 0:
		return fmt.Errorf("%s has classic encryption without an integrity algorithm (like sha256)", Quote(p))
	case n[aead] > 0 && n[integ] > 0:
		return fmt.Errorf("%s combines AEAD encryption with an integrity algorithm; AEAD authenticates by itself", Quote(p))
	}
	if k == IKE {
		switch {
		case n[prf] == 0 && n[integ] == 0:
			return fmt.Errorf("%s has no PRF; AEAD IKE proposals need one (like prfsha256)", Quote(p))
		case n[dh] == 0:
			return fmt.Errorf("%s has no DH group (like modp3072, ecp256 or curve25519)", Quote(p))
		case n[esn] > 0 || n[nopfs] > 0:
			return fmt.Errorf("%s: esn, noesn and none are ESP keywords, not IKE", Quote(p))
		}
		return nil
	}
	switch {
	case n[prf] > 0:
		return fmt.Errorf("%s: a PRF is an IKE keyword, not ESP", Quote(p))
	case n[nopfs] > 0 && n[dh] > 0:
		return fmt.Errorf("%s asks for a DH group and for none", Quote(p))
	}
	return nil
}

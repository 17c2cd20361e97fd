package dataplane

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// LinkPrefix starts the name of every kernel link meshwan creates. Names
// with this prefix are reserved for meshwan on an edge: the link package
// manages every link it is asked for by name, and the firewall matches
// tunnel traffic with the wildcard "mw-*".
const LinkPrefix = "mw-"

// MaxLinkNameLen is the longest Linux interface name (IFNAMSIZ-1).
const MaxLinkNameLen = 15

// LinkName returns the GRE interface name of a tunnel. It is a pure
// function of its arguments, so controller and agent agree without
// storing it, and it is readable in `ip link`:
//
//   - "mw-<site>-<local transport>-<remote transport>" when that fits in 15
//     bytes and every part is already [a-z0-9]+, e.g. "mw-par-inet-lte";
//   - otherwise "mw-<site, first 5>-<transport initials><4-char hash>",
//     e.g. "mw-frank-il4kqa", where the hash covers all four arguments.
//
// The two forms cannot collide with each other (the readable form has
// exactly three dashes, the hashed form two) and the readable form is
// injective, so names are unique per (remote site, local transport, remote
// transport), which the topology makes unique per tunnel; the hashed form
// is unique unless two tunnels with the same site prefix and initials
// collide on 20 hash bits, which Desired.Validate reports as a duplicate
// link name.
func LinkName(remoteSite, localTransport, remoteTransport, id string) string {
	s, sok := nameToken(remoteSite)
	l, lok := nameToken(localTransport)
	r, rok := nameToken(remoteTransport)
	if sok && lok && rok {
		if n := LinkPrefix + s + "-" + l + "-" + r; len(n) <= MaxLinkNameLen {
			return n
		}
	}
	if len(s) > 5 {
		s = s[:5]
	}
	if s == "" {
		s = "x"
	}
	sum := sha256.Sum256([]byte(remoteSite + "\x00" + localTransport + "\x00" + remoteTransport + "\x00" + id))
	h := strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:4]
	return LinkPrefix + s + "-" + initial(l) + initial(r) + h
}

// nameToken keeps the [a-z0-9] characters of s (lower-casing letters) and
// reports whether that lost nothing: ok is false when s was empty or had
// any other character, including upper case (which would make "Paris" and
// "paris" collide).
func nameToken(s string) (tok string, ok bool) {
	var b strings.Builder
	ok = s != ""
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteRune(c)
		case c >= 'A' && c <= 'Z':
			b.WriteRune(c - 'A' + 'a')
			ok = false
		default:
			ok = false
		}
	}
	return b.String(), ok
}

func initial(s string) string {
	if s == "" {
		return "0"
	}
	return s[:1]
}

// ValidLinkName reports why name cannot be a Linux interface name, using
// the kernel's own rules (dev_valid_name): 1 to 15 bytes, not "." or "..",
// no '/', ':' or white space. '%' is refused too: the kernel treats it as
// a template ("mw-%d").
func ValidLinkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > MaxLinkNameLen:
		return fmt.Errorf("interface name %q is %d bytes, the kernel allows %d", name, len(name), MaxLinkNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is reserved", name)
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c == '%' || c <= ' ' || c == 0x7f {
			return fmt.Errorf("interface name %q contains %q", name, c)
		}
	}
	return nil
}

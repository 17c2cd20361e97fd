// Package credentials owns the admin API's credentials: bearer tokens with
// a role (read_only < operator < admin), stored hashed in etcd under
// credentials/<id>, created, listed and revoked through the API, plus the
// bootstrap token from --admin-token-file (role admin).
//
// A credential's token is "ID.SECRET": ID names the record, SECRET is 32
// random bytes (base64url). etcd keeps only SHA-256(SECRET): the secret is
// uniformly random and long, so a plain hash is as good as a slow one.
//
// Invariant: authenticating a request never reads etcd. Every process keeps
// the records in memory, loaded once and then kept current by one watch on
// credentials/, so a revocation made on any replica is refused by every
// replica as soon as its watch delivers it (milliseconds), and a request
// costs one map lookup, one SHA-256 and one constant-time compare.
package credentials

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors, mapped to gRPC codes by the API's table.
var (
	ErrUnauthenticated = errors.New("unauthenticated") // no, unknown, wrong, expired or revoked credential
	ErrInvalid         = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
)

// Role is what a credential may do. Each role includes the ones below it;
// the zero Role is no role at all.
type Role int

const (
	ReadOnly Role = 1 + iota
	Operator
	Admin
)

var roleNames = [...]string{ReadOnly: "read_only", Operator: "operator", Admin: "admin"}

// String is the role's name as the CLI and the docs spell it.
func (r Role) String() string {
	if r >= ReadOnly && r <= Admin {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r >= ReadOnly && r <= Admin }

// ParseRole reads "read_only" (also "read-only", "readonly"), "operator"
// or "admin".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "read_only", "read-only", "readonly":
		return ReadOnly, nil
	case "operator":
		return Operator, nil
	case "admin":
		return Admin, nil
	}
	return 0, fmt.Errorf("%w: role %q: want read_only, operator or admin", ErrInvalid, Truncate(s))
}

// BootstrapID is the id of the principal authenticated by the bootstrap
// token (--admin-token-file); it has role Admin and cannot be revoked
// through the API (replace the file and restart instead).
const BootstrapID = "bootstrap"

// Credential is a stored credential. Hash is SHA-256 of the secret.
type Credential struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Hash      []byte    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: no expiry
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Usable reports whether c authenticates requests at now.
func (c Credential) Usable(now time.Time) bool {
	return !c.Revoked && (c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt))
}

// Principal is who a request authenticated as.
type Principal struct {
	ID   string
	Name string
	Role Role
}

// Limits on what Create accepts.
const (
	MaxNameLen = 64
	MinTTL     = time.Minute
	MaxTTL     = 10 * 365 * 24 * time.Hour
	idBytes    = 8
	secretLen  = 32
)

// CheckName validates a credential name: 1 to 64 characters, letters,
// digits and . _ - @.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: name: empty", ErrInvalid)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: name: %d bytes, at most %d", ErrInvalid, len(name), MaxNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r)) {
			return fmt.Errorf("%w: name %q: only letters, digits and . _ - @", ErrInvalid, name)
		}
	}
	return nil
}

// CheckTTL validates a credential lifetime (0: no expiry).
func CheckTTL(ttl time.Duration) error {
	if ttl != 0 && (ttl < MinTTL || ttl > MaxTTL) {
		return fmt.Errorf("%w: ttl: %v, want 0 (no expiry) or %v to %v", ErrInvalid, ttl, MinTTL, MaxTTL)
	}
	return nil
}

// splitToken splits "ID.SECRET". ok is false when token does not have
// that shape (the bootstrap token may be anything).
func splitToken(token string) (id, secret string, ok bool) {
	id, secret, ok = strings.Cut(token, ".")
	return id, secret, ok && len(id) == 2*idBytes && secret != ""
}

// hashSecret is what etcd keeps.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// authenticate checks token against the bootstrap token and the records
// (a pure function of its inputs: the Service passes its cache).
func authenticate(token, bootstrap string, lookup func(id string) (Credential, bool), now time.Time) (Principal, error) {
	if token == "" {
		return Principal{}, fmt.Errorf("%w: no credential", ErrUnauthenticated)
	}
	if bootstrap != "" && subtle.ConstantTimeCompare([]byte(token), []byte(bootstrap)) == 1 {
		return Principal{ID: BootstrapID, Name: "admin.token", Role: Admin}, nil
	}
	id, secret, ok := splitToken(token)
	if !ok {
		return Principal{}, fmt.Errorf("%w: unknown credential", ErrUnauthenticated)
	}
	c, ok := lookup(id)
	if !ok || subtle.ConstantTimeCompare(hashSecret(secret), c.Hash) != 1 {
		return Principal{}, fmt.Errorf("%w: unknown credential", ErrUnauthenticated)
	}
	switch {
	case c.Revoked:
		return Principal{}, fmt.Errorf("%w: credential %s revoked", ErrUnauthenticated, id)
	case !c.Usable(now):
		return Principal{}, fmt.Errorf("%w: credential %s expired", ErrUnauthenticated, id)
	}
	return Principal{ID: c.ID, Name: c.Name, Role: c.Role}, nil
}

// Truncate shortens s for an error message: input is never quoted whole
// (it may be megabytes).
func Truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("...(%d bytes)", len(s))
}

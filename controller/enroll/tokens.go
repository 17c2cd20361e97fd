package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

// Sentinel errors, mapped to gRPC codes by the API's table.
var (
	ErrTokenInvalid = errors.New("enrollment token invalid")         // malformed or unknown: Unauthenticated
	ErrTokenRefused = errors.New("enrollment token refused")         // used, expired, revoked, wrong site: PermissionDenied
	ErrBadCSR       = errors.New("invalid certificate request")      // InvalidArgument
	ErrNotEnrolled  = errors.New("certificate not valid for a site") // Unauthenticated
	ErrNotFound     = errors.New("not found")
	ErrInvalid      = errors.New("invalid argument")
)

const (
	tokensDir = "enroll/tokens/"
	edgesDir  = "enroll/edges/"
	// DefaultTokenTTL applies when a token is created without a TTL.
	DefaultTokenTTL = 24 * time.Hour
	// MaxTokenTTL bounds how long an unused token stays dangerous.
	MaxTokenTTL = 30 * 24 * time.Hour
	// EdgeCertValidity is the lifetime of an edge client certificate.
	EdgeCertValidity = 365 * 24 * time.Hour
)

// Token is a stored enrollment token. Only the hash of its secret is kept.
type Token struct {
	ID        string    `json:"id"`
	Site      string    `json:"site,omitempty"`
	Hash      []byte    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
	UsedBy    string    `json:"used_by,omitempty"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// Used reports whether the token was redeemed.
func (t Token) Used() bool { return !t.UsedAt.IsZero() }

// Edge is the enrollment record of a site: the serial of the only client
// certificate currently accepted for it.
type Edge struct {
	Site       string    `json:"site"`
	Serial     string    `json:"serial"`
	EnrolledAt time.Time `json:"enrolled_at"`
	TokenID    string    `json:"token_id"`
}

// SiteChecker tells whether a site exists.
type SiteChecker func(ctx context.Context, name string) (bool, error)

// Service issues and redeems tokens and signs edge certificates.
type Service struct {
	st    *store.Store
	ca    *CA
	sites SiteChecker
	now   func() time.Time
}

// NewService returns the enrollment service.
func NewService(st *store.Store, ca *CA, sites SiteChecker) *Service {
	return &Service{st: st, ca: ca, sites: sites, now: time.Now}
}

// CA returns the authority.
func (s *Service) CA() *CA { return s.ca }

// CreateToken makes a one-time token, optionally bound to an existing site.
// secret is "<id>.<random>" and is returned only here.
func (s *Service) CreateToken(ctx context.Context, site string, ttl time.Duration) (Token, string, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Minute || ttl > MaxTokenTTL {
		return Token{}, "", fmt.Errorf("%w: ttl_seconds: %d must be between 60 and %d", ErrInvalid, int(ttl.Seconds()), int(MaxTokenTTL.Seconds()))
	}
	if site != "" {
		ok, err := s.sites(ctx, site)
		if err != nil {
			return Token{}, "", err
		}
		if !ok {
			return Token{}, "", fmt.Errorf("%w: site: no site named %q", ErrNotFound, site)
		}
	}
	id, random := randHex(6), randHex(24)
	now := s.now().UTC().Truncate(time.Second)
	t := Token{ID: id, Site: site, Hash: hashSecret(random), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	raw, _ := json.Marshal(t)
	ok, _, err := s.st.Txn(ctx, []store.Cmp{store.Absent(tokensDir + id)}, []store.Op{store.Put(tokensDir+id, raw)})
	if err != nil {
		return Token{}, "", err
	}
	if !ok {
		return Token{}, "", errors.New("token id collision, try again")
	}
	return t, id + "." + random, nil
}

// ListTokens returns every token, oldest first.
func (s *Service) ListTokens(ctx context.Context) ([]Token, error) {
	kvs, _, err := s.st.List(ctx, tokensDir, 0)
	if err != nil {
		return nil, err
	}
	out := make([]Token, 0, len(kvs))
	for _, kv := range kvs {
		var t Token
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("stored token %s: %w", kv.Key, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// RevokeToken makes a token unusable. Revoking twice is not an error.
func (s *Service) RevokeToken(ctx context.Context, id string) (Token, error) {
	for {
		t, rev, err := s.getToken(ctx, id)
		if err != nil {
			return Token{}, err
		}
		if t.Revoked {
			return t, nil
		}
		t.Revoked = true
		raw, _ := json.Marshal(t)
		ok, _, err := s.st.Txn(ctx, []store.Cmp{store.Unchanged(tokensDir+id, rev)}, []store.Op{store.Put(tokensDir+id, raw)})
		if err != nil || ok {
			return t, err
		}
	}
}

func (s *Service) getToken(ctx context.Context, id string) (Token, int64, error) {
	kv, ok, err := s.st.Get(ctx, tokensDir+id)
	if err != nil {
		return Token{}, 0, err
	}
	if !ok {
		return Token{}, 0, fmt.Errorf("%w: enrollment token %q", ErrNotFound, id)
	}
	var t Token
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return Token{}, 0, fmt.Errorf("stored token %s: %w", id, err)
	}
	return t, kv.ModRevision, nil
}

// Enroll redeems a token for a client certificate of site (which may be
// empty when the token is bound). Marking the token used and recording the
// new certificate serial happen in one transaction, so a token can never
// be redeemed twice, even by two edges racing through two replicas.
func (s *Service) Enroll(ctx context.Context, secret, site string, csrPEM []byte) (string, []byte, error) {
	id, random, ok := strings.Cut(secret, ".")
	if !ok || id == "" || random == "" {
		return "", nil, fmt.Errorf("%w: token: expected the form ID.SECRET", ErrTokenInvalid)
	}
	t, rev, err := s.getToken(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return "", nil, fmt.Errorf("%w: token: unknown token id %q", ErrTokenInvalid, id)
	}
	if err != nil {
		return "", nil, err
	}
	if subtle.ConstantTimeCompare(t.Hash, hashSecret(random)) != 1 {
		return "", nil, fmt.Errorf("%w: token: secret does not match token %q", ErrTokenInvalid, id)
	}
	switch now := s.now(); {
	case t.Revoked:
		return "", nil, fmt.Errorf("%w: token %q was revoked", ErrTokenRefused, id)
	case t.Used():
		return "", nil, fmt.Errorf("%w: token %q was already used at %s by site %q", ErrTokenRefused, id, t.UsedAt.Format(time.RFC3339), t.UsedBy)
	case !now.Before(t.ExpiresAt):
		return "", nil, fmt.Errorf("%w: token %q expired at %s", ErrTokenRefused, id, t.ExpiresAt.Format(time.RFC3339))
	}
	switch {
	case t.Site != "" && site != "" && site != t.Site:
		return "", nil, fmt.Errorf("%w: token %q is bound to site %q, not %q", ErrTokenRefused, id, t.Site, site)
	case t.Site != "":
		site = t.Site
	case site == "":
		return "", nil, fmt.Errorf("%w: site: this token is not bound to a site, name one", ErrInvalid)
	}
	exists, err := s.sites(ctx, site)
	if err != nil {
		return "", nil, err
	}
	if !exists {
		return "", nil, fmt.Errorf("%w: site: no site named %q", ErrNotFound, site)
	}
	certPEM, serial, err := s.ca.signEdge(csrPEM, site, EdgeCertValidity)
	if err != nil {
		return "", nil, err
	}
	now := s.now().UTC()
	t.UsedAt, t.UsedBy = now, site
	rawT, _ := json.Marshal(t)
	rawE, _ := json.Marshal(Edge{Site: site, Serial: serial, EnrolledAt: now, TokenID: id})
	won, _, err := s.st.Txn(ctx,
		[]store.Cmp{store.Unchanged(tokensDir+id, rev)},
		[]store.Op{store.Put(tokensDir+id, rawT), store.Put(edgesDir+site, rawE)})
	if err != nil {
		return "", nil, err
	}
	if !won {
		return "", nil, fmt.Errorf("%w: token %q was used or revoked concurrently", ErrTokenRefused, id)
	}
	return site, certPEM, nil
}

// Authenticate maps a verified client certificate (chain already checked
// against the CA by TLS) to its site, accepting only the latest certificate
// issued for that site.
func (s *Service) Authenticate(ctx context.Context, cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no client certificate (enroll first)", ErrNotEnrolled)
	}
	if len(cert.Subject.OrganizationalUnit) != 1 || cert.Subject.OrganizationalUnit[0] != EdgeCertOU {
		return "", fmt.Errorf("%w: not an edge certificate", ErrNotEnrolled)
	}
	site := cert.Subject.CommonName
	e, ok, err := s.Edge(ctx, site)
	if err != nil {
		return "", err
	}
	if !ok || e.Serial != cert.SerialNumber.Text(16) {
		return "", fmt.Errorf("%w: certificate %s for site %q was superseded or revoked", ErrNotEnrolled, cert.SerialNumber.Text(16), site)
	}
	return site, nil
}

// Edge returns the enrollment record of site.
func (s *Service) Edge(ctx context.Context, site string) (Edge, bool, error) {
	kv, ok, err := s.st.Get(ctx, edgesDir+site)
	if err != nil || !ok {
		return Edge{}, false, err
	}
	var e Edge
	if err := json.Unmarshal(kv.Value, &e); err != nil {
		return Edge{}, false, fmt.Errorf("stored edge %s: %w", site, err)
	}
	return e, true, nil
}

func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte("meshwan-enroll:" + s))
	return h[:]
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// EdgeKey is the store key of a site's enrollment record; deleting it with
// the site retires the site's certificate.
func EdgeKey(site string) string { return edgesDir + site }

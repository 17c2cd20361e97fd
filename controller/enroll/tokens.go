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
	"github.com/meshwan/meshwan/edge/dataplane/validity"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

// Sentinel errors, mapped to gRPC codes by the API's table.
var (
	ErrTokenInvalid  = errors.New("enrollment token invalid")         // malformed or unknown: Unauthenticated
	ErrTokenRefused  = errors.New("enrollment token refused")         // used, expired, revoked, wrong site: PermissionDenied
	ErrBadCSR        = errors.New("invalid certificate request")      // InvalidArgument
	ErrNotEnrolled   = errors.New("certificate not valid for a site") // Unauthenticated
	ErrRevoked       = errors.New("edge identity revoked")            // PermissionDenied
	ErrDeviceRefused = errors.New("device refused")                   // PermissionDenied
	ErrRateLimited   = errors.New("too many claims")                  // ResourceExhausted
	ErrNotFound      = errors.New("not found")
	ErrInvalid       = errors.New("invalid argument")
	// ErrUnmanaged: the site is unmanaged (a third-party router, no edge),
	// so nothing may enroll as it: FailedPrecondition.
	ErrUnmanaged = errors.New("site is unmanaged")
)

const (
	tokensDir = "enroll/tokens/"
	edgesDir  = "enroll/edges/"
	// DefaultTokenTTL applies when a token is created without a TTL.
	DefaultTokenTTL = 24 * time.Hour
	// MaxTokenTTL bounds how long an unused token stays dangerous.
	MaxTokenTTL = 30 * 24 * time.Hour
	// EdgeCertValidity is the default lifetime of an edge client
	// certificate (Config.EdgeCertValidity).
	EdgeCertValidity = 365 * 24 * time.Hour
	// DefaultClaimTokenTTL and MaxClaimTokenTTL: a claim token is baked
	// into images and lives long; it is revocable and rate-limited.
	DefaultClaimTokenTTL = 365 * 24 * time.Hour
	MaxClaimTokenTTL     = 5 * 365 * 24 * time.Hour
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
	// Claim marks a fleet claim token: many devices, approval needed.
	Claim bool `json:"claim,omitempty"`
}

// Used reports whether the token was redeemed.
func (t Token) Used() bool { return !t.UsedAt.IsZero() }

// Edge is the enrollment record of a site: the serial of the only client
// certificate currently accepted for it. A revoked record accepts none.
type Edge struct {
	Site       string    `json:"site"`
	Serial     string    `json:"serial"`
	EnrolledAt time.Time `json:"enrolled_at"`
	TokenID    string    `json:"token_id"`
	NotAfter   time.Time `json:"not_after,omitzero"`
	RenewedAt  time.Time `json:"renewed_at,omitzero"`
	Revoked    bool      `json:"revoked,omitempty"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	DeviceID   string    `json:"device_id,omitempty"`
}

// Config configures the Service.
type Config struct {
	// SiteKey names the store key of a site's intent record. Enrollment,
	// renewal and claims are guarded on it in their transaction, so an
	// identity can never be recorded for a site deleted meanwhile.
	SiteKey func(site string) string
	// EdgeCertValidity is the lifetime of edge certificates (0: 1 year).
	EdgeCertValidity time.Duration
	// PendingTTL is how long a claimed, unapproved device is remembered
	// after its last claim (0: 24 h).
	PendingTTL time.Duration
	// ClaimsPerMinute bounds claims per claim token (0: 60, burst 60).
	ClaimsPerMinute int
	// MaxPending bounds the pending devices (0: 1000).
	MaxPending int
}

// Service issues and redeems tokens and signs edge certificates.
type Service struct {
	st  *store.Store
	ca  *CA
	cfg Config
	now func() time.Time
	// beforeCommit, when set (tests), runs between the checks and the
	// transaction of Enroll, Renew and Claim.
	beforeCommit func()

	limMu sync.Mutex
	lim   map[string]*bucket // claim token id -> bucket

	watchMu  sync.Mutex
	watching map[string]map[*streamWatch]struct{} // site -> open streams
}

// NewService returns the enrollment service.
func NewService(st *store.Store, ca *CA, cfg Config) *Service {
	if cfg.EdgeCertValidity <= 0 {
		cfg.EdgeCertValidity = EdgeCertValidity
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = 24 * time.Hour
	}
	if cfg.ClaimsPerMinute <= 0 {
		cfg.ClaimsPerMinute = 60
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1000
	}
	return &Service{st: st, ca: ca, cfg: cfg, now: time.Now, lim: map[string]*bucket{}}
}

// EdgeCertValidity is the lifetime of the certificates this service issues.
func (s *Service) EdgeCertValidity() time.Duration { return s.cfg.EdgeCertValidity }

// site returns the mod revision of site's intent record (0: no such site).
// An unmanaged site is refused (ErrUnmanaged): every path that issues a
// token, a claim or a certificate for a site goes through here.
func (s *Service) site(ctx context.Context, name string) (int64, error) {
	if name == "" {
		return 0, nil
	}
	kv, ok, err := s.st.Get(ctx, s.cfg.SiteKey(name))
	if err != nil || !ok {
		return 0, err
	}
	// Only the flag is read: the intent record's schema is
	// controller/intent's (this package does not import it).
	var rec struct {
		Unmanaged bool `json:"unmanaged"`
	}
	if json.Unmarshal(kv.Value, &rec) == nil && rec.Unmanaged {
		return 0, fmt.Errorf("%w: site %q is unmanaged: no meshwan-edge runs there, so no token, claim or certificate is issued for it (configure its router from the export: meshwanctl site export %s)", ErrUnmanaged, name, name)
	}
	return kv.ModRevision, nil
}

// CA returns the authority.
func (s *Service) CA() *CA { return s.ca }

// CreateToken makes a one-time token, optionally bound to an existing site.
// secret is "<id>.<random>" and is returned only here.
func (s *Service) CreateToken(ctx context.Context, site string, ttl time.Duration) (Token, string, error) {
	return s.createToken(ctx, site, ttl, false)
}

// CreateClaimToken makes a fleet claim token: not bound to a site, usable
// by many devices (rate-limited), revocable, long-lived (default 365 days).
func (s *Service) CreateClaimToken(ctx context.Context, ttl time.Duration) (Token, string, error) {
	return s.createToken(ctx, "", ttl, true)
}

func (s *Service) createToken(ctx context.Context, site string, ttl time.Duration, claim bool) (Token, string, error) {
	def, maxTTL := DefaultTokenTTL, MaxTokenTTL
	if claim {
		def, maxTTL = DefaultClaimTokenTTL, MaxClaimTokenTTL
	}
	if ttl == 0 {
		ttl = def
	}
	if ttl < time.Minute || ttl > maxTTL {
		return Token{}, "", fmt.Errorf("%w: ttl_seconds: %d must be between 60 and %d", ErrInvalid, int(ttl.Seconds()), int(maxTTL.Seconds()))
	}
	if claim && site != "" {
		return Token{}, "", fmt.Errorf("%w: site: a claim token is not bound to a site (approve each device to a site)", ErrInvalid)
	}
	if site != "" {
		rev, err := s.site(ctx, site)
		if err != nil {
			return Token{}, "", err
		}
		if rev == 0 {
			return Token{}, "", fmt.Errorf("%w: site: no site named %q", ErrNotFound, site)
		}
	}
	id, random := randHex(6), randHex(24)
	now := s.now().UTC().Truncate(time.Second)
	t := Token{ID: id, Site: site, Hash: hashSecret(random), CreatedAt: now, ExpiresAt: now.Add(ttl), Claim: claim}
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
		return Token{}, 0, fmt.Errorf("%w: enrollment token %s", ErrNotFound, validity.Quote(id))
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
		return "", nil, fmt.Errorf("%w: token: unknown token id %s", ErrTokenInvalid, validity.Quote(id))
	}
	if err != nil {
		return "", nil, err
	}
	if subtle.ConstantTimeCompare(t.Hash, hashSecret(random)) != 1 {
		return "", nil, fmt.Errorf("%w: token: secret does not match token %s", ErrTokenInvalid, validity.Quote(id))
	}
	if t.Claim {
		return "", nil, fmt.Errorf("%w: token %s is a claim token: start the edge with --claim-token", ErrTokenRefused, validity.Quote(id))
	}
	switch now := s.now(); {
	case t.Revoked:
		return "", nil, fmt.Errorf("%w: token %s was revoked", ErrTokenRefused, validity.Quote(id))
	case t.Used():
		return "", nil, fmt.Errorf("%w: token %s was already used at %s by site %q", ErrTokenRefused, validity.Quote(id), t.UsedAt.Format(time.RFC3339), t.UsedBy)
	case !now.Before(t.ExpiresAt):
		return "", nil, fmt.Errorf("%w: token %s expired at %s", ErrTokenRefused, validity.Quote(id), t.ExpiresAt.Format(time.RFC3339))
	}
	switch {
	case t.Site != "" && site != "" && site != t.Site:
		return "", nil, fmt.Errorf("%w: token %s is bound to site %q, not %q", ErrTokenRefused, validity.Quote(id), t.Site, site)
	case t.Site != "":
		site = t.Site
	case site == "":
		return "", nil, fmt.Errorf("%w: site: this token is not bound to a site, name one", ErrInvalid)
	}
	siteRev, err := s.site(ctx, site)
	if err != nil {
		return "", nil, err
	}
	if siteRev == 0 {
		return "", nil, fmt.Errorf("%w: site: no site named %q", ErrNotFound, site)
	}
	certPEM, serial, notAfter, err := s.ca.signEdge(csrPEM, site, s.cfg.EdgeCertValidity)
	if err != nil {
		return "", nil, err
	}
	now := s.now().UTC()
	t.UsedAt, t.UsedBy = now, site
	rawT, _ := json.Marshal(t)
	rawE, _ := json.Marshal(Edge{Site: site, Serial: serial, EnrolledAt: now, TokenID: id, NotAfter: notAfter})
	if s.beforeCommit != nil {
		s.beforeCommit()
	}
	// Guarded on the site's record too: a DeleteSite committed since the
	// check above (it deletes the enrollment record) makes this fail, so
	// no record can outlive its site and come back to life when the name
	// is re-created.
	won, _, err := s.st.Txn(ctx,
		[]store.Cmp{store.Unchanged(tokensDir+id, rev), store.Unchanged(s.cfg.SiteKey(site), siteRev)},
		[]store.Op{store.Put(tokensDir+id, rawT), store.Put(edgesDir+site, rawE)})
	if err != nil {
		return "", nil, err
	}
	if !won {
		if r, err := s.site(ctx, site); err == nil && r == 0 {
			return "", nil, fmt.Errorf("%w: site: site %q was deleted during enrollment", ErrNotFound, site)
		}
		return "", nil, fmt.Errorf("%w: token %s was used or revoked concurrently, or site %q changed; try again", ErrTokenRefused, validity.Quote(id), site)
	}
	return site, certPEM, nil
}

// Authenticate maps a verified client certificate (chain already checked
// against the CA by TLS) to its site, accepting only the latest certificate
// issued for that site and only while it is not revoked.
func (s *Service) Authenticate(ctx context.Context, cert *x509.Certificate) (string, error) {
	site, _, _, err := s.authenticate(ctx, cert)
	return site, err
}

// authenticate also returns the record and the store revision it was read at.
func (s *Service) authenticate(ctx context.Context, cert *x509.Certificate) (string, store.KV, int64, error) {
	if cert == nil {
		return "", store.KV{}, 0, fmt.Errorf("%w: no client certificate (enroll first)", ErrNotEnrolled)
	}
	if len(cert.Subject.OrganizationalUnit) != 1 || cert.Subject.OrganizationalUnit[0] != EdgeCertOU {
		return "", store.KV{}, 0, fmt.Errorf("%w: not an edge certificate", ErrNotEnrolled)
	}
	site := cert.Subject.CommonName
	kvs, rev, err := s.st.List(ctx, edgesDir+site, 0)
	if err != nil {
		return "", store.KV{}, 0, err
	}
	var kv store.KV
	for _, k := range kvs {
		if k.Key == edgesDir+site {
			kv = k
		}
	}
	if err := checkRecord(kv, site, cert.SerialNumber.Text(16)); err != nil {
		return "", store.KV{}, 0, err
	}
	return site, kv, rev, nil
}

// checkRecord says whether the stored record kv (Value nil: none) still
// accepts the certificate serial of site.
func checkRecord(kv store.KV, site, serial string) error {
	if kv.Value == nil {
		return fmt.Errorf("%w: site %q has no enrolled identity (deleted site or never enrolled): certificate %s refused", ErrNotEnrolled, site, serial)
	}
	var e Edge
	if err := json.Unmarshal(kv.Value, &e); err != nil {
		return fmt.Errorf("stored edge %s: %w", site, err)
	}
	if e.Revoked {
		return fmt.Errorf("%w: the identity of site %q was revoked at %s; enroll again", ErrRevoked, site, e.RevokedAt.Format(time.RFC3339))
	}
	if e.Serial != serial {
		return fmt.Errorf("%w: certificate %s for site %q was superseded (re-enrolled or renewed)", ErrNotEnrolled, serial, site)
	}
	return nil
}

// AuthenticateStream is Authenticate for a long-lived stream: ended
// receives one error (why the certificate stopped being accepted: revoked,
// superseded, site deleted) as soon as the site's record changes in any
// replica, and is never written to otherwise. Run must be running: one
// watch on every enrollment record serves every stream (a fleet of
// thousands of streams costs one etcd watch, not one each). The
// registration ends with ctx.
func (s *Service) AuthenticateStream(ctx context.Context, cert *x509.Certificate) (string, <-chan error, error) {
	if cert == nil {
		_, _, _, err := s.authenticate(ctx, cert)
		return "", nil, err
	}
	site := cert.Subject.CommonName
	// Register before reading; until the read is done every event is
	// ignored (it may predate the record read), and one more read after
	// it catches what arrived in between.
	w := &streamWatch{serial: cert.SerialNumber.Text(16), ended: make(chan error, 1)}
	w.after.Store(math.MaxInt64)
	s.watchMu.Lock()
	if s.watching == nil {
		s.watching = map[string]map[*streamWatch]struct{}{}
	}
	if s.watching[site] == nil {
		s.watching[site] = map[*streamWatch]struct{}{}
	}
	s.watching[site][w] = struct{}{}
	s.watchMu.Unlock()
	unregister := func() {
		s.watchMu.Lock()
		delete(s.watching[site], w)
		if len(s.watching[site]) == 0 {
			delete(s.watching, site)
		}
		s.watchMu.Unlock()
	}
	got, _, rev, err := s.authenticate(ctx, cert)
	if err != nil {
		unregister()
		return "", nil, err
	}
	w.after.Store(rev)
	if _, _, _, err := s.authenticate(ctx, cert); err != nil {
		unregister()
		return "", nil, err
	}
	context.AfterFunc(ctx, unregister)
	return got, w.ended, nil
}

// streamWatch is one stream waiting to hear that its certificate stopped
// being accepted.
type streamWatch struct {
	serial string
	after  atomic.Int64 // ignore record changes at or before this revision
	ended  chan error   // buffered 1; written once
	once   sync.Once
}

// Run follows every enrollment record with one watch and ends the streams
// registered by AuthenticateStream whose certificate the new record no
// longer accepts. It returns when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	_, rev, err := s.st.List(ctx, edgesDir, 0)
	if err != nil {
		return err
	}
	for b := range s.st.WatchFrom(ctx, edgesDir, rev) {
		if b.Reset {
			// History compacted: check every stream against its record.
			s.watchMu.Lock()
			sites := make([]string, 0, len(s.watching))
			for site := range s.watching {
				sites = append(sites, site)
			}
			s.watchMu.Unlock()
			for _, site := range sites {
				kv, _, err := s.st.Get(ctx, edgesDir+site)
				if err == nil {
					s.notify(site, kv, 0)
				}
			}
			continue
		}
		for _, ev := range b.Events {
			site := strings.TrimPrefix(ev.Key, edgesDir)
			kv := store.KV{Key: ev.Key, Value: ev.Value}
			if ev.Deleted {
				kv.Value = nil
			}
			s.notify(site, kv, ev.ModRevision)
		}
	}
	return ctx.Err()
}

// notify checks site's streams against its record kv written at rev.
func (s *Service) notify(site string, kv store.KV, rev int64) {
	s.watchMu.Lock()
	ws := make([]*streamWatch, 0, len(s.watching[site]))
	for w := range s.watching[site] {
		ws = append(ws, w)
	}
	s.watchMu.Unlock()
	for _, w := range ws {
		if rev != 0 && rev <= w.after.Load() {
			continue
		}
		if err := checkRecord(kv, site, w.serial); err != nil {
			w.once.Do(func() { w.ended <- err })
		}
	}
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

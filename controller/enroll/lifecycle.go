package enroll

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/meshwan/meshwan/controller/store"
)

// Renew issues a new certificate for the site of cert (the caller's
// verified mTLS certificate) from a CSR for a new key, and makes it the
// only one accepted: the old certificate's open streams end (see
// AuthenticateStream). Refused when cert is revoked, superseded, or its site
// is gone. The transaction is guarded on the enrollment record and on the
// site's record, so a renewal racing a revocation, a re-enrollment or a
// DeleteSite loses.
func (s *Service) Renew(ctx context.Context, cert *x509.Certificate, csrPEM []byte) (string, []byte, error) {
	site, kv, _, err := s.authenticate(ctx, cert)
	if err != nil {
		return "", nil, err
	}
	siteRev, err := s.site(ctx, site)
	if err != nil {
		return "", nil, err
	}
	if siteRev == 0 {
		return "", nil, fmt.Errorf("%w: site %q no longer exists", ErrNotEnrolled, site)
	}
	var e Edge
	if err := json.Unmarshal(kv.Value, &e); err != nil {
		return "", nil, fmt.Errorf("stored edge %s: %w", site, err)
	}
	certPEM, serial, notAfter, err := s.ca.signEdge(csrPEM, site, s.cfg.EdgeCertValidity)
	if err != nil {
		return "", nil, err
	}
	e.Serial, e.NotAfter, e.RenewedAt = serial, notAfter, s.now().UTC()
	raw, _ := json.Marshal(e)
	if s.beforeCommit != nil {
		s.beforeCommit()
	}
	won, _, err := s.st.Txn(ctx,
		[]store.Cmp{store.Unchanged(edgesDir+site, kv.ModRevision), store.Unchanged(s.cfg.SiteKey(site), siteRev)},
		[]store.Op{store.Put(edgesDir+site, raw)})
	if err != nil {
		return "", nil, err
	}
	if !won {
		return "", nil, fmt.Errorf("%w: the identity of site %q changed during renewal (revoked, re-enrolled or deleted)", ErrNotEnrolled, site)
	}
	return site, certPEM, nil
}

// Revoke revokes site's identity: no certificate of it is accepted any
// more (open streams end within a second), renewal is refused; the site
// needs a new enrollment. Revoking twice is not an error.
func (s *Service) Revoke(ctx context.Context, site string) (Edge, error) {
	for {
		kv, ok, err := s.st.Get(ctx, edgesDir+site)
		if err != nil {
			return Edge{}, err
		}
		if !ok {
			return Edge{}, fmt.Errorf("%w: site %q has no enrolled identity", ErrNotFound, site)
		}
		var e Edge
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return Edge{}, fmt.Errorf("stored edge %s: %w", site, err)
		}
		if e.Revoked {
			return e, nil
		}
		e.Revoked, e.RevokedAt = true, s.now().UTC()
		raw, _ := json.Marshal(e)
		won, _, err := s.st.Txn(ctx, []store.Cmp{store.Unchanged(edgesDir+site, kv.ModRevision)}, []store.Op{store.Put(edgesDir+site, raw)})
		if err != nil || won {
			return e, err
		}
	}
}

// Identities returns every site's enrollment record, by site name.
func (s *Service) Identities(ctx context.Context) ([]Edge, error) {
	kvs, _, err := s.st.List(ctx, edgesDir, 0)
	if err != nil {
		return nil, err
	}
	out := make([]Edge, 0, len(kvs))
	for _, kv := range kvs {
		var e Edge
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("stored edge %s: %w", kv.Key, err)
		}
		if e.Site == "" {
			e.Site = strings.TrimPrefix(kv.Key, edgesDir)
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Site < out[j].Site })
	return out, nil
}

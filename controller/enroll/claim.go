package enroll

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/meshwan/meshwan/edge/dataplane/validity"
	"sort"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

// Zero-touch claims. A device (an edge imaged for the whole fleet) holds
// a claim token, the controller address and the CA hash. It claims with its
// device id and a CSR; the controller records it as pending under
// enroll/devices/<id>, bound to the CSR's public key. An admin approves it
// to a site (or approved the device id in advance), and the device's next
// claim returns its certificate. Complications:
//   - the claim token is in every image, so anyone holding one can claim:
//     claims are rate-limited per token, pending devices are bounded and
//     expire, and nothing is issued without an approval naming the device;
//   - a device id is not a secret: the first claim binds the record to its
//     public key, later claims with another key are refused (the admin sees
//     the key hash to compare with what the box shows);
//   - the certificate is issued in one transaction guarded on the device
//     record and the site record, like Enroll.

const devicesDir = "enroll/devices/"

// Device states.
const (
	DevicePending  = "pending"
	DeviceApproved = "approved"
	DeviceEnrolled = "enrolled"
	DeviceRejected = "rejected"
)

// Device is a stored device record.
type Device struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Site       string    `json:"site,omitempty"`
	KeyHash    string    `json:"key_hash,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
	TokenID    string    `json:"token_id,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	FirstSeen  time.Time `json:"first_seen,omitzero"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"` // pending only
}

// ClaimRequest is one claim.
type ClaimRequest struct {
	Token, DeviceID, Hostname, RemoteAddr string
	CSRPEM                                []byte
}

// ClaimResult is the answer: Pending, or the certificate.
type ClaimResult struct {
	Pending    bool
	RetryAfter time.Duration
	Site       string
	CertPEM    []byte
}

// ClaimRetry is how often a pending device is told to ask again.
const ClaimRetry = 5 * time.Second

func validDeviceID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: device_id: 1-128 characters", ErrInvalid)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)) {
			return fmt.Errorf("%w: device_id: %q: only letters, digits and -_.: are allowed", ErrInvalid, id)
		}
	}
	return nil
}

// Claim handles one claim of a device.
func (s *Service) Claim(ctx context.Context, r ClaimRequest) (ClaimResult, error) {
	id, random, ok := strings.Cut(r.Token, ".")
	if !ok || id == "" || random == "" {
		return ClaimResult{}, fmt.Errorf("%w: claim_token: expected the form ID.SECRET", ErrTokenInvalid)
	}
	if err := validDeviceID(r.DeviceID); err != nil {
		return ClaimResult{}, err
	}
	t, _, err := s.getToken(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return ClaimResult{}, fmt.Errorf("%w: claim_token: unknown token id %s", ErrTokenInvalid, validity.Quote(id))
	}
	if err != nil {
		return ClaimResult{}, err
	}
	if subtle.ConstantTimeCompare(t.Hash, hashSecret(random)) != 1 {
		return ClaimResult{}, fmt.Errorf("%w: claim_token: secret does not match token %s", ErrTokenInvalid, validity.Quote(id))
	}
	now := s.now().UTC()
	switch {
	case !t.Claim:
		return ClaimResult{}, fmt.Errorf("%w: token %s is not a claim token (use --token)", ErrTokenRefused, validity.Quote(id))
	case t.Revoked:
		return ClaimResult{}, fmt.Errorf("%w: claim token %s was revoked", ErrTokenRefused, validity.Quote(id))
	case !now.Before(t.ExpiresAt):
		return ClaimResult{}, fmt.Errorf("%w: claim token %s expired at %s", ErrTokenRefused, validity.Quote(id), t.ExpiresAt.Format(time.RFC3339))
	}
	if !s.allow(id, now) {
		return ClaimResult{}, fmt.Errorf("%w: claim token %s: more than %d claims a minute; retry later", ErrRateLimited, validity.Quote(id), s.cfg.ClaimsPerMinute)
	}
	csr, err := parseCSR(r.CSRPEM)
	if err != nil {
		return ClaimResult{}, err
	}
	kh := keyHash(csr)
	key := devicesDir + r.DeviceID
	kv, found, err := s.st.Get(ctx, key)
	if err != nil {
		return ClaimResult{}, err
	}
	var d Device
	if found {
		if err := json.Unmarshal(kv.Value, &d); err != nil {
			return ClaimResult{}, fmt.Errorf("stored device %s: %w", r.DeviceID, err)
		}
	}
	if found && d.State == DevicePending && !now.Before(d.ExpiresAt) {
		found, d = false, Device{} // expired: start over
	}
	if !found {
		if n, err := s.countPending(ctx, now); err != nil {
			return ClaimResult{}, err
		} else if n >= s.cfg.MaxPending {
			return ClaimResult{}, fmt.Errorf("%w: %d devices are pending approval already", ErrRateLimited, n)
		}
		d = Device{ID: r.DeviceID, State: DevicePending, FirstSeen: now}
	}
	switch {
	case d.State == DeviceRejected:
		return ClaimResult{}, fmt.Errorf("%w: device %q was rejected", ErrDeviceRefused, r.DeviceID)
	case d.KeyHash != "" && d.KeyHash != kh:
		return ClaimResult{}, fmt.Errorf("%w: device %q already claimed with another key (%s); reject it and approve again if the box was re-imaged", ErrDeviceRefused, r.DeviceID, short(d.KeyHash))
	}
	d.KeyHash, d.Hostname, d.TokenID, d.RemoteAddr = kh, r.Hostname, id, r.RemoteAddr
	if d.FirstSeen.IsZero() {
		d.FirstSeen = now
	}
	if d.State == DevicePending {
		// A pending device asks every few seconds: write only when its
		// record is new or its last-seen time a minute old.
		if found && now.Sub(d.LastSeen) < time.Minute {
			return ClaimResult{Pending: true, RetryAfter: ClaimRetry}, nil
		}
		d.LastSeen, d.ExpiresAt = now, now.Add(s.cfg.PendingTTL)
		raw, _ := json.Marshal(d)
		if _, _, err := s.st.Txn(ctx, []store.Cmp{store.Unchanged(key, kv.ModRevision)}, []store.Op{store.Put(key, raw)}); err != nil {
			return ClaimResult{}, err
		}
		return ClaimResult{Pending: true, RetryAfter: ClaimRetry}, nil
	}
	// Approved (or enrolled and asking again with the same key, e.g. after
	// losing the answer): issue.
	siteRev, err := s.site(ctx, d.Site)
	if err != nil {
		return ClaimResult{}, err
	}
	if siteRev == 0 {
		return ClaimResult{}, fmt.Errorf("%w: device %q is assigned to site %q, which does not exist", ErrDeviceRefused, r.DeviceID, d.Site)
	}
	certPEM, serial, notAfter, err := s.ca.signEdge(r.CSRPEM, d.Site, s.cfg.EdgeCertValidity)
	if err != nil {
		return ClaimResult{}, err
	}
	d.State, d.LastSeen, d.ExpiresAt = DeviceEnrolled, now, time.Time{}
	rawD, _ := json.Marshal(d)
	rawE, _ := json.Marshal(Edge{Site: d.Site, Serial: serial, EnrolledAt: now, TokenID: id, NotAfter: notAfter, DeviceID: d.ID})
	if s.beforeCommit != nil {
		s.beforeCommit()
	}
	won, _, err := s.st.Txn(ctx,
		[]store.Cmp{store.Unchanged(key, kv.ModRevision), store.Unchanged(s.cfg.SiteKey(d.Site), siteRev)},
		[]store.Op{store.Put(key, rawD), store.Put(edgesDir+d.Site, rawE)})
	if err != nil {
		return ClaimResult{}, err
	}
	if !won {
		return ClaimResult{Pending: true, RetryAfter: time.Second}, nil // changed meanwhile: ask again
	}
	return ClaimResult{Site: d.Site, CertPEM: certPEM}, nil
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

// ApproveDevice assigns a device to site. A device never seen is approved
// in advance ("this serial is branch7"): its first claim gets the
// certificate at once, and it binds its key then.
func (s *Service) ApproveDevice(ctx context.Context, deviceID, site string) (Device, error) {
	if err := validDeviceID(deviceID); err != nil {
		return Device{}, err
	}
	if site == "" {
		return Device{}, fmt.Errorf("%w: site: required", ErrInvalid)
	}
	if rev, err := s.site(ctx, site); err != nil {
		return Device{}, err
	} else if rev == 0 {
		return Device{}, fmt.Errorf("%w: site: no site named %q", ErrNotFound, site)
	}
	return s.updateDevice(ctx, deviceID, true, func(d *Device) error {
		if d.State == DeviceEnrolled {
			return fmt.Errorf("%w: device %q is enrolled already (as site %q)", ErrInvalid, deviceID, d.Site)
		}
		d.State, d.Site, d.ExpiresAt = DeviceApproved, site, time.Time{}
		return nil
	})
}

// RejectDevice refuses the device's claims from now on.
func (s *Service) RejectDevice(ctx context.Context, deviceID string) (Device, error) {
	return s.updateDevice(ctx, deviceID, false, func(d *Device) error {
		d.State, d.ExpiresAt, d.KeyHash = DeviceRejected, time.Time{}, ""
		return nil
	})
}

func (s *Service) updateDevice(ctx context.Context, id string, create bool, f func(*Device) error) (Device, error) {
	key := devicesDir + id
	for {
		kv, ok, err := s.st.Get(ctx, key)
		if err != nil {
			return Device{}, err
		}
		var d Device
		if ok {
			if err := json.Unmarshal(kv.Value, &d); err != nil {
				return Device{}, fmt.Errorf("stored device %s: %w", id, err)
			}
			if d.State == DevicePending && !s.now().Before(d.ExpiresAt) {
				ok = false
			}
		}
		if !ok {
			if !create {
				return Device{}, fmt.Errorf("%w: device %q", ErrNotFound, id)
			}
			d = Device{ID: id}
		}
		if err := f(&d); err != nil {
			return Device{}, err
		}
		raw, _ := json.Marshal(d)
		won, _, err := s.st.Txn(ctx, []store.Cmp{store.Unchanged(key, kv.ModRevision)}, []store.Op{store.Put(key, raw)})
		if err != nil || won {
			return d, err
		}
	}
}

// Devices lists the devices, by id; expired pending devices are left out
// and deleted.
func (s *Service) Devices(ctx context.Context) ([]Device, error) {
	kvs, _, err := s.st.List(ctx, devicesDir, 0)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]Device, 0, len(kvs))
	for _, kv := range kvs {
		var d Device
		if err := json.Unmarshal(kv.Value, &d); err != nil {
			return nil, fmt.Errorf("stored device %s: %w", kv.Key, err)
		}
		if d.State == DevicePending && !now.Before(d.ExpiresAt) {
			_, _, _ = s.st.Txn(ctx, []store.Cmp{store.Unchanged(kv.Key, kv.ModRevision)}, []store.Op{store.Delete(kv.Key)})
			continue
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *Service) countPending(ctx context.Context, now time.Time) (int, error) {
	kvs, _, err := s.st.List(ctx, devicesDir, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, kv := range kvs {
		var d Device
		if json.Unmarshal(kv.Value, &d) == nil && d.State == DevicePending && now.Before(d.ExpiresAt) {
			n++
		}
	}
	return n, nil
}

// bucket is a token bucket of claims per claim token, per process (each
// replica enforces its own).
type bucket struct {
	tokens float64
	last   time.Time
}

func (s *Service) allow(tokenID string, now time.Time) bool {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	limit := float64(s.cfg.ClaimsPerMinute)
	b := s.lim[tokenID]
	if b == nil {
		b = &bucket{tokens: limit, last: now}
		s.lim[tokenID] = b
	}
	b.tokens = min(limit, b.tokens+now.Sub(b.last).Minutes()*limit)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

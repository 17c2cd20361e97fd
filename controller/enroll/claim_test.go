package enroll

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestClaimPendingApproveIssue(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	tok, secret, err := s.CreateClaimToken(ctx, 0)
	if err != nil || !tok.Claim || tok.ExpiresAt.Sub(tok.CreatedAt) != DefaultClaimTokenTTL {
		t.Fatalf("claim token: %+v %v", tok, err)
	}
	key := csr(t)
	req := ClaimRequest{Token: secret, DeviceID: "SN-0001", Hostname: "box1", CSRPEM: key}
	r, err := s.Claim(ctx, req)
	if err != nil || !r.Pending {
		t.Fatalf("first claim: %+v %v, want pending", r, err)
	}
	ds, _ := s.Devices(ctx)
	if len(ds) != 1 || ds[0].State != DevicePending || ds[0].Hostname != "box1" || ds[0].KeyHash == "" {
		t.Fatalf("devices: %+v", ds)
	}
	// Someone else with the fleet token and the same (non-secret) serial.
	if _, err := s.Claim(ctx, ClaimRequest{Token: secret, DeviceID: "SN-0001", CSRPEM: csr(t)}); !errors.Is(err, ErrDeviceRefused) {
		t.Errorf("claim of a pending device with another key: %v, want ErrDeviceRefused", err)
	}
	if r, err := s.Claim(ctx, req); err != nil || !r.Pending {
		t.Fatalf("claim again before approval: %+v %v", r, err)
	}
	if _, err := s.ApproveDevice(ctx, "SN-0001", "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("approve to a missing site: %v", err)
	}
	if _, err := s.ApproveDevice(ctx, "SN-0001", "br1"); err != nil {
		t.Fatal(err)
	}
	r, err = s.Claim(ctx, req)
	if err != nil || r.Pending || r.Site != "br1" {
		t.Fatalf("claim after approval: %+v %v", r, err)
	}
	cert := parseCert(t, r.CertPEM)
	if site, err := s.Authenticate(ctx, cert); err != nil || site != "br1" {
		t.Fatalf("claimed certificate: %s %v", site, err)
	}
	if e, _, _ := s.Edge(ctx, "br1"); e.DeviceID != "SN-0001" {
		t.Errorf("record: %+v", e)
	}
	// Token flows stay apart.
	if _, _, err := s.Enroll(ctx, secret, "br1", csr(t)); !errors.Is(err, ErrTokenRefused) {
		t.Errorf("claim token used to enroll: %v", err)
	}
	_, site, _ := s.CreateToken(ctx, "hq", 0)
	if _, err := s.Claim(ctx, ClaimRequest{Token: site, DeviceID: "x", CSRPEM: csr(t)}); !errors.Is(err, ErrTokenRefused) {
		t.Errorf("site token used to claim: %v", err)
	}
}

func TestClaimPreApprovedRejectedExpiredRevoked(t *testing.T) {
	s := newService(t)
	s.cfg.PendingTTL = time.Hour
	ctx := context.Background()
	tok, secret, _ := s.CreateClaimToken(ctx, 0)
	// The site declared its serial before the box was plugged in.
	if _, err := s.ApproveDevice(ctx, "SN-hq", "hq"); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Claim(ctx, ClaimRequest{Token: secret, DeviceID: "SN-hq", CSRPEM: csr(t)}); err != nil || r.Site != "hq" {
		t.Fatalf("pre-approved device: %+v %v", r, err)
	}
	s.Claim(ctx, ClaimRequest{Token: secret, DeviceID: "SN-bad", CSRPEM: csr(t)})
	if _, err := s.RejectDevice(ctx, "SN-bad"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, ClaimRequest{Token: secret, DeviceID: "SN-bad", CSRPEM: csr(t)}); !errors.Is(err, ErrDeviceRefused) {
		t.Errorf("rejected device: %v", err)
	}
	s.Claim(ctx, ClaimRequest{Token: secret, DeviceID: "SN-old", CSRPEM: csr(t)})
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	ds, _ := s.Devices(ctx)
	for _, d := range ds {
		if d.ID == "SN-old" {
			t.Errorf("pending device did not expire: %+v", d)
		}
	}
	if _, err := s.ApproveDevice(ctx, "SN-bad-id/../x", "hq"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad device id: %v", err)
	}
	s.RevokeToken(ctx, tok.ID)
	if _, err := s.Claim(ctx, ClaimRequest{Token: secret, DeviceID: "SN-new", CSRPEM: csr(t)}); !errors.Is(err, ErrTokenRefused) {
		t.Errorf("revoked claim token: %v", err)
	}
}

func TestClaimRateLimited(t *testing.T) {
	s := newService(t)
	s.cfg.ClaimsPerMinute = 5
	ctx := context.Background()
	_, secret, _ := s.CreateClaimToken(ctx, 0)
	var limited int
	for i := range 8 {
		_, err := s.Claim(ctx, ClaimRequest{Token: secret, DeviceID: "SN-" + string(rune('a'+i)), CSRPEM: csr(t)})
		if errors.Is(err, ErrRateLimited) {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited != 3 {
		t.Errorf("%d of 8 claims limited at 5/minute, want 3", limited)
	}
}

package intent

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestUnmanagedSiteNeedsFixedAddresses: a dynamic transport on an
// unmanaged site is refused naming the field (nothing would ever report
// its address), a fixed one is accepted, and the same dynamic transport on
// a managed site stays valid.
func TestUnmanagedSiteNeedsFixedAddresses(t *testing.T) {
	s := tsite("remote", "110.19.112.126", "10.2.1.0/24")
	s.Transports = append(s.Transports, Transport{Name: "lte", Dynamic: true})
	if err := s.Validate(); err != nil {
		t.Fatalf("managed site with a dynamic transport: %v", err)
	}
	s.Unmanaged = true
	err := s.Validate()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "site.transports[1].address:") || !strings.Contains(err.Error(), "unmanaged") {
		t.Fatalf("unmanaged site with a dynamic transport: %v, want ErrInvalid naming site.transports[1].address", err)
	}
	s.Transports = s.Transports[:1]
	if err := s.Validate(); err != nil {
		t.Errorf("unmanaged site with a fixed address: %v", err)
	}
}

// TestUnmanagedRoundTripsJSON: the flag is stored with the site and absent
// (so older records read as managed) when false.
func TestUnmanagedRoundTripsJSON(t *testing.T) {
	s := tsite("remote", "110.19.112.126", "10.2.1.0/24")
	raw, _ := json.Marshal(s)
	if strings.Contains(string(raw), "unmanaged") {
		t.Errorf("managed site stored with the flag: %s", raw)
	}
	s.Unmanaged = true
	raw, _ = json.Marshal(s)
	var back Site
	if err := json.Unmarshal(raw, &back); err != nil || !back.Unmanaged || back.Transports[0].Addr != netip.MustParseAddr("110.19.112.126") {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

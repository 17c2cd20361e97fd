package enroll

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/store"
)

// TestUnmanagedSiteCannotEnroll: no edge runs at an unmanaged site, so a
// site-bound token, an enrollment naming it and a device approval for it
// are all refused with ErrUnmanaged naming the site; turning a site
// unmanaged after a token was made for it stops that token too.
func TestUnmanagedSiteCannotEnroll(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	_, free, err := s.CreateToken(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, bound, err := s.CreateToken(ctx, "br1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.st.Txn(ctx, nil, []store.Op{store.Put(siteKey("br1"), []byte(`{"name":"br1","unmanaged":true}`))}); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrUnmanaged) || !strings.Contains(err.Error(), `"br1"`) {
			t.Errorf("%s: %v, want ErrUnmanaged naming br1", what, err)
		}
	}
	_, _, err = s.CreateToken(ctx, "br1", 0)
	refused("token bound to the site", err)
	_, _, err = s.Enroll(ctx, free, "br1", csr(t))
	refused("enroll with an unbound token", err)
	_, _, err = s.Enroll(ctx, bound, "", csr(t))
	refused("enroll with a token bound before the site became unmanaged", err)
	_, err = s.ApproveDevice(ctx, "SN-1", "br1")
	refused("device approval", err)
	if _, _, err := s.Enroll(ctx, free, "hq", csr(t)); err != nil {
		t.Errorf("the unbound token still enrolls a managed site: %v", err)
	}
}

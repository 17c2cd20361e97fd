package network_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/store"
)

// TestAuditFindsWhatOlderVersionsStored: a network written through the API
// passes the audit; sites written under older, looser rules (straight into
// etcd here: a LAN in loopback space, a LAN containing another site's
// underlay) are each named by the audit, which is what the controller
// reports at start.
func TestAuditFindsWhatOlderVersionsStored(t *testing.T) {
	f := newFixture(t, "10.255.0.0/16")
	f.addSites(t, mkSite(1, intent.RoleHub), mkSite(2, intent.RoleSpoke))
	if errs := f.net.Audit(); len(errs) != 0 {
		t.Fatalf("a network made through the API fails the audit: %v", errs)
	}

	loop := mkSite(3, intent.RoleSpoke)
	loop.LANPrefixes = []netip.Prefix{netip.MustParsePrefix("127.1.0.0/16")}
	swallow := mkSite(4, intent.RoleSpoke)
	swallow.LANPrefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/29")} // holds site01's and site02's underlays
	var rev int64
	for _, s := range []intent.Site{loop, swallow} {
		raw, _ := json.Marshal(s)
		_, r, err := f.st.Txn(context.Background(), nil, []store.Op{store.Put("intent/sites/"+s.Name, raw)})
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	waitView(t, f, rev)

	errs := f.net.Audit()
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	got := strings.Join(all, "\n")
	for _, want := range []string{`site "site03"`, "127.1.0.0/16", `site "site04"`, "198.51.100.0/29"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit does not mention %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, `site "site01"`) && !strings.Contains(got, "site04") {
		t.Errorf("audit blames the wrong site:\n%s", got)
	}

	// The answer is cached per change: asked again it is the same; once
	// the bad sites are gone it is clean again.
	if again := f.net.Audit(); len(again) != len(errs) {
		t.Errorf("a second audit found %d problems, the first %d", len(again), len(errs))
	}
	_, rev, err := f.st.Txn(context.Background(), nil, []store.Op{store.Delete("intent/sites/" + loop.Name), store.Delete("intent/sites/" + swallow.Name)})
	if err != nil {
		t.Fatal(err)
	}
	waitView(t, f, rev)
	if errs := f.net.Audit(); len(errs) != 0 {
		t.Errorf("after the bad sites were deleted the audit still finds: %v", errs)
	}
}

package browsertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/meshwan/meshwan/edge/identity"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// claimResult is what identity.Claim returned.
type claimResult struct {
	id  *identity.Identity
	err error
}

// startClaim runs identity.Claim, as a box imaged with a fleet claim token
// does, until it is approved or the test ends. pending hears each pending
// answer; the result arrives once.
func startClaim(t *testing.T, c *controller, token *pb.EnrollmentToken, deviceID string) (pending <-chan struct{}, result <-chan claimResult) {
	t.Helper()
	pend := make(chan struct{}, 1)
	res := make(chan claimResult, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	dir := t.TempDir()
	t.Cleanup(func() { cancel(); <-done }) // before the controller closes
	go func() {
		defer close(done)
		id, err := identity.Claim(ctx, dir, identity.ClaimOptions{
			Controller: c.d.GRPCAddr.String(), ClaimToken: token.Secret, DeviceID: deviceID, Hostname: "branch-box",
			CAHash: token.CaSha256, MaxRetry: 500 * time.Millisecond,
			OnPending: func() {
				select {
				case pend <- struct{}{}:
				default:
				}
			},
		})
		res <- claimResult{id, err}
	}()
	return pend, res
}

// A device that claims with a fleet claim token shows as pending on the
// "Add a site" page; approving it there to a site (with the page's own site
// choice and Approve button) assigns it in the controller, the box gets its
// certificate for that site, and the page no longer offers it as pending.
// The sites table shows each enrolled site's certificate expiry.
func TestDevicesClaimApproveInDashboard(t *testing.T) {
	requireBrowser(t)
	c := startController(t)
	c.seed(t, pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE,
		siteSpec{"hq", true, [][2]string{{"inet1", "20.0.0.1"}}, []string{"10.1.0.0/24"}},
		siteSpec{"br1", false, [][2]string{{"inet1", "20.0.0.11"}}, []string{"10.11.0.0/24"}})

	// br1 enrolls with a per-site token, so it has a certificate (and is
	// not offered to the device: only sites without one are).
	siteTok, err := c.admin.CreateEnrollmentToken(c.ctx, &pb.CreateEnrollmentTokenRequest{Site: "br1"})
	if err != nil {
		t.Fatal(err)
	}
	br1, err := identity.Enroll(c.ctx, t.TempDir(), identity.EnrollOptions{Controller: c.d.GRPCAddr.String(), Token: siteTok.Secret, CAHash: siteTok.CaSha256})
	if err != nil || br1.Site != "br1" {
		t.Fatalf("enroll br1: %v %v", br1, err)
	}

	// A box claims with a fleet claim token and waits for approval.
	const deviceID = "SN-BROWSER-1"
	claimTok, err := c.admin.CreateEnrollmentToken(c.ctx, &pb.CreateEnrollmentTokenRequest{Claim: true})
	if err != nil || !claimTok.Claim {
		t.Fatalf("claim token: %v %v", claimTok, err)
	}
	pending, result := startClaim(t, c, claimTok, deviceID)
	select {
	case <-pending:
	case r := <-result:
		t.Fatalf("claim ended before approval: %v %v", r.id, r.err)
	case <-time.After(waitTimeout):
		t.Fatal("the claim got no pending answer")
	}
	if d := device(t, c, deviceID); d == nil || d.State != pb.DeviceState_DEVICE_STATE_PENDING {
		t.Fatalf("device after its claim: %v, want pending", d)
	}

	b := newBrowser(t, 1400, 1000)
	dir := artifactsDir(t)
	ctx := b.root
	login(t, b, c)

	// The onboarding page lists it as pending, offering hq (no edge yet)
	// and not br1 (enrolled).
	row := fmt.Sprintf(`document.querySelector('#devices tr[data-device=%s]')`, jsString(deviceID))
	sel := fmt.Sprintf(`document.querySelector('#devices select[data-device-site=%s]')`, jsString(deviceID))
	do(t, ctx, "open onboarding", chromedp.Click(chromedp.CSS(`a[data-nav=onboard]`)))
	waitJS(t, ctx, "the pending device", fmt.Sprintf(`!document.getElementById("view-onboard").hidden && %s !== null && %s.classList.contains("device-pending") && %s !== null`, row, row, sel))
	if got := eval[string](t, ctx, row+`.querySelector("td").textContent`); got != "pending" {
		t.Errorf("device state cell %q, want pending", got)
	}
	if got := eval[string](t, ctx, row+`.children[3].textContent`); got != "branch-box" {
		t.Errorf("device hostname cell %q, want branch-box", got)
	}
	if got := eval[[]string](t, ctx, `[...`+sel+`.options].map(o => o.value)`); len(got) != 1 || got[0] != "hq" {
		t.Errorf("sites offered to the device %v, want [hq]", got)
	}
	screenshot(t, ctx, dir, "devices-01-pending")

	// Approve it to hq with the page's controls.
	eval[bool](t, ctx, fmt.Sprintf(`(() => { const s = %s; s.value = "hq"; s.dispatchEvent(new Event("change", {bubbles: true})); return true; })()`, sel))
	do(t, ctx, "approve the device", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#devices button[data-approve=%s]`, jsString(deviceID)))))
	waitJS(t, ctx, "the device no longer pending", fmt.Sprintf(`(() => {
		const r = %s;
		return r !== null && !r.classList.contains("device-pending") && r.children[2].textContent === "hq" &&
			document.querySelector("#devices tr.device-pending, #devices button[data-approve]") === null;
	})()`, row))
	if msg := eval[string](t, ctx, `document.getElementById("device-error").textContent`); msg != "" {
		t.Errorf("device error shown: %q", msg)
	}
	if d := device(t, c, deviceID); d == nil || d.Site != "hq" ||
		(d.State != pb.DeviceState_DEVICE_STATE_APPROVED && d.State != pb.DeviceState_DEVICE_STATE_ENROLLED) {
		t.Fatalf("device after approval in the page: %v, want approved (or enrolled) to hq", d)
	}

	// The box, asking again, receives its certificate for hq.
	var r claimResult
	select {
	case r = <-result:
	case <-time.After(waitTimeout):
		t.Fatal("the device got no certificate after approval")
	}
	if r.err != nil || r.id.Site != "hq" {
		t.Fatalf("claim after approval: %v %v, want site hq", r.id, r.err)
	}
	if d := device(t, c, deviceID); d == nil || d.State != pb.DeviceState_DEVICE_STATE_ENROLLED || d.Site != "hq" {
		t.Errorf("device after it took its certificate: %v, want enrolled at hq", d)
	}
	waitJS(t, ctx, "the device enrolled", row+`.classList.contains("device-enrolled") && `+row+`.children[1].textContent === "enrolled"`)
	screenshot(t, ctx, dir, "devices-02-approved")

	// The sites table: each enrolled site's certificate expiry, in days,
	// with the date itself in the title.
	do(t, ctx, "open the sites", chromedp.Click(chromedp.CSS(`a[data-nav=sites]`)))
	waitJS(t, ctx, "the sites table with certificates", `!document.getElementById("view-sites").hidden &&
		["hq", "br1"].every(s => /^expires in \d+ days$/.test((document.querySelector('#sites-table td[data-cert="' + s + '"]') || {}).textContent || ""))`)
	for _, site := range []struct {
		name     string
		notAfter time.Time
	}{{"br1", br1.NotAfter()}, {"hq", r.id.NotAfter()}} {
		cell := fmt.Sprintf(`document.querySelector('#sites-table td[data-cert=%s]')`, jsString(site.name))
		text := eval[string](t, ctx, cell+`.textContent`)
		days := int(time.Until(site.notAfter) / (24 * time.Hour))
		if want, wantLess := fmt.Sprintf("expires in %d days", days), fmt.Sprintf("expires in %d days", days-1); text != want && text != wantLess {
			t.Errorf("%s's certificate cell %q, want %q (not after %v)", site.name, text, want, site.notAfter)
		}
		// The title is the expiry date, to the second.
		ms := eval[float64](t, ctx, cell+`.querySelector("span[title]") ? new Date(`+cell+`.querySelector("span[title]").title).getTime() : 0`)
		if got := time.UnixMilli(int64(ms)); got.Sub(site.notAfter).Abs() > time.Second {
			t.Errorf("%s's certificate date %v, want %v", site.name, got, site.notAfter)
		}
	}
	screenshot(t, ctx, dir, "devices-03-sites-certificates")
	b.checkNoErrors()
}

// device is the controller's record of a claimed device, or nil.
func device(t *testing.T, c *controller, id string) *pb.Device {
	t.Helper()
	resp, err := c.admin.ListDevices(c.ctx, &pb.ListDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range resp.Devices {
		if d.DeviceId == id {
			return d
		}
	}
	return nil
}

//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/e2e/lab"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// TestClaimOnboardingAndRenewalUnderTraffic: a new site is onboarded by
// zero-touch claim + approval (the edge starts from a config file holding
// only the controller address, a fleet claim token and the CA hash) and
// reaches encrypted LAN-to-LAN traffic with a site enrolled by token; then,
// with 60-second certificates, both edges renew under a continuous ping
// and not one packet is lost.
func TestClaimOnboardingAndRenewalUnderTraffic(t *testing.T) {
	const validity = 60 * time.Second
	e := setupLab(t, lab.Config{Sites: []string{"hq", "br1"}}, func(c *daemon.Config) { c.EdgeCertValidity = validity })
	e.declare("hq")
	e.topology(pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH)

	// hq: the per-site token flow.
	tok, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Site: "hq"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.lab.StartEdge("hq", e.ctl.GRPCAddr.String(), "--token", tok.Secret, "--ca-hash", tok.CaSha256); err != nil {
		t.Fatal(err)
	}
	// br1: the image's config file, the same for every box of the fleet.
	claim, err := e.admin.CreateEnrollmentToken(e.actx, &pb.CreateEnrollmentTokenRequest{Claim: true})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(e.lab.Dir, "br1", "edge.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("controller: %s\nclaim-token: %s\nca-hash: %s\ndevice-id: SN-E2E-BR1\n",
		e.ctl.GRPCAddr, claim.Secret, claim.CaSha256)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.lab.StartEdge("br1", e.ctl.GRPCAddr.String(), "--config", conf); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(converge)
	for {
		ds, err := e.admin.ListDevices(e.actx, &pb.ListDevicesRequest{})
		if err == nil && len(ds.Devices) == 1 && ds.Devices[0].DeviceId == "SN-E2E-BR1" && ds.Devices[0].State == pb.DeviceState_DEVICE_STATE_PENDING {
			t.Logf("device pending: %v", ds.Devices[0])
			break
		}
		if time.Now().After(deadline) || e.lab.EdgeExited("br1") {
			t.Fatalf("br1 never showed up as a pending device (%v %v):\n%s", ds, err, tail(e.lab.EdgeLog("br1"), 30))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := e.admin.ApproveDevice(e.actx, &pb.ApproveDeviceRequest{DeviceId: "SN-E2E-BR1", Site: "br1"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.waitAllPairs()
	t.Logf("claimed site reaches hq %v after approval", time.Since(start).Round(time.Millisecond))
	e.expectSAs(map[string][]string{"hq": {"br1"}, "br1": {"hq"}})
	e.expectEncrypted()

	// Renewal under traffic: 1.6 lifetimes of pinging span at least one
	// renewal of each edge (they renew every 2/3 lifetime).
	serials := func() map[string]string {
		ids, err := e.admin.ListSiteIdentities(e.actx, &pb.ListSiteIdentitiesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, id := range ids.Identities {
			m[id.Site] = id.Serial
		}
		return m
	}
	before := serials()
	count := int(validity*16/10/(100*time.Millisecond)) + 1
	out, _ := lab.Run(e.ctx, "ip", "netns", "exec", e.lab.Sites["br1"].LANNS, "ping", "-n", "-q", "-i", "0.1", "-W", "5",
		"-c", strconv.Itoa(count), e.lab.Sites["hq"].Host.String())
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping: %s", out)
	}
	after := serials()
	for _, s := range []string{"hq", "br1"} {
		if before[s] == after[s] {
			t.Errorf("%s did not renew its certificate during %v of traffic", s, validity*16/10)
		}
		if e.lab.EdgeExited(s) || strings.Contains(e.lab.EdgeLog(s), "controller refuses this edge") {
			t.Errorf("edge %s gave up:\n%s", s, tail(e.lab.EdgeLog(s), 30))
		}
		if n := strings.Count(e.lab.EdgeLog(s), "certificate renewed"); n == 0 {
			t.Errorf("edge %s logged no renewal", s)
		} else {
			t.Logf("edge %s renewed %d times", s, n)
		}
	}
	if m[1] != m[2] {
		t.Fatalf("renewal under traffic lost packets: %s sent, %s received", m[1], m[2])
	}
	t.Logf("renewal under traffic: %s packets sent, %s received, 0 lost", m[1], m[2])
}

package sim_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/e2e/sim"
)

// inproc is a controller in the test process; Restart closes it and starts
// it again on the same data directory and ports.
type inproc struct {
	cfg daemon.Config
	d   *daemon.Daemon
}

func (c *inproc) Addr() string       { return c.d.GRPCAddr.String() }
func (c *inproc) AdminToken() string { return c.d.AdminToken }
func (c *inproc) CAPEM() []byte      { return c.d.CAPEM }

func (c *inproc) Restart(ctx context.Context) (time.Time, error) {
	c.d.Close()
	stopped := time.Now()
	d, err := daemon.Start(ctx, c.cfg)
	if err != nil {
		return stopped, err
	}
	c.d = d
	return stopped, nil
}

func (c *inproc) Close() {
	if c.d != nil {
		c.d.Close()
	}
}

// fleetSize is how many edges the correctness test simulates. Under -race
// on the 2-core build machine 200 take ~15 s against the reworked
// controller (working tree of 2026-12-03); at commit 1f9ac74, whose
// onboarding cost grows with every site, they took ~175 s (100: ~32 s).
const fleetSize = 200

// TestFleetConvergesAndSurvivesRestart is the simulator's correctness run
// against an in-process controller: every edge converges to exactly the
// tunnels the API lists and refuses no state, a one-tunnel change reaches
// exactly the spoke and its two hubs, and after a controller restart every
// edge is back with its state. It checks correctness, not timing.
func TestFleetConvergesAndSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates a fleet of edges (about a minute)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// A fixed gRPC port, so that the restarted controller answers where
	// the edges reconnect; the HTTP port is not used by edges: any free
	// one (a second FreeAddr could race with the first, or another test,
	// for the same port).
	grpcAddr, err := sim.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctl := &inproc{cfg: daemon.Config{
		DataDir: t.TempDir(), GRPCListen: grpcAddr, HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.128.0.0/10", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true,
	}}
	if ctl.d, err = daemon.Start(ctx, ctl.cfg); err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	admin, err := sim.DialAdmin(ctl.Addr(), ctl.AdminToken(), ctl.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// A short backoff keeps the restart quick; the timing is the
	// benchmark's business.
	fleet := sim.NewFleet(ctx, sim.FleetConfig{Controller: grpcAddr, Dir: t.TempDir(),
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
	defer fleet.Close()
	defer func() {
		for _, err := range sim.Failures(fleet.Snapshot()) {
			t.Error(err)
		}
	}()

	start := time.Now()
	ob, err := sim.Onboard(ctx, admin, fleet, fleetSize, 8, 1400)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.WaitConverged(ctx, admin, fleet, 1400); err != nil {
		t.Fatalf("after onboarding: %v", err)
	}
	t.Logf("%d edges onboarded and converged in %v (all first states %v after the first CreateSite)",
		fleetSize, time.Since(start).Round(time.Millisecond), ob.AllFirst.Sub(ob.Start).Round(time.Millisecond))

	one, err := sim.ChangeOneTunnel(ctx, admin, fleet, fleetSize/2, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(one.Affected) != 1+sim.Hubs {
		t.Errorf("affected edges: %v, want the spoke and %d hubs", one.Affected, sim.Hubs)
	}
	for site, b := range one.Affected {
		if b == 0 {
			t.Errorf("%s received nothing for the change of %s's tunnels", site, one.Site)
		}
	}
	if one.Others != 0 {
		t.Errorf("%d unaffected edges received %d bytes for the change of %s's tunnels", one.Others, one.OtherB, one.Site)
	}
	if err := sim.WaitConverged(ctx, admin, fleet, 1400); err != nil {
		t.Fatalf("after the one-tunnel change: %v", err)
	}

	rr, err := sim.Restart(ctx, ctl, fleet)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.WaitConverged(ctx, admin, fleet, 1400); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	t.Logf("restart: every edge current %v after the old controller stopped (%d streams reset, %d failed retries, %d reconnects)",
		rr.AllCurrent.Sub(rr.Stopped).Round(time.Millisecond), rr.Resets, rr.Retries, rr.Reconnects)
}

package network_test

import (
	"context"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/controller/network"
)

// TestPinPreviousDefaultsOnUpgrade: a topology an older version stored
// with the default ESP proposal keeps that proposal (explicitly) when the
// PFS default arrives, so no tunnel is re-keyed by the upgrade; it is done
// once, and a topology set afterwards with an empty proposal gets the new
// default.
func TestPinPreviousDefaultsOnUpgrade(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "10.255.0.0/16")
	f.addSites(t, mkSite(1, intent.RoleHub), mkSite(2, intent.RoleSpoke))
	// What an older version left: a topology without esp_proposal and no
	// schema record (the fixture's network never pins).
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	pinned, err := f.net.PinPreviousDefaults(ctx)
	if err != nil || !pinned {
		t.Fatalf("first start after the upgrade: pinned=%v err=%v, want pinned", pinned, err)
	}
	got, err := f.net.GetTopology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.IPsec.ESPProposal != intent.PreviousESPProposal {
		t.Fatalf("ESP proposal after the upgrade = %q, want the previous default %q", got.IPsec.ESPProposal, intent.PreviousESPProposal)
	}
	if pinned, err := f.net.PinPreviousDefaults(ctx); err != nil || pinned {
		t.Fatalf("second start: pinned=%v err=%v, want nothing done", pinned, err)
	}

	// After the upgrade an empty proposal means the new, PFS default.
	if _, err := f.net.SetTopology(ctx, intent.Topology{Mode: intent.ModeHubAndSpoke}); err != nil {
		t.Fatal(err)
	}
	if pinned, err := f.net.PinPreviousDefaults(ctx); err != nil || pinned {
		t.Fatalf("restart after a new SetTopology: pinned=%v err=%v, want nothing done", pinned, err)
	}
	var esp string
	f.net.Read(func(s *network.Snapshot) { esp = s.Topology.IPsec.ESPProposal })
	if esp != intent.DefaultESPProposal {
		t.Fatalf("effective ESP proposal = %q, want the PFS default %q", esp, intent.DefaultESPProposal)
	}
}

// TestPinPreviousDefaultsLeavesOthersAlone: a new network (no topology
// yet) and one that named its proposal are not changed.
func TestPinPreviousDefaultsLeavesOthersAlone(t *testing.T) {
	ctx := context.Background()
	fresh := newFixture(t, "10.255.0.0/16")
	if pinned, err := fresh.net.PinPreviousDefaults(ctx); err != nil || pinned {
		t.Fatalf("new network: pinned=%v err=%v", pinned, err)
	}

	named := newFixture(t, "10.255.0.0/16")
	top := intent.Topology{Mode: intent.ModeFullMesh, IPsec: intent.IPsec{ESPProposal: "aes128gcm16-ecp256"}}
	if _, err := named.net.SetTopology(ctx, top); err != nil {
		t.Fatal(err)
	}
	if pinned, err := named.net.PinPreviousDefaults(ctx); err != nil || pinned {
		t.Fatalf("named proposal: pinned=%v err=%v", pinned, err)
	}
	if got, _ := named.net.GetTopology(ctx); got.IPsec.ESPProposal != "aes128gcm16-ecp256" {
		t.Fatalf("named proposal became %q", got.IPsec.ESPProposal)
	}
}

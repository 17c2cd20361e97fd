package ipsec

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/edge/dataplane/validity"
)

// The edge fills the same defaults as the controller: an edge talking to an
// older controller that sends empty fields must not negotiate something else.
func TestDefaultsMatchController(t *testing.T) {
	c := intent.Topology{}.WithDefaults().IPsec
	d := DefaultPolicy
	if d.IKEProposal != c.IKEProposal || d.ESPProposal != c.ESPProposal || d.IKELifetime != c.IKELifetime ||
		d.ESPLifetime != c.ESPLifetime || d.DPDInterval != c.DPD {
		t.Fatalf("edge defaults %+v differ from the controller's %+v", d, c)
	}
}

// The default ESP proposal carries a DH group (PFS on every CHILD_SA rekey,
// group 14 as in the seed) and passes the shared validity rules; an explicit
// proposal without a group stays valid (it means "no PFS").
func TestDefaultESPProposalHasPFS(t *testing.T) {
	if DefaultPolicy.ESPProposal != "aes256gcm16-modp2048" {
		t.Errorf("default ESP proposal %q, want aes256gcm16-modp2048", DefaultPolicy.ESPProposal)
	}
	for _, s := range []string{DefaultPolicy.ESPProposal, "aes256gcm16", "aes256gcm16-ecp384", "aes256gcm16-curve25519"} {
		if err := validity.Proposal(validity.ESP, s); err != nil {
			t.Errorf("ESP %q refused: %v", s, err)
		}
	}
	m, err := ConnMessage(tunnel("t1", "198.51.100.1", psk1))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.String(); !strings.Contains(got, "esp_proposals = aes256gcm16-modp2048\n") {
		t.Errorf("connection without an ESP proposal does not ask for PFS:\n%s", got)
	}
}

// An edge upgraded to the PFS default (its topology stores no ESP proposal,
// or the operator changes it) re-loads the connection only: charon treats
// load-conn of a known name as an update, so the established IKE_SA and
// CHILD_SA stay, and the new proposal applies from the next CHILD_SA rekey.
// Nothing is terminated, re-initiated or rekeyed by meshwan.
func TestESPProposalChangeKeepsEstablishedSAs(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	old := desired(tunnel("t1", "198.51.100.1", psk1))
	old.Tunnels[0].IPsec.ESPProposal = "aes256gcm16" // a stored pre-PFS proposal keeps working
	must(t, m.Apply(ctx, old))
	if got := f.String(); !strings.Contains(got, "esp [aes256gcm16] ") {
		t.Fatalf("explicit no-PFS proposal not loaded as given:\n%s", got)
	}
	f.SetSA("mw-t1", "ESTABLISHED")
	f.takeCalls()

	must(t, m.Apply(ctx, desired(tunnel("t1", "198.51.100.1", psk1)))) // empty: the new default
	want := []string{"load-shared mw-t1", "load-conn mw-t1"}
	if got := writes(f.takeCalls()); !slices.Equal(got, want) {
		t.Errorf("writes %q, want %q (no terminate, unload or initiate)", got, want)
	}
	if r := f.Rekeys(); len(r) != 0 {
		t.Errorf("rekeys %q, want none: the new proposal waits for the next scheduled rekey", r)
	}
	got := f.String()
	for _, w := range []string{"esp [aes256gcm16-modp2048] ", "sa mw-t1 ESTABLISHED children 1"} {
		if !strings.Contains(got, w) {
			t.Errorf("charon state lacks %q:\n%s", w, got)
		}
	}
	must(t, m.Apply(ctx, desired(tunnel("t1", "198.51.100.1", psk1))))
	if got := writes(f.takeCalls()); len(got) != 0 {
		t.Errorf("second apply writes %q", got)
	}
}
